package l7

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/edgestack/edgestack/internal/sockio"
	"github.com/edgestack/edgestack/lb/rules"
	"github.com/edgestack/edgestack/lb/targetgroup"
	"github.com/prometheus/client_golang/prometheus"
)

func TestParseResponseHead(t *testing.T) {
	type tc struct {
		name    string
		head    string
		ok      bool
		code    int
		cl      int64
		chunked bool
		close   bool
	}
	for _, c := range []tc{
		{"ok", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, 200, 5, false, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", true, 200, -1, true, false},
		{"close delimited", "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n", true, 200, -1, false, true},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false, 0, 0, false, false},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, 0, 0, false, false},
		{"gzip only", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, 0, 0, false, false},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", false, 0, 0, false, false},
		{"bad code", "HTTP/1.1 2x0 OK\r\n\r\n", false, 0, 0, false, false},
		{"no colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", false, 0, 0, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, ok := parseResponseHead([]byte(c.head), nil)
			if ok != c.ok {
				t.Fatalf("ok %v, want %v", ok, c.ok)
			}
			if !ok {
				return
			}
			if r.code != c.code || r.contentLength != c.cl || r.chunked != c.chunked || r.connClose != c.close {
				t.Errorf("got %+v", r)
			}
		})
	}
}

func TestCopyChunked(t *testing.T) {
	type tc struct {
		name, in, plain string
		ok              bool
	}
	for _, c := range []tc{
		{"two chunks and trailer", "3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n", "abcde", true},
		{"upper hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", true},
		{"missing crlf after data", "3\r\nabcX\r\n0\r\n\r\n", "", false},
		{"leading space", " 3\r\nabc\r\n0\r\n\r\n", "", false},
		{"bare lf", "3\nabc\r\n0\r\n\r\n", "", false},
		{"overflow", "ffffffffffffffff\r\n", "", false},
		{"truncated", "5\r\nab", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var raw, plain bytes.Buffer
			rw := bufio.NewWriter(&raw)
			err := copyChunked(rw, bufio.NewReader(strings.NewReader(c.in)), nil)
			_ = rw.Flush()
			if (err == nil) != c.ok {
				t.Fatalf("err %v, want ok=%v", err, c.ok)
			}
			if !c.ok {
				return
			}
			if raw.String() != c.in {
				t.Errorf("raw copy %q, want %q", raw.String(), c.in)
			}
			pw := bufio.NewWriter(&plain)
			if err := copyChunked(nil, bufio.NewReader(strings.NewReader(c.in)), pw); err != nil {
				t.Fatal(err)
			}
			_ = pw.Flush()
			if plain.String() != c.plain {
				t.Errorf("de-chunked %q, want %q", plain.String(), c.plain)
			}
		})
	}
}

// FuzzParseResponseHead: any target response head; no panic, and a
// parsed head has a sane status and framing.
func FuzzParseResponseHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Fuzz(func(t *testing.T, h []byte) {
		r, ok := parseResponseHead(h, nil)
		if !ok {
			return
		}
		if r.code < 100 || r.code > 999 || (r.chunked && r.contentLength != -1) {
			t.Fatalf("parsed %+v from %q", r, h)
		}
	})
}

// FuzzCopyChunked: any chunked body; no panic, and a body copied as is
// equals the bytes consumed.
func FuzzCopyChunked(f *testing.F) {
	f.Add([]byte("3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("1;ext\r\nx\r\n0\r\nA: b\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		src := bufio.NewReader(bytes.NewReader(in))
		if err := copyChunked(w, src, nil); err != nil {
			return
		}
		_ = w.Flush()
		if !bytes.HasPrefix(in, out.Bytes()) || out.Len()+src.Buffered() > len(in) {
			t.Fatalf("copied %q from %q", out.Bytes(), in)
		}
	})
}

// testServer is a FastServer whose only route is a fixed response.
func testServer(t testing.TB) *FastServer {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "t")
	if err != nil {
		t.Fatal(err)
	}
	p := NewProxy(slog.New(slog.DiscardHandler), m)
	tab := rules.Compile([]rules.Rule{{Priority: 1, Conditions: rules.Conditions{Path: []string{"/r*"}}, Action: rules.Action{Redirect: &rules.Redirect{Host: "x.test"}}}})
	routes := &Routes{Table: tab, Actions: map[*rules.Compiled]*Route{}}
	for _, c := range tab.Rules {
		routes.Actions[c] = NewRoute(c.Rule.Action, "1", nil)
	}
	routes.Default = NewRoute(rules.Action{FixedResponse: &rules.FixedResponse{StatusCode: 200, Body: "fixed"}}, "default", nil)
	h := &Handler{Proxy: p, Listener: "t", Scheme: "http", Port: "80", Routes: func() *Routes { return routes }}
	return NewFastServer(h, ServerOptions{IdleTimeout: 100 * time.Millisecond, ReadHeaderTimeout: 100 * time.Millisecond, MaxHeaderBytes: 4096})
}

