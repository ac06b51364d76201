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
	"golang.org/x/net/http2"
	"golang.org/x/net/websocket"
)

// TestWebSocket: an upgrade through edged reaches the origin with the
// forwarded fields, gets its 101, and then carries messages both ways
// until the viewer closes; over plain HTTP and over TLS. An origin that
// refuses the upgrade is relayed as it answered, and a bucket origin is
// refused.
func TestWebSocket(t *testing.T) {
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
			wsEcho.ServeHTTP(w, r)
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
			waitNoWebSockets(t, te, "the case before") // its tunnel ends shortly after its viewer closed
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
	waitNoWebSockets(t, te, "the viewers closed")
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

// wsEcho is a WebSocket origin that sends every message back.
var wsEcho = websocket.Handler(func(c *websocket.Conn) {
	for {
		var msg string
		if websocket.Message.Receive(c, &msg) != nil || websocket.Message.Send(c, msg) != nil {
			return
		}
	}
})

// waitNoWebSockets waits for the open-tunnel gauge to come back to 0
// (a tunnel ends shortly after its viewer closes).
func waitNoWebSockets(t *testing.T, te *testEdge, after string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); openWebSockets(te) != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("websockets_open stays at %v after %s", openWebSockets(te), after)
		}
		time.Sleep(5 * time.Millisecond)
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
	te := startEdge(t, `listeners: [{address: "127.0.0.1:0"}]
timeouts: {websocket_idle: 400ms}
cache: {max_size: 8MiB, max_object_size: 1MiB}
`+oneOrigin(o, ""), nil)
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
	waitNoWebSockets(t, te, "the idle close")
}

// TestWebSocketH2: an HTTP/2 viewer opens a WebSocket with an extended
// CONNECT (RFC 8441). edged relays it to the origin as an HTTP/1.1 upgrade
// with a Sec-WebSocket-Key of its own, answers 200 once the origin's 101
// carries the matching Sec-WebSocket-Accept, and then carries the frames
// both ways on the stream, past the listener's read timeout, until the
// viewer ends it, or at once when it resets the stream. A wrong accept
// value is a 502, and a refusal is relayed.
func TestWebSocketH2(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ws":
			if r.Header.Get("X-Forwarded-Proto") != "https" || r.Header.Get(":protocol") != "" {
				http.Error(w, "not forwarded as an HTTP/1.1 upgrade from HTTPS", http.StatusTeapot)
				return
			}
			wsEcho.ServeHTTP(w, r)
		case "/deaf": // takes the upgrade, then neither reads nor closes for 5 s
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
				webSocketAccept(r.Header.Get("Sec-WebSocket-Key")))
			brw.Flush()
			time.Sleep(5 * time.Second)
		case "/wrong-accept":
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSBvbmU=\r\n\r\n")
			brw.Flush()
			time.Sleep(time.Second)
		default:
			http.Error(w, "no upgrades here", http.StatusForbidden)
		}
	})
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "a", "a.example.test")
	te := startEdge(t, fmt.Sprintf(`listeners:
  - address: 127.0.0.1:0
    tls: {certificates: [{cert_file: %s, key_file: %s}]}
timeouts: {read: 300ms}
cache: {max_size: 8MiB, max_object_size: 1MiB}
`, cert, key)+oneOrigin(o, ""), nil)
	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "a.example.test"}}
	defer tr.CloseIdleConnections()
	// open sends the extended CONNECT; w is the viewer's half of the tunnel.
	open := func(path string) (*http.Response, *io.PipeWriter) {
		t.Helper()
		r, w := io.Pipe()
		req, err := http.NewRequest(http.MethodConnect, "https://"+te.svc.Addrs()[0].String()+path, r)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "a.example.test"
		req.Header.Set(":protocol", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Origin", "https://a.example.test")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("extended CONNECT through edged: %v", err)
		}
		return resp, w
	}
	resp, w := open("/ws")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Sec-Websocket-Accept") != "" || resp.Header.Get("Upgrade") != "" ||
		!strings.HasPrefix(resp.Header.Get("X-Cache"), "Pass") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		t.Fatalf("answer %d %v %q, want 200 without the HTTP/1.1 handshake's fields", resp.StatusCode, resp.Header, b)
	}
	if n := openWebSockets(te); n != 1 {
		t.Errorf("websockets_open: %v, want 1", n)
	}
	for i, msg := range []string{"hello", strings.Repeat("x", 40<<10), "after the read timeout"} {
		if i == 2 {
			time.Sleep(500 * time.Millisecond)
		}
		if _, err := w.Write(clientFrame(msg)); err != nil {
			t.Fatal(err)
		}
		got, err := readServerFrame(resp.Body)
		if err != nil || got != msg {
			t.Fatalf("echo of %d bytes: %d bytes, %v", len(msg), len(got), err)
		}
	}
	w.Close() // END_STREAM: edged half-closes the origin, which ends
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Errorf("end of the tunnel: %v, want a clean end of stream", err)
	}
	waitNoWebSockets(t, te, "the viewer ended")
	// A viewer that resets its stream ends the tunnel at once, even with an
	// origin that would hold its side open.
	resp, w = open("/deaf")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/deaf: %d", resp.StatusCode)
	}
	resp.Body.Close() // RST_STREAM (CANCEL): the request body was never ended
	waitNoWebSockets(t, te, "the viewer reset its stream")
	w.Close()
	for _, c := range []struct {
		path string
		code int
		body string
	}{
		{"/wrong-accept", http.StatusBadGateway, "does not match its key"},
		{"/refused", http.StatusForbidden, "no upgrades here"},
	} {
		resp, w := open(c.path)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		w.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(b), c.body) {
			t.Errorf("%s: %d %q, want %d %q", c.path, resp.StatusCode, b, c.code, c.body)
		}
	}
}

// clientFrame is msg as a WebSocket text frame from a client (masked,
// RFC 6455 5.2), up to 64 KiB.
func clientFrame(msg string) []byte {
	b := []byte{0x81}
	if len(msg) < 126 {
		b = append(b, 0x80|byte(len(msg)))
	} else {
		b = append(b, 0x80|126, byte(len(msg)>>8), byte(len(msg)))
	}
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, mask[:]...)
	for i := range len(msg) {
		b = append(b, msg[i]^mask[i%4])
	}
	return b
}

// readServerFrame reads one unmasked text frame of up to 64 KiB.
func readServerFrame(r io.Reader) (string, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:2]); err != nil {
		return "", err
	}
	if h[0] != 0x81 || h[1]&0x80 != 0 {
		return "", fmt.Errorf("frame header %x: want an unmasked final text frame", h[:2])
	}
	n := int(h[1])
	switch n {
	case 126:
		if _, err := io.ReadFull(r, h[2:4]); err != nil {
			return "", err
		}
		n = int(h[2])<<8 | int(h[3])
	case 127:
		return "", fmt.Errorf("frame over 64 KiB")
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return string(p), err
}
