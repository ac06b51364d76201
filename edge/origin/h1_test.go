package origin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an httptest server that counts the connections it
// accepted.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func get(t *testing.T, o *HTTP, method, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, path, body)
	resp, err := o.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, string(b)
}

// TestH1Transport covers the lean client's framing and connection reuse
// against net/http's server.
func TestH1Transport(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.(http.Flusher).Flush() // no Content-Length: chunked
			fmt.Fprint(w, "part1 ")
			w.(http.Flusher).Flush()
			fmt.Fprint(w, "part2")
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s len=%d te=%v ua=%q", r.Method, b, r.ContentLength, r.TransferEncoding, r.UserAgent())
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/close":
			w.Header().Set("Connection", "close")
			fmt.Fprint(w, "bye")
		case "/continue":
			w.WriteHeader(http.StatusContinue) // an interim response first
			fmt.Fprint(w, "final")
		default:
			fmt.Fprintf(w, "%s %s", r.Method, r.URL.RequestURI())
		}
	})
	o, err := NewHTTP(HTTPOptions{Name: "o", URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, ok := o.tr.(*h1Transport); !ok {
		t.Fatalf("plain-HTTP origin uses %T", o.tr)
	}
	for _, c := range []struct {
		method, path, body string
		want               string
		code               int
		newConn            bool
	}{
		{"GET", "/a?b=1", "", "GET /a?b=1", 200, true},
		{"GET", "/chunked", "", "part1 part2", 200, false},
		{"HEAD", "/a", "", "", 200, false},
		{"POST", "/echo", "payload", `POST payload len=7 te=[] ua="Go-http-client/1.1"`, 200, false},
		{"GET", "/empty", "", "", 204, false},
		{"GET", "/continue", "", "final", 200, false},
		{"GET", "/close", "", "bye", 200, false},
		{"GET", "/after-close", "", "GET /after-close", 200, true},
	} {
		before := conns.Load()
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		resp, got := get(t, o, c.method, c.path, body)
		if resp.StatusCode != c.code || got != c.want {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, resp.StatusCode, got, c.code, c.want)
		}
		if opened := conns.Load() - before; opened != 0 != c.newConn {
			t.Errorf("%s %s: %d new connections, want new=%v", c.method, c.path, opened, c.newConn)
		}
	}
	// A body read only in part closes its connection instead of draining
	// it; the next request dials.
	req, _ := http.NewRequest("GET", "/"+strings.Repeat("x", 100), nil)
	resp, err := o.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	io.ReadFull(resp.Body, buf)
	resp.Body.Close()
	before := conns.Load()
	get(t, o, "GET", "/next", nil)
	if conns.Load() != before+1 {
		t.Errorf("connection of an abandoned body reused")
	}
}

// TestH1StaleConnection: the origin closes its idle keep-alive
// connections (a restart, a shorter keep-alive timeout); an idempotent
// request on such a connection is sent again on a fresh one, and a
// request with a body checks its connection first.
func TestH1StaleConnection(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, b)
	})
	o, _ := NewHTTP(HTTPOptions{Name: "o", URL: srv.URL})
	defer o.Close()
	for _, m := range []string{"GET", "POST"} {
		get(t, o, "GET", "/warm", nil)
		srv.CloseClientConnections()
		time.Sleep(50 * time.Millisecond) // the FIN reaches the pooled connection
		var body io.Reader
		if m == "POST" {
			body = strings.NewReader("x")
		}
		req, _ := http.NewRequest(m, "/", body)
		resp, err := o.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s after the origin closed its connections: %v", m, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := m + " " + map[string]string{"POST": "x"}[m]; string(b) != want {
			t.Errorf("%s: %q, want %q", m, b, want)
		}
	}
}

// TestH1Timeouts: a silent origin gives a timeout error (the edge's 504)
// after the response timeout, a cancelled request returns at once, and a
// stalled body read ends at the request's deadline.
func TestH1Timeouts(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall-body" {
			w.Header().Set("Content-Length", "10")
			w.Write([]byte("12345"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	o, _ := NewHTTP(HTTPOptions{Name: "o", URL: srv.URL, ResponseTimeout: 100 * time.Millisecond})
	defer o.Close()

	req, _ := http.NewRequest("GET", "/silent", nil)
	start := time.Now()
	_, err := o.RoundTrip(req)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) > 2*time.Second {
		t.Errorf("silent origin: %v after %v, want a timeout after 100ms", err, time.Since(start))
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ = http.NewRequestWithContext(ctx, "GET", "/silent", nil)
	time.AfterFunc(20*time.Millisecond, cancel)
	o2, _ := NewHTTP(HTTPOptions{Name: "o", URL: srv.URL})
	defer o2.Close()
	start = time.Now()
	if _, err := o2.RoundTrip(req); !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Errorf("cancelled request: %v after %v", err, time.Since(start))
	}

	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", "/stall-body", nil)
	resp, err := o2.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || string(b) != "12345" || time.Since(start) > 2*time.Second {
		t.Errorf("stalled body: %q %v after %v", b, err, time.Since(start))
	}
}

// TestH1Garbage: an origin that answers with something that is not HTTP
// gives an error, and its connection is not pooled.
func TestH1Garbage(t *testing.T) {
	addr := rawOrigin(t, func(c net.Conn) {
		c.Write([]byte("SSH-2.0-nope\r\n\r\n"))
		c.Close()
	})
	o, _ := NewHTTP(HTTPOptions{Name: "o", URL: addr})
	defer o.Close()
	req, _ := http.NewRequest("GET", "/", nil)
	if resp, err := o.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatalf("garbage accepted: %d", resp.StatusCode)
	}
	if n := o.tr.(*h1Transport).pool.Idle(); n != 0 {
		t.Errorf("%d connections pooled after garbage", n)
	}
}

