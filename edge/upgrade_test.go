package edge

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/websocket"
)

// TestWebSocket: an upgrade through edged reaches the origin with the
// forwarded fields, gets its 101, and then carries messages both ways
// until the viewer closes; over plain HTTP and over TLS. An origin that
// refuses the upgrade is relayed as it answered, and a bucket origin is
// refused.
func TestWebSocket(t *testing.T) {
	echo := websocket.Handler(func(c *websocket.Conn) { // message by message
		for {
			var msg string
			if websocket.Message.Receive(c, &msg) != nil || websocket.Message.Send(c, msg) != nil {
				return
			}
		}
	})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ws-once": // one echo, then the origin ends the connection
			websocket.Handler(func(c *websocket.Conn) {
				var msg string
				if websocket.Message.Receive(c, &msg) == nil {
					_ = websocket.Message.Send(c, msg)
				}
			}).ServeHTTP(w, r)
		case "/ws":
			if r.Header.Get("X-Forwarded-For") == "" || !strings.Contains(r.Header.Get("Via"), "edged") {
				http.Error(w, "no forwarded fields", http.StatusTeapot)
				return
			}
			echo.ServeHTTP(w, r)
		default:
			http.Error(w, "no upgrades here", http.StatusForbidden)
		}
	})
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "a", "a.example.test")
	te := startEdge(t, fmt.Sprintf(`listeners:
  - address: 127.0.0.1:0
  - address: 127.0.0.2:0
    tls: {certificates: [{cert_file: %s, key_file: %s}]}
cache: {max_size: 8MiB, max_object_size: 1MiB}
distributions:
  - name: d
    domains: ["*"]
    origins:
      - {name: o, url: "%s"}
      - {name: site, bucket: {dir: %s}}
    default_behavior: {origin: o}
    behaviors:
      - {path: "/static/*", origin: site}
`, cert, key, o.URL, dir), nil)
	addrs := te.svc.Addrs()
	for _, tc := range []struct{ name, url string }{
		{"plain", "ws://" + addrs[0].String() + "/ws"},
		{"tls", "wss://" + addrs[1].String() + "/ws"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := websocket.NewConfig(tc.url, "http://a.example.test/")
			if err != nil {
				t.Fatal(err)
			}
			cfg.TlsConfig = &tls.Config{InsecureSkipVerify: true, ServerName: "a.example.test"}
			ws, err := websocket.DialConfig(cfg)
			if err != nil {
				t.Fatalf("dial through edged: %v", err)
			}
			defer ws.Close()
			_ = ws.SetDeadline(time.Now().Add(5 * time.Second))
			if n := openWebSockets(te); n != 1 {
				t.Errorf("websockets_open after the 101: %v, want 1", n)
			}
			for _, msg := range []string{"hello", strings.Repeat("x", 100<<10), "bye"} {
				if err := websocket.Message.Send(ws, msg); err != nil {
					t.Fatal(err)
				}
				var got string
				if err := websocket.Message.Receive(ws, &got); err != nil {
					t.Fatal(err)
				}
				if got != msg {
					t.Fatalf("echo of %d bytes: got %d bytes", len(msg), len(got))
				}
			}
		})
	}
	// Both closed by now or shortly: the gauge comes back to 0.
	for deadline := time.Now().Add(5 * time.Second); openWebSockets(te) != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("websockets_open stays at %v after the viewers closed", openWebSockets(te))
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Run("origin closes", func(t *testing.T) {
		ws, err := websocket.Dial("ws://"+addrs[0].String()+"/ws-once", "", "http://a.example.test/")
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		_ = ws.SetDeadline(time.Now().Add(5 * time.Second))
		var got string
		if err := websocket.Message.Send(ws, "one"); err != nil {
			t.Fatal(err)
		}
		if err := websocket.Message.Receive(ws, &got); err != nil || got != "one" {
			t.Fatalf("echo: %q %v", got, err)
		}
		err = websocket.Message.Receive(ws, &got)
		if ne, ok := err.(interface{ Timeout() bool }); err == nil || (ok && ne.Timeout()) {
			t.Errorf("after the origin closed: %v, want the connection closed", err)
		}
	})
	// upgradeGet sends an upgrade request on a connection of its own; close
	// is whether the answer ended the connection.
	upgradeGet := func(path string) (code int, body string, close bool) {
		t.Helper()
		c, err := net.Dial("tcp", addrs[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", path)
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		_, err = br.ReadByte()
		return res.StatusCode, string(b), res.Close && err == io.EOF
	}
	// Refused upgrades end their connection: the framing guard stops
	// checking a connection's bytes after an upgrade request.
	if code, body, closed := upgradeGet("/refused"); code != http.StatusForbidden || !strings.Contains(body, "no upgrades here") || !closed {
		t.Errorf("origin refusing the upgrade: %d %q, connection closed: %t", code, body, closed)
	}
	if code, body, closed := upgradeGet("/static/ws"); code != http.StatusBadRequest || !strings.Contains(body, "does not take WebSocket upgrades") || !closed {
		t.Errorf("upgrade to a bucket origin: %d %q, connection closed: %t", code, body, closed)
	}
}

func openWebSockets(te *testEdge) float64 {
	var m dto.Metric
	if err := te.svc.m.websocket.Write(&m); err != nil {
		te.t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// TestWebSocketIdle: a relayed WebSocket stays open while messages flow
// more often than timeouts.websocket_idle, and is closed (both sides) once
// nothing moves for that long.
func TestWebSocketIdle(t *testing.T) {
	originSaw := make(chan error, 1)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		websocket.Handler(func(c *websocket.Conn) {
			for {
				var msg string
				if err := websocket.Message.Receive(c, &msg); err != nil {
					originSaw <- err
					return
				}
				if websocket.Message.Send(c, msg) != nil {
					return
				}
			}
		}).ServeHTTP(w, r)
	})
	te := startEdge(t, fmt.Sprintf(`listeners: [{address: "127.0.0.1:0"}]
timeouts: {websocket_idle: 400ms}
cache: {max_size: 8MiB, max_object_size: 1MiB}
distributions:
  - name: d
    domains: ["*"]
    origins: [{name: o, url: "%s"}]
    default_behavior: {origin: o}
`, o.URL), nil)
	ws, err := websocket.Dial("ws://"+te.svc.Addrs()[0].String()+"/ws", "", "http://a.example.test/")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// Three times the timeout in all, a message every third of it.
	for i := range 9 {
		_ = ws.SetDeadline(time.Now().Add(5 * time.Second))
		msg := fmt.Sprint("ping ", i)
		var got string
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("message %d, %v into the tunnel: %v", i, time.Duration(i)*130*time.Millisecond, err)
		}
		if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Fatalf("echo %d: %q %v (the tunnel was closed while in use)", i, got, err)
		}
		time.Sleep(130 * time.Millisecond)
	}
	// Now quiet: edged closes both sides.
	_ = ws.SetDeadline(time.Now().Add(10 * time.Second))
	var got string
	err = websocket.Message.Receive(ws, &got)
	if ne, ok := err.(interface{ Timeout() bool }); err == nil || (ok && ne.Timeout()) {
		t.Fatalf("quiet tunnel: %v, want it closed by edged", err)
	}
	select {
	case err := <-originSaw:
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			t.Errorf("origin side: %v, want closed", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the origin's side of the tunnel stayed open")
	}
	for deadline := time.Now().Add(5 * time.Second); openWebSockets(te) != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("websockets_open stays at %v after the idle close", openWebSockets(te))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
