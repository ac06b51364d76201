package lb

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

const routingConfig = `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: web
    targets: [{address: "{{.A}}"}, {address: "{{.B}}"}]
    health_check: {interval: 200ms, timeout: 150ms, healthy_threshold: 1, unhealthy_threshold: 3}
  - name: api
    targets: [{address: "{{.C}}"}]
    health_check: {disabled: true}
  - name: sticky
    targets: [{address: "{{.A}}"}, {address: "{{.B}}"}]
    health_check: {disabled: true}
    stickiness: {enabled: true, cookie: lbs, duration: 10m}
listeners:
  - name: front
    listen: 127.0.0.1:0
    request_timeout: 2s
    rules:
      - priority: 10
        conditions: {host: ["*.api.test"]}
        action: {forward: {target_group: api}}
      - priority: 20
        conditions: {path: ["/api/*"], method: [GET, HEAD]}
        action: {forward: {target_group: api}}
      - priority: 30
        conditions: {header: [{name: X-Canary, values: ["yes"]}], source_ip: ["127.0.0.0/8"]}
        action: {forward: {target_group: api}}
      - priority: 40
        conditions: {query: [{key: beta, value: "1"}]}
        action: {forward: {target_groups: [{name: api, weight: 1}, {name: web, weight: 0}]}}
      - priority: 50
        conditions: {path: ["/old/*"]}
        action: {redirect: {protocol: https, host: "new.test", path: "/new/#{path}", status_code: 302}}
      - priority: 60
        conditions: {path: ["/maintenance"]}
        action: {fixed_response: {status_code: 503, content_type: text/plain, body: "down for maintenance"}}
      - priority: 70
        conditions: {path: ["/sticky*"]}
        action: {forward: {target_group: sticky}}
      - priority: 80
        conditions: {source_ip: ["10.0.0.0/8"]}
        action: {fixed_response: {status_code: 403}}
    default_action: {forward: {target_group: web}}
`

func TestL7Routing(t *testing.T) { engines(t, testL7Routing) }

