package h2

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// testTimeout bounds every wait in these tests, so that a server that hangs
// fails the test that found it instead of the whole binary's -timeout.
const testTimeout = 10 * time.Second

// testServer is a Server behind a loopback listener.
type testServer struct {
	addr     string
	accepted atomic.Int32   // connections accepted
	served   sync.WaitGroup // the accept loop and every ServeConn
}

// startTestServer serves s on 127.0.0.1:0. prepare, when set, turns each
// accepted connection into what ServeConn gets (the TLS tests handshake
// there); without it the connection is prior-knowledge cleartext HTTP/2.
// Cleanup shuts s down and requires every ServeConn to return: register
// anything that releases blocked handlers after calling this, so that it
// runs first.
func startTestServer(tb testing.TB, s *Server, prepare func(net.Conn) (net.Conn, ConnOpts, error)) *testServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String()}
	ts.served.Add(1)
	go func() {
		defer ts.served.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.accepted.Add(1)
			ts.served.Add(1)
			go func() {
				defer ts.served.Done()
				nc, opts := c, ConnOpts{}
				if prepare != nil {
					var err error
					if nc, opts, err = prepare(c); err != nil {
						_ = c.Close()
						return
					}
				}
				s.ServeConn(nc, opts)
			}()
		}
	}()
	tb.Cleanup(func() {
		_ = ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown at cleanup: %v", err)
		}
		if !waitTimeout(&ts.served, testTimeout) {
			tb.Errorf("ServeConn did not return after Shutdown")
		}
	})
	return ts
}

func (ts *testServer) url(path string) string { return "http://" + ts.addr + path }

// testClient is x/net's HTTP/2 Transport speaking cleartext HTTP/2 with
// prior knowledge.
func testClient(tb testing.TB) (*http.Client, *http2.Transport) {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}, tr
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// recv takes one value from ch, failing the test after testTimeout.
func recv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		tb.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// gate holds handlers until the test opens it. Its wait is bounded too, so
// a forgotten gate costs time, not a hang.
type gate struct {
	started chan string // the path of every handler that reached wait
	release chan struct{}
	once    sync.Once
}

func newGate() *gate {
	return &gate{started: make(chan string, 1<<16), release: make(chan struct{})}
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) wait(r *http.Request) {
	select {
	case g.started <- r.URL.Path:
	default:
	}
	select {
	case <-g.release:
	case <-time.After(testTimeout):
	}
}

// patternBytes is n bytes that differ from position to position and from
// seed to seed, so that a misplaced or repeated chunk shows.
func patternBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

// bodyDiff describes how got differs from want, or is "" when equal.
func bodyDiff(got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("%d bytes, want %d; first difference at offset %d", len(got), len(want), i)
}

func readBody(tb testing.TB, resp *http.Response) []byte {
	tb.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading the response body: %v (after %d bytes)", err, len(b))
	}
	return b
}

// seenRequest is what a handler saw of its request.
type seenRequest struct {
	Proto                  string
	ProtoMajor, ProtoMinor int
	Method                 string
	Path, EscapedPath      string
	RawQuery, RequestURI   string
	Host                   string
	Header                 http.Header
	ContentLength          int64
	BodyNil                bool
	Body                   string
	BodyErr                error
	RemoteAddr             string
	TLS                    *tls.ConnectionState
	Trailer                http.Header
}

func seeRequest(r *http.Request) seenRequest {
	s := seenRequest{
		Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
		Method: r.Method, Host: r.Host, Header: r.Header.Clone(),
		ContentLength: r.ContentLength, RemoteAddr: r.RemoteAddr, TLS: r.TLS,
		RequestURI: r.RequestURI, BodyNil: r.Body == nil,
	}
	if r.URL != nil {
		s.Path, s.EscapedPath, s.RawQuery = r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery
	}
	if r.Body != nil {
		b, err := io.ReadAll(r.Body)
		s.Body, s.BodyErr = string(b), err
	}
	s.Trailer = r.Trailer.Clone()
	return s
}