// TestH1EarlyAnswer: an origin that refuses a large upload without
// reading it (and closes) gets its answer relayed, not a 502.
func TestH1EarlyAnswer(t *testing.T) {
	addr := rawOrigin(t, func(c net.Conn) {
		c.Write([]byte("HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n"))
		c.(*net.TCPConn).CloseWrite()
		time.Sleep(100 * time.Millisecond)
		c.Close() // unread upload: the close resets the connection
	})
	o, _ := NewHTTP(HTTPOptions{Name: "o", URL: addr})
	defer o.Close()
	req, _ := http.NewRequest("POST", "/upload", io.LimitReader(neverEnding('x'), 64<<20))
	resp, err := o.RoundTrip(req)
	if err != nil {
		t.Fatalf("early answer lost: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || string(b) != "too big\n" {
		t.Errorf("%d %q", resp.StatusCode, b)
	}
}

type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// rawOrigin is a TCP origin that reads one request head per connection
// and then hands the connection to answer; it returns its address.
func rawOrigin(t testing.TB, answer func(net.Conn)) string {
	t.Helper()
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
			go func() {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					c.Close()
					return
				}
				answer(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// FuzzH1Response feeds arbitrary origin answers to the lean client: it
// must never panic or hang; an answer it accepts has a real status and a
// body that reads to its end or fails; and a connection is pooled only
// after an answer it read completely.
//
// One origin serves every input of a fuzzing process: a listener per
// input left a socket in TIME_WAIT on a new port each time, and at a few
// thousand inputs a second the ephemeral ports ran out within a minute
// (net.Listen failed), which is the harness failing, not the client.
func FuzzH1Response(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
		"garbage\r\n\r\n",
	} {
		f.Add(s)
	}
	var current atomic.Pointer[string] // the input being run: inputs run one at a time in a process
	addr := rawOrigin(f, func(c net.Conn) {
		c.Write([]byte(*current.Load()))
		c.Close()
	})
	f.Fuzz(func(t *testing.T, answer string) {
		current.Store(&answer)
		o, _ := NewHTTP(HTTPOptions{Name: "o", URL: addr, ResponseTimeout: time.Second})
		defer o.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "/", nil)
		resp, err := o.RoundTrip(req)
		if err != nil {
			return
		}
		if resp.StatusCode < 100 || resp.StatusCode > 999 {
			t.Fatalf("status %d from %q", resp.StatusCode, answer)
		}
		_, rerr := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if idle := o.tr.(*h1Transport).pool.Idle(); idle > 0 && rerr != nil {
			t.Fatalf("connection pooled after a failed body (%v) from %q", rerr, answer)
		}
	})
}

// TestH1SwitchingProtocolsNotPooled: a 101 from an origin (the edge asks
// for no upgrade) leaves its connection in another protocol, so it is not
// pooled even though the origin keeps it open.
func TestH1SwitchingProtocolsNotPooled(t *testing.T) {
	addr := rawOrigin(t, func(c net.Conn) {
		c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: Upgrade\r\n\r\n"))
		time.Sleep(time.Second)
		c.Close()
	})
	o, _ := NewHTTP(HTTPOptions{Name: "o", URL: addr})
	defer o.Close()
	req, _ := http.NewRequest("GET", "/", nil)
	resp, err := o.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := o.tr.(*h1Transport).pool.Idle(); n != 0 {
		t.Errorf("%d connections pooled after a 101", n)
	}
}

// TestH1Concurrent runs many requests at once through one origin, some
// reading their bodies to the end and some abandoning them, some
// cancelled: every finished one gets its own answer, and the pool never
// hands out a connection still in use (the race detector and the
// per-request answers would show it).
func TestH1Concurrent(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "answer to %s %s", r.URL.Path, strings.Repeat(".", 2000))
	})
	o, _ := NewHTTP(HTTPOptions{Name: "o", URL: srv.URL, MaxIdleConns: 8})
	defer o.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			path := fmt.Sprintf("/r%d", i)
			req, _ := http.NewRequestWithContext(ctx, "GET", path, nil)
			if i%7 == 3 {
				time.AfterFunc(time.Duration(i%5)*time.Millisecond, cancel)
			}
			resp, err := o.RoundTrip(req)
			if err != nil {
				if ctx.Err() == nil {
					errs <- fmt.Errorf("%s: %v", path, err)
				}
				return
			}
			defer resp.Body.Close()
			if i%5 == 0 {
				buf := make([]byte, 10)
				io.ReadFull(resp.Body, buf) // abandoned
				return
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				if ctx.Err() == nil {
					errs <- fmt.Errorf("%s: body: %v", path, err)
				}
				return
			}
			if want := "answer to " + path + " "; !strings.HasPrefix(string(b), want) {
				errs <- fmt.Errorf("%s: got %.30q", path, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := o.tr.(*h1Transport).pool.Idle(); n > 8 {
		t.Errorf("%d idle connections, cap 8", n)
	}
}