func testL7Routing(t *testing.T) {
	a, b, c := newBackend(t, "a", nil), newBackend(t, "b", nil), newBackend(t, "c", nil)
	h := startLB(t, render(t, routingConfig, map[string]string{"A": a.addr, "B": b.addr, "C": c.addr}))
	base := h.url("front")
	waitUntil(t, 5*time.Second, "web targets healthy", func() bool {
		m := h.metrics()
		return strings.Contains(m, `state="healthy",target="`+a.addr+`",target_group="web"} 1`) && strings.Contains(m, `state="healthy",target="`+b.addr+`",target_group="web"} 1`)
	})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	type tc struct {
		name     string
		path     string
		hdr      []string
		code     int
		bodyIn   []string // body must be one of these
		location string
	}
	for _, x := range []tc{
		{name: "default", path: "/", code: 200, bodyIn: []string{"a", "b"}},
		{name: "host wildcard", path: "/", hdr: []string{"Host", "v1.API.test"}, code: 200, bodyIn: []string{"c"}},
		{name: "path and method", path: "/api/users", code: 200, bodyIn: []string{"c"}},
		{name: "header and source", path: "/x", hdr: []string{"X-Canary", "yes"}, code: 200, bodyIn: []string{"c"}},
		{name: "header mismatch", path: "/x", hdr: []string{"X-Canary", "no"}, code: 200, bodyIn: []string{"a", "b"}},
		{name: "query weighted", path: "/q?beta=1", code: 200, bodyIn: []string{"c"}},
		{name: "redirect", path: "/old/page?x=1", code: 302, location: "https://new.test/new/old/page?x=1"},
		{name: "fixed", path: "/maintenance", code: 503, bodyIn: []string{"down for maintenance"}},
	} {
		t.Run(x.name, func(t *testing.T) {
			code, body, hdr := get(t, client, base+x.path, x.hdr...)
			if code != x.code {
				t.Fatalf("status %d (%q), want %d", code, body, x.code)
			}
			if x.location != "" && hdr.Get("Location") != x.location {
				t.Errorf("Location %q, want %q", hdr.Get("Location"), x.location)
			}
			if len(x.bodyIn) > 0 {
				ok := false
				for _, w := range x.bodyIn {
					ok = ok || body == w
				}
				if !ok {
					t.Errorf("body %q, want one of %v", body, x.bodyIn)
				}
			}
		})
	}
	t.Run("round robin spreads", func(t *testing.T) {
		seen := map[string]int{}
		for range 20 {
			_, body, _ := get(t, client, base+"/rr")
			seen[body]++
		}
		if seen["a"] == 0 || seen["b"] == 0 {
			t.Errorf("distribution %v", seen)
		}
	})
	t.Run("x-forwarded", func(t *testing.T) {
		_, _, _ = get(t, client, base+"/api/xff", "X-Forwarded-For", "192.0.2.7", "X-Forwarded-Proto", "https")
		r := c.last.Load()
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
		if got := r.Header.Get("X-Forwarded-For"); got != "192.0.2.7, 127.0.0.1" {
			t.Errorf("X-Forwarded-For %q", got)
		}
		if got := r.Header.Get("X-Forwarded-Proto"); got != "http" {
			t.Errorf("X-Forwarded-Proto %q (a client value must not pass)", got)
		}
		if got := r.Header.Get("X-Forwarded-Port"); got != port {
			t.Errorf("X-Forwarded-Port %q, want %s", got, port)
		}
	})
	t.Run("stickiness", func(t *testing.T) {
		code, first, hdr := get(t, client, base+"/sticky")
		cookie := hdr.Get("Set-Cookie")
		if code != 200 || !strings.HasPrefix(cookie, "lbs=") || !strings.Contains(cookie, "Max-Age=600") {
			t.Fatalf("status %d, Set-Cookie %q", code, cookie)
		}
		val := strings.SplitN(strings.SplitN(cookie, ";", 2)[0], "=", 2)[1]
		for range 10 {
			_, body, hdr := get(t, client, base+"/sticky", "Cookie", "lbs="+val)
			if body != first {
				t.Fatalf("sticky request went to %q, first to %q", body, first)
			}
			if hdr.Get("Set-Cookie") != "" {
				t.Errorf("cookie set again on a sticky hit")
			}
		}
	})
	t.Run("metrics", func(t *testing.T) {
		m := h.metrics()
		for _, want := range []string{
			`edgestack_lbd_requests_total{code_class="2xx",listener="front",target_group="web"}`,
			`edgestack_lbd_requests_total{code_class="3xx",listener="front",target_group=""}`,
			`edgestack_lbd_target_state{state="healthy",target="` + c.addr + `",target_group="api"} 1`,
			`edgestack_lbd_upstream_latency_seconds_bucket{target_group="web"`,
			`edgestack_lbd_active_connections{listener="front"}`,
			`edgestack_lbd_rule_matches_total{listener="front",rule="50"} 1`,
			`edgestack_lbd_request_duration_seconds_bucket{listener="front"`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

const failConfig = `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: pool
    targets: [{address: "{{.Dead}}"}, {address: "{{.Live}}"}]
    health_check: {disabled: true}
    passive_health: {consecutive_failures: 1, eject_for: 1h}
  - name: slow
    targets: [{address: "{{.Slow}}"}]
    health_check: {disabled: true}
  - name: reset
    targets: [{address: "{{.Reset}}"}]
    health_check: {disabled: true}
  - name: garbage
    targets: [{address: "{{.Garbage}}"}]
    health_check: {disabled: true}
  - name: allbad
    targets: [{address: "{{.Live}}"}]
    health_check: {path: /nonexistent-500, interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 1}
listeners:
  - name: front
    listen: 127.0.0.1:0
    request_timeout: 300ms
    rules:
      - priority: 1
        conditions: {path: ["/slow"]}
        action: {forward: {target_group: slow}}
      - priority: 2
        conditions: {path: ["/reset"]}
        action: {forward: {target_group: reset}}
      - priority: 3
        conditions: {path: ["/allbad"]}
        action: {forward: {target_group: allbad}}
      - priority: 4
        conditions: {path: ["/garbage"]}
        action: {forward: {target_group: garbage}}
    default_action: {forward: {target_group: pool}}
`

// rawServer accepts connections and does f with each.
func rawServer(t *testing.T, f func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f(c)
		}
	}()
	return ln.Addr().String()
}

func TestL7Failures(t *testing.T) { engines(t, testL7Failures) }

func testL7Failures(t *testing.T) {
	live := newBackend(t, "live", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/nonexistent-500" {
			w.WriteHeader(500)
			return
		}
		_, _ = io.WriteString(w, "live")
	})
	deadLn, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := deadLn.Addr().String()
	deadLn.Close() // connection refused from now on
	slow := rawServer(t, func(c net.Conn) { time.Sleep(5 * time.Second); c.Close() })
	reset := rawServer(t, func(c net.Conn) {
		_, _ = bufio.NewReader(c).ReadString('\n')
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	garbage := rawServer(t, func(c net.Conn) {
		_, _ = bufio.NewReader(c).ReadString('\n')
		_, _ = io.WriteString(c, "SSH-2.0-not-http\r\n\r\n")
		c.Close()
	})
	h := startLB(t, render(t, failConfig, map[string]string{"Dead": dead, "Live": live.addr, "Slow": slow, "Reset": reset, "Garbage": garbage}))
	base := h.url("front")
	client := &http.Client{Timeout: 5 * time.Second}

	t.Run("retry on another target", func(t *testing.T) {
		for i := range 20 {
			code, body, _ := get(t, client, base+"/")
			if code != 200 || body != "live" {
				t.Fatalf("request %d: %d %q", i, code, body)
			}
		}
		if m := h.metrics(); !strings.Contains(m, `edgestack_lbd_target_state{state="unhealthy",target="`+dead+`",target_group="pool"} 1`) {
			t.Errorf("dead target not passively ejected")
		}
	})
	t.Run("hanging target gives 504 quickly", func(t *testing.T) {
		start := time.Now()
		code, _, _ := get(t, client, base+"/slow")
		if code != 504 || time.Since(start) > 2*time.Second {
			t.Errorf("status %d after %v, want 504 within 2s", code, time.Since(start))
		}
	})
	t.Run("resetting target gives 502", func(t *testing.T) {
		code, _, _ := get(t, client, base+"/reset")
		if code != 502 {
			t.Errorf("status %d, want 502", code)
		}
	})
	t.Run("garbage from the target gives 502", func(t *testing.T) {
		start := time.Now()
		code, _, _ := get(t, client, base+"/garbage")
		if code != 502 || time.Since(start) > 2*time.Second {
			t.Errorf("status %d after %v, want 502 quickly", code, time.Since(start))
		}
	})
	t.Run("fail-open when all unhealthy", func(t *testing.T) {
		waitUntil(t, 5*time.Second, "allbad target unhealthy", func() bool {
			return strings.Contains(h.metrics(), `edgestack_lbd_target_state{state="unhealthy",target="`+live.addr+`",target_group="allbad"} 1`)
		})
		code, body, _ := get(t, client, base+"/allbad")
		if code != 200 || body != "live" {
			t.Errorf("fail-open: %d %q", code, body)
		}
	})
}

func TestWebSocketPassThrough(t *testing.T) { engines(t, testWebSocketPassThrough) }

func testWebSocketPassThrough(t *testing.T) {
	// A WebSocket-like upgrade: 101, then an echo of raw bytes.
	echo := newBackend(t, "ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			w.WriteHeader(400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(conn, brw)
	})
	cfg := `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: ws
    targets: [{address: "` + echo.addr + `"}]
    health_check: {disabled: true}
listeners:
  - name: front
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: ws}}
`
	h := startLB(t, cfg)
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url("front"), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	// A reload while the socket is open must not touch it.
	if err := h.reload(cfg); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"hello", "after reload"} {
		_, _ = io.WriteString(conn, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: %q %v", msg, buf, err)
		}
	}
}

// TestRealWebSocket runs a real WebSocket (x/net/websocket, RFC 6455
// frames) through lbd with each engine.
func TestRealWebSocket(t *testing.T) { engines(t, realWebSocket) }

func realWebSocket(t *testing.T) {
	ws := newBackend(t, "ws", websocket.Handler(func(c *websocket.Conn) {
		var msg string
		for websocket.Message.Receive(c, &msg) == nil {
			_ = websocket.Message.Send(c, "echo: "+msg)
		}
	}).ServeHTTP)
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: ws
    targets: [{address: "`+ws.addr+`"}]
    health_check: {disabled: true}
listeners:
  - name: front
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: ws}}
`)
	addr := strings.TrimPrefix(h.url("front"), "http://")
	c, err := websocket.Dial("ws://"+addr+"/chat", "", "http://"+addr+"/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, m := range []string{"hello", strings.Repeat("x", 70000)} {
		if err := websocket.Message.Send(c, m); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(c, &got); err != nil || got != "echo: "+m {
			t.Fatalf("echo of %d bytes: %d bytes, %v", len(m), len(got), err)
		}
	}
}