// TestRequestFields: what the client sends reaches the handler as the
// *http.Request net/http's servers build (RFC 9113 8.3.1 for the
// pseudo-header fields, 8.2.3 for cookies).
func TestRequestFields(t *testing.T) {
	seen := make(chan seenRequest, 1)
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- seeRequest(r)
	})}, nil)
	client, _ := testClient(t)

	for _, c := range []struct {
		name    string
		method  string
		target  string
		host    string // req.Host, which the Transport sends as :authority
		header  http.Header
		body    io.Reader
		want    seenRequest // the fields compared below
		wantHdr http.Header // fields that must be in r.Header as they are
	}{
		{
			name: "GET with query, headers and cookies", method: "GET", target: "/a/b?x=1&y=%20",
			host: "example.com:8443",
			header: http.Header{
				"X-Custom": {"one"}, "X-Multi": {"a", "b"}, "X-Empty": {""},
				// The Transport splits this into three cookie fields (8.2.3),
				// which the server must join again.
				"Cookie": {"a=1; b=2; c=3"},
			},
			want: seenRequest{Method: "GET", Path: "/a/b", EscapedPath: "/a/b", RawQuery: "x=1&y=%20",
				RequestURI: "/a/b?x=1&y=%20", Host: "example.com:8443", ContentLength: 0},
			wantHdr: http.Header{"X-Custom": {"one"}, "X-Multi": {"a", "b"}, "X-Empty": {""}, "Cookie": {"a=1; b=2; c=3"}},
		},
		{
			name: "POST with content-length", method: "POST", target: "/upload",
			body: strings.NewReader("hello"),
			want: seenRequest{Method: "POST", Path: "/upload", EscapedPath: "/upload", RequestURI: "/upload",
				ContentLength: 5, Body: "hello"},
			wantHdr: http.Header{"Content-Length": {"5"}},
		},
		{
			// A reader of unknown length: no content-length on the wire.
			name: "POST of unknown length", method: "POST", target: "/stream",
			body: io.MultiReader(strings.NewReader("streamed "), strings.NewReader("body")),
			want: seenRequest{Method: "POST", Path: "/stream", EscapedPath: "/stream", RequestURI: "/stream",
				ContentLength: -1, Body: "streamed body"},
		},
		{
			name: "PUT with an empty body", method: "PUT", target: "/empty", body: http.NoBody,
			want: seenRequest{Method: "PUT", Path: "/empty", EscapedPath: "/empty", RequestURI: "/empty", ContentLength: 0},
		},
		{
			name: "escaped path", method: "GET", target: "/a%20b/c%2Fd",
			want: seenRequest{Method: "GET", Path: "/a b/c/d", EscapedPath: "/a%20b/c%2Fd", RequestURI: "/a%20b/c%2Fd"},
		},
		{
			name: "extension method", method: "PURGE", target: "/obj",
			want: seenRequest{Method: "PURGE", Path: "/obj", EscapedPath: "/obj", RequestURI: "/obj"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			var local string
			trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { local = ci.Conn.LocalAddr().String() }}
			ctx := httptrace.WithClientTrace(context.Background(), trace)
			req, err := http.NewRequestWithContext(ctx, c.method, ts.url(c.target), c.body)
			if err != nil {
				t.Fatal(err)
			}
			if c.host != "" {
				req.Host = c.host
			}
			for k, vv := range c.header {
				req.Header[k] = vv
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			got := recv(t, seen, "the handler")

			want := c.want
			if want.Host == "" {
				want.Host = ts.addr
			}
			if got.Proto != "HTTP/2.0" || got.ProtoMajor != 2 || got.ProtoMinor != 0 {
				t.Errorf("Proto = %q %d.%d, want HTTP/2.0 2.0", got.Proto, got.ProtoMajor, got.ProtoMinor)
			}
			for _, f := range []struct{ name, got, want string }{
				{"Method", got.Method, want.Method},
				{"URL.Path", got.Path, want.Path},
				{"URL.EscapedPath()", got.EscapedPath, want.EscapedPath},
				{"URL.RawQuery", got.RawQuery, want.RawQuery},
				{"RequestURI", got.RequestURI, want.RequestURI},
				{"Host", got.Host, want.Host},
				{"Body", got.Body, want.Body},
				{"RemoteAddr", got.RemoteAddr, local},
			} {
				if f.got != f.want {
					t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
				}
			}
			if got.ContentLength != want.ContentLength {
				t.Errorf("ContentLength = %d, want %d", got.ContentLength, want.ContentLength)
			}
			if got.BodyNil {
				t.Errorf("Body is nil; server requests always have one")
			}
			if got.BodyErr != nil {
				t.Errorf("reading Body: %v", got.BodyErr)
			}
			if got.TLS != nil {
				t.Errorf("TLS = %+v on a cleartext connection", got.TLS)
			}
			for k, vv := range c.wantHdr {
				if !slices.Equal(got.Header[k], vv) {
					t.Errorf("Header[%q] = %q, want %q", k, got.Header[k], vv)
				}
			}
			for k := range got.Header {
				if strings.HasPrefix(k, ":") {
					t.Errorf("pseudo-header field %q in Header", k)
				}
			}
		})
	}
}