// loopbackPair dials a loopback listener shared by the whole test binary
// and returns both ends. One listener, not one per call: the fuzz
// targets call it thousands of times a second, and a listener per call
// left a TIME_WAIT socket on a new port each time until the ephemeral
// ports ran out and the fuzzing process died (connections to one port
// can reuse them on loopback). The lock pairs each dial with its accept.
var loopback struct {
	sync.Mutex
	ln net.Listener
}

func loopbackPair() (client, server net.Conn) {
	loopback.Lock()
	defer loopback.Unlock()
	if loopback.ln == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		loopback.ln = ln // for the life of the test binary
	}
	client, err := net.Dial("tcp", loopback.ln.Addr().String())
	if err != nil {
		panic(err)
	}
	server, err = loopback.ln.Accept()
	if err != nil {
		panic(err)
	}
	return client, server
}

// serveBytes runs one connection of s over loopback TCP with in as the
// client's bytes (then a half-close) and returns what the server wrote.
func serveBytes(s *FastServer, in []byte) []byte {
	s.h.initOnce.Do(s.h.init)
	client, server := loopbackPair()
	defer client.Close()
	done := make(chan struct{})
	go func() {
		s.serveConn(&fconn{c: sockio.Wrap(server)}) // as Serve does: requests are read in a sockio read loop
		close(done)
	}()
	go func() {
		_, _ = client.Write(in)
		_ = client.(*net.TCPConn).CloseWrite()
	}()
	var out bytes.Buffer
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(&out, client)
	<-done
	return out.Bytes()
}

func TestFastServerLocalAnswers(t *testing.T) {
	s := testServer(t)
	type tc struct {
		name string
		in   string
		want []string
	}
	for _, c := range []tc{
		{"fixed, keep-alive then close", "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", []string{"HTTP/1.1 200 OK", "fixed", "HTTP/1.1 200 OK"}},
		{"redirect", "GET /rr?q=1 HTTP/1.1\r\nHost: a:8080\r\nConnection: close\r\n\r\n", []string{"301", "Location: http://x.test/rr?q=1"}},
		{"smuggling refused", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", []string{"400 Bad Request", "BothTeClPresent"}},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", []string{"400", "missing Host"}},
		{"head too large", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 5000) + "\r\n\r\n", []string{"431"}},
		{"body discarded before the next request", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcdGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", []string{"200 OK", "200 OK"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := string(serveBytes(s, []byte(c.in)))
			rest := out
			for _, w := range c.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output lacks %q (in order):\n%s", w, out)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// FuzzServeConn: any client bytes through the fast engine's request path
// (parsing, guard, routing, local answers); no panic, no hang.
func FuzzServeConn(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST /r HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("GET http://h.test/x?y HTTP/1.0\r\n\r\n"))
	s := testServer(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		_ = serveBytes(s, in)
	})
}

// forwardServer is a FastServer whose default route forwards to a real
// local HTTP server that echoes the request body.
func forwardServer(t testing.TB) *FastServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(50 * time.Millisecond)
		}
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return forwardServerTo(t, ln.Addr().String())
}