// TestResponse: what the handler writes reaches the client, with the
// fields a server adds (Date, a sniffed Content-Type, Content-Length for
// a small finished body) and without a body where none is allowed.
func TestResponse(t *testing.T) {
	const fixedDate = "Mon, 02 Jan 2006 15:04:05 GMT"
	handlers := map[string]http.HandlerFunc{
		"/plain": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") },
		"/html":  func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html><body>hi</body></html>") },
		"/typed": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"a":1}`)
		},
		"/status": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-A", "1")
			w.Header().Add("Set-Cookie", "s=1")
			w.Header().Add("Set-Cookie", "t=2")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "made")
		},
		"/date": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Date", fixedDate)
			io.WriteString(w, "dated")
		},
		"/length": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "12345")
		},
		"/nocontent": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
			io.WriteString(w, "not allowed")
		},
		"/notmodified": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
			io.WriteString(w, "not allowed")
		},
		"/empty": func(w http.ResponseWriter, r *http.Request) {},
	}
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers[r.URL.Path](w, r)
	})}, nil)
	client, _ := testClient(t)

	for _, c := range []struct {
		method, path string
		status       int
		body         string
		header       http.Header // "" values: the field must be absent
		length       int64       // resp.ContentLength; -2: not checked
	}{
		{"GET", "/plain", 200, "hello", http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, 5},
		{"GET", "/html", 200, "<html><body>hi</body></html>", http.Header{"Content-Type": {"text/html; charset=utf-8"}}, 28},
		{"GET", "/typed", 200, `{"a":1}`, http.Header{"Content-Type": {"application/json"}}, 7},
		{"GET", "/status", 201, "made", http.Header{"X-A": {"1"}, "Set-Cookie": {"s=1", "t=2"}}, 4},
		{"GET", "/date", 200, "dated", http.Header{"Date": {fixedDate}}, 5},
		{"GET", "/length", 200, "12345", http.Header{"Content-Length": {"5"}}, 5},
		{"HEAD", "/plain", 200, "", nil, -2},
		{"GET", "/nocontent", 204, "", http.Header{"Content-Length": {""}}, -2},
		{"GET", "/notmodified", 304, "", http.Header{"Etag": {`"x"`}}, -2},
		{"GET", "/empty", 200, "", nil, -2},
	} {
		t.Run(c.method+c.path, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, ts.url(c.path), nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != c.status {
				t.Errorf("status %d, want %d", resp.StatusCode, c.status)
			}
			if string(body) != c.body {
				t.Errorf("body %q, want %q", body, c.body)
			}
			if resp.ProtoMajor != 2 {
				t.Errorf("Proto %s", resp.Proto)
			}
			if d := resp.Header.Get("Date"); d == "" {
				t.Errorf("no Date field")
			} else if _, err := http.ParseTime(d); err != nil {
				t.Errorf("Date %q: %v", d, err)
			}
			for k, vv := range c.header {
				if len(vv) == 1 && vv[0] == "" {
					if got, ok := resp.Header[k]; ok {
						t.Errorf("%s: %q, want none", k, got)
					}
					continue
				}
				if got := resp.Header[k]; !slices.Equal(got, vv) {
					t.Errorf("%s: %q, want %q", k, got, vv)
				}
			}
			if c.length != -2 && resp.ContentLength != c.length {
				t.Errorf("ContentLength %d, want %d (header %q)", resp.ContentLength, c.length, resp.Header.Get("Content-Length"))
			}
		})
	}
}

// TestFlush: Flush sends what the handler wrote before it, while the
// handler is still running (here: waiting for the client to have it).
func TestFlush(t *testing.T) {
	proceed := make(chan struct{})
	flushErr := make(chan error, 1)
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		f, ok := w.(http.Flusher)
		if !ok {
			flushErr <- errors.New("the ResponseWriter is no http.Flusher")
			return
		}
		f.Flush()
		flushErr <- nil
		select {
		case <-proceed:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second")
	})}, nil)
	client, _ := testClient(t)

	resp, err := client.Get(ts.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := recv(t, flushErr, "Flush"); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("first part: %q, %v", first, err)
	}
	close(proceed)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest: %q, %v", rest, err)
	}
}

// TestTrailers: trailers declared in the Trailer field, or set with
// http.TrailerPrefix after the body, end the response (RFC 9113 8.1).
func TestTrailers(t *testing.T) {
	handlers := map[string]http.HandlerFunc{
		"/declared": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-T1, X-T2")
			io.WriteString(w, "body")
			w.Header().Set("X-T1", "a")
			w.Header().Set("X-T2", "b")
		},
		"/prefix": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set(http.TrailerPrefix+"X-Late", "c")
		},
		"/nobody": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-T1")
			w.WriteHeader(200)
			w.Header().Set("X-T1", "d")
		},
	}
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers[r.URL.Path](w, r)
	})}, nil)
	client, _ := testClient(t)
	for _, c := range []struct {
		path  string
		body  string
		trail http.Header
	}{
		{"/declared", "body", http.Header{"X-T1": {"a"}, "X-T2": {"b"}}},
		{"/prefix", "body", http.Header{"X-Late": {"c"}}},
		{"/nobody", "", http.Header{"X-T1": {"d"}}},
	} {
		t.Run(c.path, func(t *testing.T) {
			resp, err := client.Get(ts.url(c.path))
			if err != nil {
				t.Fatal(err)
			}
			if body := readBody(t, resp); string(body) != c.body {
				t.Errorf("body %q, want %q", body, c.body)
			}
			for k, vv := range c.trail {
				if got := resp.Trailer[k]; !slices.Equal(got, vv) {
					t.Errorf("trailer %s: %q, want %q (all: %v)", k, got, vv, resp.Trailer)
				}
			}
		})
	}
}

// TestRequestTrailers: a request's trailers end its body (RFC 9113 8.1)
// and fill r.Trailer once the body is read to EOF.
func TestRequestTrailers(t *testing.T) {
	seen := make(chan seenRequest, 1)
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- seeRequest(r)
	})}, nil)
	client, _ := testClient(t)
	req, _ := http.NewRequest("POST", ts.url("/"), io.MultiReader(strings.NewReader("with trailers")))
	req.Trailer = http.Header{"X-Sum": {"abc"}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	got := recv(t, seen, "the handler")
	if got.Body != "with trailers" || got.BodyErr != nil {
		t.Errorf("body %q, %v", got.Body, got.BodyErr)
	}
	if v := got.Trailer.Get("X-Sum"); v != "abc" {
		t.Errorf("r.Trailer after EOF: %v, want X-Sum: abc", got.Trailer)
	}
}

// TestInformational: WriteHeader with a 1xx code sends an interim
// response before the final one (RFC 9113 8.1).
func TestInformational(t *testing.T) {
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("X-Final", "1")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "final")
	})}, nil)
	client, _ := testClient(t)

	var interim []int
	var links []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		interim = append(interim, code)
		links = append(links, h.Get("Link"))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", ts.url("/"), nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if !slices.Equal(interim, []int{103}) || !slices.Equal(links, []string{"</a.css>; rel=preload"}) {
		t.Errorf("interim responses %v with Link %q, want [103] with the Link", interim, links)
	}
	if resp.StatusCode != 200 || resp.Header.Get("X-Final") != "1" || string(body) != "final" {
		t.Errorf("final: %d %v %q", resp.StatusCode, resp.Header, body)
	}
}

// TestInline: Inline is offered the requests without a body; what it
// answers is the response, and when it declines Handler runs. A large
// inline response still arrives whole, past the client's 64 KiB window.
func TestInline(t *testing.T) {
	big := patternBytes(1<<20, 1)
	var mu sync.Mutex
	var offered []string // method and path of what Inline saw
	ts := startTestServer(t, &Server{
		Inline: func(w http.ResponseWriter, r *http.Request) bool {
			mu.Lock()
			offered = append(offered, r.Method+" "+r.URL.Path)
			mu.Unlock()
			switch r.URL.Path {
			case "/inline":
				w.Header().Set("X-Served-By", "inline")
				fmt.Fprintf(w, "inline %s %s %s %s", r.Method, r.URL.Path, r.Proto, r.Host)
				return true
			case "/inline-big":
				w.Header().Set("X-Served-By", "inline")
				w.Write(big)
				return true
			}
			return false
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Served-By", "handler")
			fmt.Fprintf(w, "handler %s %s %q", r.Method, r.URL.Path, b)
		}),
	}, nil)
	client, _ := testClient(t)
	wasOffered := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(offered, s)
	}

	for _, c := range []struct {
		method, path, body string
		by, want           string
		offered            bool
	}{
		{"GET", "/inline", "", "inline", "inline GET /inline HTTP/2.0 " + ts.addr, true},
		{"HEAD", "/inline", "", "inline", "", true},
		{"GET", "/other", "", "handler", `handler GET /other ""`, true},
		// Requests with a body are not offered to Inline.
		{"POST", "/inline", "data", "handler", `handler POST /inline "data"`, false},
	} {
		t.Run(c.method+c.path, func(t *testing.T) {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req, _ := http.NewRequest(c.method, ts.url(c.path), body)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got := readBody(t, resp)
			if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != c.by || string(got) != c.want {
				t.Errorf("got %d by %q: %q; want 200 by %q: %q", resp.StatusCode, resp.Header.Get("X-Served-By"), got, c.by, c.want)
			}
			if o := wasOffered(c.method + " " + c.path); o != c.offered {
				t.Errorf("offered to Inline: %v, want %v", o, c.offered)
			}
		})
	}

	t.Run("large, concurrently", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				path := "/inline-big"
				if i%4 == 3 {
					path = "/other"
				}
				resp, err := client.Get(ts.url(path))
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				got, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Errorf("%s: %v after %d bytes", path, err, len(got))
					return
				}
				if path == "/inline-big" {
					if d := bodyDiff(got, big); d != "" {
						t.Errorf("%s: %s", path, d)
					}
				} else if string(got) != `handler GET /other ""` {
					t.Errorf("%s: %q", path, got)
				}
			})
		}
		wg.Wait()
	})
}

// TestLargeBodies: bodies of several MiB cross both ways with the
// client's default windows: the server waits for the client's
// WINDOW_UPDATEs, and sends its own as the handler reads.
func TestLargeBodies(t *testing.T) {
	resBody := patternBytes(8<<20, 2)
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/download":
			for b := resBody; len(b) > 0; {
				n := min(len(b), 100_000)
				if _, err := w.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
			}
		case "/upload":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.Header().Set("X-Content-Length", strconv.FormatInt(r.ContentLength, 10))
			w.Write(b)
		}
	})}, nil)
	client, _ := testClient(t)

	t.Run("response", func(t *testing.T) {
		resp, err := client.Get(ts.url("/download"))
		if err != nil {
			t.Fatal(err)
		}
		if d := bodyDiff(readBody(t, resp), resBody); d != "" {
			t.Error(d)
		}
	})
	for _, c := range []struct {
		name  string
		known bool
	}{{"request with content-length", true}, {"request of unknown length", false}} {
		t.Run(c.name, func(t *testing.T) {
			reqBody := patternBytes(6<<20, 3)
			var body io.Reader = bytes.NewReader(reqBody)
			wantCL := strconv.Itoa(len(reqBody))
			if !c.known {
				body, wantCL = io.MultiReader(body), "-1"
			}
			resp, err := client.Post(ts.url("/upload"), "application/octet-stream", body)
			if err != nil {
				t.Fatal(err)
			}
			got := readBody(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %.200s", resp.StatusCode, got)
			}
			if d := bodyDiff(got, reqBody); d != "" {
				t.Error(d)
			}
			if cl := resp.Header.Get("X-Content-Length"); cl != wantCL {
				t.Errorf("handler's ContentLength %s, want %s", cl, wantCL)
			}
		})
	}
}

// TestConcurrentStreams: 100 requests at once on one connection, each
// with a body and a response larger than the initial windows, all arrive
// intact.
func TestConcurrentStreams(t *testing.T) {
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if r.ContentLength != int64(len(b)) {
			http.Error(w, fmt.Sprintf("ContentLength %d for %d bytes", r.ContentLength, len(b)), 500)
			return
		}
		for range 8 {
			w.Write(b)
		}
	})}, nil)
	client, tr := testClient(t)
	// One connection: the client queues rather than dialing another.
	tr.StrictMaxConcurrentStreams = true

	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			body := patternBytes(16<<10+i, byte(i))
			resp, err := client.Post(ts.url(fmt.Sprintf("/%d", i)), "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Errorf("request %d: %v after %d bytes", i, err, len(got))
				return
			}
			if resp.StatusCode != 200 {
				t.Errorf("request %d: status %d: %.200s", i, resp.StatusCode, got)
				return
			}
			if d := bodyDiff(got, bytes.Repeat(body, 8)); d != "" {
				t.Errorf("request %d: %s", i, d)
			}
		})
	}
	wg.Wait()
	if n := ts.accepted.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// selfSigned is a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(tb testing.TB) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "h2 test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tlsHandshake is startTestServer's prepare for TLS: each connection is
// handshaken with cfg and must negotiate h2.
func tlsHandshake(cfg *tls.Config) func(net.Conn) (net.Conn, ConnOpts, error) {
	return func(c net.Conn) (net.Conn, ConnOpts, error) {
		tc := tls.Server(c, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, ConnOpts{}, err
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			return nil, ConnOpts{}, fmt.Errorf("ALPN %q", p)
		}
		return tc, ConnOpts{}, nil
	}
}

// TestTLS: over TLS with ALPN h2, the handler sees the connection's TLS
// state, taken from the *tls.Conn ServeConn got.
func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	seen := make(chan seenRequest, 1)
	big := patternBytes(1<<20, 4)
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(big)
			return
		}
		seen <- seeRequest(r)
		io.WriteString(w, "secure")
	})}, tlsHandshake(cfg))
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: testTimeout}

	resp, err := client.Get("https://" + ts.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); string(body) != "secure" || resp.ProtoMajor != 2 {
		t.Errorf("%s %q", resp.Proto, body)
	}
	got := recv(t, seen, "the handler")
	if got.TLS == nil {
		t.Fatal("r.TLS is nil over TLS")
	}
	if !got.TLS.HandshakeComplete || got.TLS.NegotiatedProtocol != "h2" || got.TLS.Version < tls.VersionTLS12 {
		t.Errorf("r.TLS: handshake complete %v, ALPN %q, version %x", got.TLS.HandshakeComplete, got.TLS.NegotiatedProtocol, got.TLS.Version)
	}
	if got.Proto != "HTTP/2.0" {
		t.Errorf("Proto %q", got.Proto)
	}

	resp, err = client.Get("https://" + ts.addr + "/big")
	if err != nil {
		t.Fatal(err)
	}
	if d := bodyDiff(readBody(t, resp), big); d != "" {
		t.Error(d)
	}
}

type ctxKey struct{}

// TestConnOpts: ConnOpts.Context is the parent of every request's context
// and ConnOpts.TLS is what r.TLS reports.
func TestConnOpts(t *testing.T) {
	state := &tls.ConnectionState{ServerName: "from-opts", HandshakeComplete: true, NegotiatedProtocol: "h2"}
	type seen struct {
		value any
		tls   *tls.ConnectionState
	}
	got := make(chan seen, 1)
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Context().Value(ctxKey{}), r.TLS}
	})}, func(c net.Conn) (net.Conn, ConnOpts, error) {
		return c, ConnOpts{Context: context.WithValue(context.Background(), ctxKey{}, "parent"), TLS: state}, nil
	})
	client, _ := testClient(t)
	resp, err := client.Get(ts.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	s := recv(t, got, "the handler")
	if s.value != "parent" {
		t.Errorf("context value %v, want the one from ConnOpts.Context", s.value)
	}
	if s.tls == nil || s.tls.ServerName != "from-opts" {
		t.Errorf("r.TLS %+v, want ConnOpts.TLS", s.tls)
	}
}

// cancelOutcome is what awaitCancel's handler saw.
type cancelOutcome struct{ ctxErr, readErr error }

// awaitCancel is a handler that says it started, waits for its request's
// context to end (at most testTimeout), then reads the body, and reports
// both errors.
func awaitCancel(started chan<- struct{}, ended chan<- cancelOutcome) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		var o cancelOutcome
		select {
		case <-r.Context().Done():
			o.ctxErr = r.Context().Err()
		case <-time.After(testTimeout):
		}
		_, o.readErr = io.ReadAll(r.Body)
		ended <- o
	}
}

// TestRequestContextCanceled: a request's context ends when the client
// resets its stream, and its unread body then fails.
func TestRequestContextCanceled(t *testing.T) {
	got := make(chan cancelOutcome, 1)
	started := make(chan struct{}, 1)
	ts := startTestServer(t, &Server{Handler: awaitCancel(started, got)}, nil)
	client, _ := testClient(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.url("/"), pr)
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	// Part of the body, so that the stream is open both ways.
	if _, err := pw.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	recv(t, started, "the handler to start")
	cancel() // the Transport sends RST_STREAM CANCEL
	o := recv(t, got, "the handler's context to end")
	if o.ctxErr == nil {
		t.Errorf("the request's context did not end when the client reset the stream")
	}
	if o.readErr == nil {
		t.Errorf("reading the body of a reset stream succeeded")
	}
	recv(t, errc, "the client")
}

// TestShutdown: Shutdown sends GOAWAY, lets the request in flight finish,
// closes new connections at once, and returns nil when the connection is
// done.
func TestShutdown(t *testing.T) {
	g := newGate()
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.wait(r)
		io.WriteString(w, "done")
	})}
	ts := startTestServer(t, s, nil)
	t.Cleanup(g.open)

	rc := dialRaw(t, ts.addr)
	rc.headers(1, true, getReq("/slow")...)
	recv(t, g.started, "the handler to start")

	shutdownErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		shutdownErr <- s.Shutdown(ctx)
	}()
	// RFC 9113 6.8: the GOAWAY's last stream id covers the stream being
	// processed, so the client knows it will be answered.
	ga := rc.wantFrame(http2.FrameGoAway, 0)
	if ga.code != http2.ErrCodeNo || ga.last < 1 {
		t.Errorf("GOAWAY %v, want NO_ERROR with last stream id >= 1", ga)
	}

	// A connection that arrives now is closed without being served.
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte(http2.ClientPreface))
	nc.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := io.Copy(io.Discard, nc); err != nil && isTimeout(err) {
		t.Errorf("a connection accepted after Shutdown was not closed (read %d bytes)", n)
	}

	select {
	case err := <-shutdownErr:
		t.Fatalf("Shutdown returned %v while a request was in flight", err)
	default:
	}
	g.open()
	res := rc.await(1)
	if res.status != 200 || string(res.body) != "done" || !res.ended {
		t.Errorf("in-flight request: %v", res)
	}
	if err := recv(t, shutdownErr, "Shutdown"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	rc.wantClosed()

	// ServeConn after Shutdown closes the connection and returns.
	cli, srv := net.Pipe()
	defer cli.Close()
	served := make(chan struct{})
	go func() {
		s.ServeConn(srv, ConnOpts{})
		close(served)
	}()
	recv(t, served, "ServeConn after Shutdown to return")
	cli.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := cli.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("reading the client end of a connection ServeConn got after Shutdown: %v, want EOF", err)
	}
}

// TestShutdownContextEnds: Shutdown gives up when its context ends,
// closes the connections, and returns the context's error.
func TestShutdownContextEnds(t *testing.T) {
	g := newGate()
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.wait(r) })}
	ts := startTestServer(t, s, nil)
	t.Cleanup(g.open)

	rc := dialRaw(t, ts.addr)
	rc.headers(1, true, getReq("/stuck")...)
	recv(t, g.started, "the handler to start")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown with a canceled context and a stuck handler: %v, want context.Canceled", err)
	}
	rc.wantClosed()
}

// TestIdleTimeout: a connection without open streams for IdleTimeout gets
// a GOAWAY and is closed; one with a stream open is not idle.
func TestIdleTimeout(t *testing.T) {
	const idle = 100 * time.Millisecond
	g := newGate()
	ts := startTestServer(t, &Server{IdleTimeout: idle, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			g.wait(r)
		}
		io.WriteString(w, "ok")
	})}, nil)
	t.Cleanup(g.open)

	t.Run("after a request", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		rc.headers(1, true, getReq("/")...)
		if res := rc.await(1); res.status != 200 {
			t.Fatalf("request: %v", res)
		}
		if ga := rc.wantFrame(http2.FrameGoAway, 0); ga.code != http2.ErrCodeNo {
			t.Errorf("GOAWAY %v, want NO_ERROR", ga)
		}
		rc.wantClosed()
	})
	t.Run("without a request", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		rc.wantFrame(http2.FrameGoAway, 0)
		rc.wantClosed()
	})
	t.Run("open stream", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		rc.headers(1, true, getReq("/slow")...)
		recv(t, g.started, "the handler to start")
		// Several idle timeouts pass while the handler runs: nothing may
		// arrive but housekeeping frames.
		rc.c.SetReadDeadline(time.Now().Add(5 * idle))
		for {
			f, err := rc.nextNoDeadline()
			if err != nil {
				if !isTimeout(err) {
					t.Fatalf("connection with an open stream ended: %v\n%s", err, rc.transcript())
				}
				break
			}
			if f.Type == http2.FrameGoAway || f.Type == http2.FrameRSTStream {
				t.Fatalf("%v while a stream was open", f)
			}
		}
		g.open()
		if res := rc.await(1); res.status != 200 {
			t.Fatalf("request: %v", res)
		}
		rc.wantFrame(http2.FrameGoAway, 0)
		rc.wantClosed()
	})
}

// TestReadTimeout: a client that connects and sends no preface, or no
// SETTINGS after it, is disconnected after ReadTimeout.
func TestReadTimeout(t *testing.T) {
	ts := startTestServer(t, &Server{ReadTimeout: 100 * time.Millisecond, Handler: http.NotFoundHandler()}, nil)
	for _, c := range []struct {
		name, send string
	}{{"nothing", ""}, {"preface only", http2.ClientPreface}} {
		t.Run(c.name, func(t *testing.T) {
			rc := connectRaw(t, ts.addr)
			rc.write([]byte(c.send))
			rc.wantClosed()
		})
	}
}

// TestWriteTimeout: when the client stops reading, the server's writes
// stall; after WriteTimeout it closes the connection, and the handler's
// Write fails instead of blocking for ever.
func TestWriteTimeout(t *testing.T) {
	writeErr := make(chan error, 1)
	chunk := patternBytes(64<<10, 5)
	ts := startTestServer(t, &Server{WriteTimeout: 200 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 2048 { // 128 MiB: more than any socket buffer
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	})}, nil)
	// Windows so large that only the socket can stall the server.
	rc := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	rc.windowUpdate(0, 1<<31-1-65535)
	rc.headers(1, true, getReq("/huge")...)
	if err := recv(t, writeErr, "the handler's Write to fail"); err == nil {
		t.Fatal("the handler wrote 128 MiB to a client that reads nothing")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