// forwardServerTo is a FastServer whose default route forwards to addr.
func forwardServerTo(t testing.TB, addr string) *FastServer {
	m := targetgroup.NewManager(targetgroup.Options{})
	t.Cleanup(m.Close)
	if err := m.Apply([]targetgroup.Config{{Name: "g", HealthCheck: targetgroup.HealthCheck{Disabled: true},
		Targets: []targetgroup.TargetConfig{{Address: addr}}}}, map[string]bool{"g": true}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	met, err := NewMetrics(reg, "t")
	if err != nil {
		t.Fatal(err)
	}
	p := NewProxy(slog.New(slog.DiscardHandler), met)
	tab := rules.Compile(nil)
	resolve := func(name string, w int) *GroupRef { return p.Ref("t", m.Group(name), w, time.Second) }
	routes := &Routes{Table: tab, Actions: map[*rules.Compiled]*Route{}, RequestTimeout: time.Second,
		Default: NewRoute(rules.Action{Forward: &rules.Forward{TargetGroup: "g"}}, "default", resolve)}
	h := &Handler{Proxy: p, Listener: "t", Scheme: "http", Port: "80", Routes: func() *Routes { return routes }}
	return NewFastServer(h, ServerOptions{IdleTimeout: 200 * time.Millisecond, ReadHeaderTimeout: 200 * time.Millisecond, MaxHeaderBytes: 4096})
}

func TestFastServerForward(t *testing.T) {
	s := forwardServer(t)
	out := string(serveBytes(s, []byte("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n")))
	if strings.Count(out, "HTTP/1.1 200 OK") != 2 || !strings.Contains(out, "hello") || !strings.HasSuffix(out, "hi") {
		t.Errorf("got %q", out)
	}
}

// TestFastServerRequestDuringRequest: a request that arrives while the one
// before it is with the target (after its read found the socket empty) is
// served, not left waiting for more bytes, whichever path the first took.
func TestFastServerRequestDuringRequest(t *testing.T) {
	s := forwardServer(t)
	s.h.initOnce.Do(s.h.init)
	for _, first := range []string{
		"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err := ln.Accept()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			s.serveConn(&fconn{c: sockio.Wrap(server)})
			close(done)
		}()
		_ = client.SetDeadline(time.Now().Add(5 * time.Second))
		client.Write([]byte(first))
		time.Sleep(20 * time.Millisecond) // the first is with the target now
		client.Write([]byte("GET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
		out, err := io.ReadAll(client)
		client.Close()
		<-done
		if n := strings.Count(string(out), "HTTP/1.1 200 OK"); n != 2 || err != nil {
			t.Errorf("first %q: %d answers (%v), want 2:\n%s", strings.Fields(first)[0], n, err, out)
		}
	}
}

// FuzzForward: any client bytes through the forwarding path to a real
// target; no panic, no hang, and the connection always ends.
func FuzzForward(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc"))
	s := forwardServer(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		_ = serveBytes(s, in)
	})
}

// TestMaxConnections: with MaxConnections set, an Accept waits until an
// open connection closes; Close of the listener ends a waiting Accept;
// the connections keep the socket reachable for the read loop.
func TestMaxConnections(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := ServerOptions{MaxConnections: 1}.limitAndCount(inner)
	defer ln.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	first, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cc, ok := first.(*countedConn)
	if !ok {
		t.Fatalf("accepted a %T, want a *countedConn", first)
	}
	if sc, isRaw := cc.Conn.(*sockio.Conn); isRaw && cc.raw != sc {
		t.Fatal("the counted connection does not keep its socket for the read loop")
	}
	dial()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	select {
	case <-accepted:
		t.Fatal("a second connection was accepted while the first is open")
	case <-time.After(50 * time.Millisecond):
	}
	first.Close()
	first.Close() // frees one slot, not two
	select {
	case c := <-accepted:
		if c == nil {
			t.Fatal("Accept failed after a slot was freed")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the second connection was not accepted after the first closed")
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- c
	}()
	time.Sleep(20 * time.Millisecond)
	ln.Close()
	select {
	case c := <-accepted:
		if c != nil {
			t.Fatal("Accept returned a connection after Close")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end a waiting Accept")
	}
}

// TestWholeBodyless: which buffered requests the read loop serves itself.
func TestWholeBodyless(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next", true},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: a\r\n", false},                                            // still arriving
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", false},               // a body
		{"POST / HTTP/1.1\r\nHost: a\r\ncontent-length:  12\r\n\r\n", false},                // a body
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},         // a body
		{"GET / HTTP/1.1\r\nHost: a\r\nUPGRADE: websocket\r\n\r\n", false},                  // a tunnel
		{"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", false},                // interim answer
		{"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", false},                            // a tunnel
		{"GET / HTTP/1.1\r\nX: 1\nContent-Length: 5\r\n\r\nhello", false},                   // bare LF: lines differ
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\n", true}, // only the first counts
	} {
		if got := wholeBodyless([]byte(c.in)); got != c.want {
			t.Errorf("wholeBodyless(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestFastServerHalfClose: a client that half-closes right after its
// request (the end of stream arrives with the request's bytes) gets its
// answer and the close long before the idle timeout.
func TestFastServerHalfClose(t *testing.T) {
	s := testServer(t)
	s.opts.IdleTimeout = time.Minute
	s.h.initOnce.Do(s.h.init)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	client.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	client.(*net.TCPConn).CloseWrite()
	time.Sleep(20 * time.Millisecond) // both arrive before the server's first read
	done := make(chan struct{})
	go func() {
		s.serveConn(&fconn{c: sockio.Wrap(server)})
		close(done)
	}()
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	out, err := io.ReadAll(client)
	if err != nil || !strings.Contains(string(out), "HTTP/1.1 200 OK") {
		t.Fatalf("read %q, %v; want the answer, then the close", out, err)
	}
	<-done
}

// TestFastServerTargetClosedWhileIdle: a pooled connection whose target
// closed its side while the connection sat idle, and then answers nothing
// (as a stopped container's address does), is found closed by the next
// request's read at once; the request goes out again on a new connection
// instead of waiting for the request timeout.
func TestFastServerTargetClosedWhileIdle(t *testing.T) {
	addr := apptest.SilentAfterAnswer(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	s := forwardServerTo(t, addr)
	s.opts.IdleTimeout = 10 * time.Second
	for i := range 2 {
		start := time.Now()
		out := string(serveBytes(s, []byte("GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")))
		if !strings.HasPrefix(out, "HTTP/1.1 200 OK") {
			t.Fatalf("request %d: %q after %v", i, out, time.Since(start))
		}
		time.Sleep(20 * time.Millisecond) // the close arrives; the connection sits idle
	}
}
