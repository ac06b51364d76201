package lb

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// h2Target is a real HTTP/2 target: h2c (prior knowledge, and HTTP/1.1 as
// Go's h2c handler also serves it) or TLS, whose ALPN offers h2 or not.
// Paths:
//
//	/            "<proto> <tls> xfp=<X-Forwarded-Proto> xff=<X-Forwarded-For>"
//	/trailers    a body, then unannounced trailers (as gRPC's grpc-status)
//	/stream?id=  "first", flushed; waits for release(id); "second"
//	/slow        headers after 1 s
//	/grpc.Echo/Say, /grpc.Echo/Stream  hand-framed gRPC (see grpcFrame)
//	/grpc.health.v1.Health/Check       SERVING, or NOT_SERVING once notServing is set
type h2Target struct {
	addr       string
	mu         sync.Mutex
	release    map[string]chan struct{}
	notServing atomic.Bool  // what the gRPC health service says
	says       atomic.Int64 // /grpc.Echo/Say calls answered
}

func (b *h2Target) gate(id string) chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.release[id] == nil {
		b.release[id] = make(chan struct{})
	}
	return b.release[id]
}

func (b *h2Target) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/":
		tlsOn := "plain"
		if r.TLS != nil {
			tlsOn = "tls"
		}
		fmt.Fprintf(w, "%s %s xfp=%s xff=%s", r.Proto, tlsOn, r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-For"))
	case "/trailers":
		_, _ = io.WriteString(w, "body")
		// Flushed as a streaming server would: unflushed, Go's server
		// sends a Content-Length, and HTTP/1.1 clients cannot get
		// unannounced trailers after a body with a length.
		http.NewResponseController(w).Flush()
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Grpc-Message", "fine")
	case "/stream":
		_, _ = io.WriteString(w, "first")
		http.NewResponseController(w).Flush()
		b.wait(r)
		_, _ = io.WriteString(w, "second")
	case "/slow":
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "slow")
	case "/grpc.Echo/Say", "/grpc.Echo/Stream":
		if r.Header.Get("Content-Type") != "application/grpc" || r.ProtoMajor != 2 {
			http.Error(w, "want gRPC over HTTP/2, got "+r.Proto+" "+r.Header.Get("Content-Type"), http.StatusBadRequest)
			return
		}
		msg, err := readGRPCFrame(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.URL.Path == "/grpc.Echo/Say" {
			b.says.Add(1)
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = w.Write(grpcFrame("hello " + string(msg)))
		if r.URL.Path == "/grpc.Echo/Stream" {
			http.NewResponseController(w).Flush()
			b.wait(r)
			_, _ = w.Write(grpcFrame("bye"))
		}
		w.Header().Set("Grpc-Status", "0")
	case "/grpc.health.v1.Health/Check":
		// grpc.health.v1.HealthCheckResponse{status: SERVING (1) or
		// NOT_SERVING (2)}: field 1, varint.
		if _, err := readGRPCFrame(r.Body); err != nil || r.ProtoMajor != 2 {
			http.Error(w, "want gRPC over HTTP/2", http.StatusBadRequest)
			return
		}
		status := "\x08\x01"
		if b.notServing.Load() {
			status = "\x08\x02"
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = w.Write(grpcFrame(status))
		w.Header().Set("Grpc-Status", "0")
	default:
		http.NotFound(w, r)
	}
}

// wait blocks a streaming response until the client released it (it got
// the first part), or gives up after 10 s.
func (b *h2Target) wait(r *http.Request) {
	select {
	case <-b.gate(r.URL.Query().Get("id")):
	case <-time.After(10 * time.Second):
	case <-r.Context().Done():
	}
}

// newH2Target starts a target: cert == nil serves h2c; otherwise TLS with
// ALPN h2 when h2 is set, HTTP/1.1 only when not.
func newH2Target(t *testing.T, cert *tls.Certificate, h2 bool) *h2Target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &h2Target{addr: ln.Addr().String(), release: map[string]chan struct{}{}}
	srv := &http.Server{Handler: http.HandlerFunc(b.serveHTTP), ReadHeaderTimeout: 5 * time.Second}
	switch {
	case cert == nil:
		srv.Handler = h2c.NewHandler(srv.Handler, &http2.Server{})
	case h2:
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2"}}
		if err := http2.ConfigureServer(srv, &http2.Server{}); err != nil {
			t.Fatal(err)
		}
		ln = tls.NewListener(ln, srv.TLSConfig)
	default:
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"http/1.1"}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

// grpcFrame is one gRPC length-prefixed message: uncompressed flag, 4-byte
// big-endian length, payload.
func grpcFrame(msg string) []byte {
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

func readGRPCFrame(r io.Reader) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("gRPC frame header: %w", err)
	}
	msg := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, fmt.Errorf("gRPC frame: %w", err)
	}
	return msg, nil
}

// TestHTTP2Targets forwards to target groups with protocol_version http2
// (h2c and TLS) and grpc, from HTTP/1.1 clients (plain and TLS) and
// HTTP/2 clients: the target sees HTTP/2, trailers and streams come
// through unbuffered, and what the group cannot carry gets ALB's answers.
func TestHTTP2Targets(t *testing.T) {
	dir := t.TempDir()
	cp, kp, x := writeCert(t, dir, "front", "front.test")
	tp, tk, _ := writeCert(t, dir, "target", "127.0.0.1")
	tcert, err := tls.LoadX509KeyPair(tp, tk)
	if err != nil {
		t.Fatal(err)
	}
	clear := newH2Target(t, nil, false)
	secure := newH2Target(t, &tcert, true)
	noH2 := newH2Target(t, &tcert, false)
	dead := func() string { // a port nobody listens on: connection refused
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		return ln.Addr().String()
	}()
	rules := `
    request_timeout: 300ms
    rules:
      - {priority: 1, conditions: {host: ["tls.test"]}, action: {forward: {target_group: h2tls}}}
      - {priority: 2, conditions: {host: ["noh2.test"]}, action: {forward: {target_group: noh2}}}
      - {priority: 3, conditions: {host: ["grpc.test"]}, action: {forward: {target_group: grpc}}}
      - {priority: 4, conditions: {host: ["retry.test"]}, action: {forward: {target_group: retry}}}
    default_action: {forward: {target_group: h2c}}`
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: h2c
    protocol_version: http2
    targets: [{address: "`+clear.addr+`"}]
    stickiness: {enabled: true}
  - name: h2tls
    protocol: https
    protocol_version: http2
    insecure_skip_verify: true
    targets: [{address: "`+secure.addr+`"}]
  - name: noh2
    protocol: https
    protocol_version: http2
    insecure_skip_verify: true
    targets: [{address: "`+noH2.addr+`"}]
    health_check: {disabled: true}
  - name: grpc
    protocol_version: grpc
    targets: [{address: "`+clear.addr+`"}]
  - name: retry
    protocol_version: http2
    targets: [{address: "`+dead+`"}, {address: "`+clear.addr+`"}]
    health_check: {disabled: true}
listeners:
  - name: plain
    listen: 127.0.0.1:0`+rules+`
  - name: secure
    protocol: https
    listen: 127.0.0.1:0
    tls:
      certificates: [{cert_file: `+cp+`, key_file: `+kp+`}]`+rules+`
`)
	if h.svc.listeners["plain"].fast || h.svc.listeners["secure"].fast {
		t.Fatal("engine auto kept the fast engine for listeners forwarding to http2 groups")
	}
	pool := x509.NewCertPool()
	pool.AddCert(x)
	tlsClient := func(h2 bool) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "front.test"}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	plainTr := &http.Transport{}
	t.Cleanup(plainTr.CloseIdleConnections)
	clients := []struct {
		name   string
		base   string
		c      *http.Client
		proto  string // the client's protocol with lbd
		scheme string // X-Forwarded-Proto
	}{
		{"http/1.1", h.url("plain"), &http.Client{Transport: plainTr, Timeout: 10 * time.Second}, "HTTP/1.1", "http"},
		{"https http/1.1", "https://" + h.svc.Addr("secure").String(), tlsClient(false), "HTTP/1.1", "https"},
		{"https h2", "https://" + h.svc.Addr("secure").String(), tlsClient(true), "HTTP/2.0", "https"},
	}
	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			do := func(t *testing.T, method, host, path, ctype string, body io.Reader) *http.Response {
				t.Helper()
				req, _ := http.NewRequest(method, cl.base+path, body)
				req.Host = host
				if ctype != "" {
					req.Header.Set("Content-Type", ctype)
				}
				resp, err := cl.c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.Proto != cl.proto {
					t.Errorf("client spoke %s with lbd, want %s", resp.Proto, cl.proto)
				}
				return resp
			}
			for _, c := range []struct {
				name, host, path string
				ctype            string
				code             int
				body             string // prefix
			}{
				{"h2c target", "h2c.test", "/", "", 200, "HTTP/2.0 plain xfp=" + cl.scheme + " xff=127.0.0.1"},
				{"tls target with ALPN h2", "tls.test", "/", "", 200, "HTTP/2.0 tls xfp=" + cl.scheme},
				{"tls target without h2", "noh2.test", "/", "", 502, "502 Bad Gateway: target did not negotiate HTTP/2 (ALPN h2)"},
				{"connection refused, retried", "retry.test", "/", "", 200, "HTTP/2.0 plain"},
				{"connection refused, retried again", "retry.test", "/", "", 200, "HTTP/2.0 plain"},
				{"request_timeout on an http2 group", "h2c.test", "/slow", "", 504, "504 Gateway Timeout"},
				{"no request_timeout on a grpc group", "grpc.test", "/slow", "application/grpc", 200, "slow"},
				{"not gRPC to a grpc group", "grpc.test", "/", "text/plain", 464, "464 Incompatible Protocol: not a gRPC request"},
			} {
				t.Run(c.name, func(t *testing.T) {
					resp := do(t, "GET", c.host, c.path, c.ctype, nil)
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != c.code || !strings.HasPrefix(string(b), c.body) {
						t.Errorf("%d %q, want %d %q...", resp.StatusCode, b, c.code, c.body)
					}
				})
			}
			t.Run("sticky cookie", func(t *testing.T) {
				resp := do(t, "GET", "h2c.test", "/", "", nil)
				resp.Body.Close()
				if !strings.HasPrefix(resp.Header.Get("Set-Cookie"), "lbd_sticky=") {
					t.Errorf("Set-Cookie %q, want lbd_sticky", resp.Header.Get("Set-Cookie"))
				}
			})
			t.Run("trailers after the body", func(t *testing.T) {
				resp := do(t, "GET", "h2c.test", "/trailers", "", nil)
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := http.Header{"Grpc-Status": {"0"}, "Grpc-Message": {"fine"}}
				if string(b) != "body" || fmt.Sprint(resp.Trailer) != fmt.Sprint(want) {
					t.Errorf("body %q trailers %v, want %q %v", b, resp.Trailer, "body", want)
				}
			})
			for _, s := range []struct {
				name, host, path, ctype string
				body                    []byte
				first, rest             []byte
			}{
				{"streamed response", "h2c.test", "/stream", "", nil, []byte("first"), []byte("second")},
				{"gRPC server stream", "grpc.test", "/grpc.Echo/Stream", "application/grpc", grpcFrame("lbd"), grpcFrame("hello lbd"), grpcFrame("bye")},
			} {
				t.Run(s.name, func(t *testing.T) {
					if s.ctype != "" && cl.proto != "HTTP/2.0" {
						t.Skip("gRPC needs an HTTP/2 client")
					}
					id := cl.name + s.name
					resp := do(t, "POST", s.host, s.path+"?id="+strings.ReplaceAll(id, " ", "_"), s.ctype, bytes.NewReader(s.body))
					defer resp.Body.Close()
					got := make(chan []byte, 1)
					go func() {
						buf := make([]byte, len(s.first))
						_, err := io.ReadFull(resp.Body, buf)
						if err != nil {
							buf = []byte(err.Error())
						}
						got <- buf
					}()
					select {
					case b := <-got:
						if !bytes.Equal(b, s.first) {
							t.Fatalf("first part %q, want %q", b, s.first)
						}
					case <-time.After(5 * time.Second):
						t.Fatal("first part held back until the target finished: the response was buffered")
					}
					close((map[string]*h2Target{"h2c.test": clear, "grpc.test": clear})[s.host].gate(strings.ReplaceAll(id, " ", "_")))
					rest, err := io.ReadAll(resp.Body)
					if err != nil || !bytes.Equal(rest, s.rest) {
						t.Errorf("rest %q (%v), want %q", rest, err, s.rest)
					}
					if s.ctype != "" && resp.Trailer.Get("Grpc-Status") != "0" {
						t.Errorf("trailers %v, want grpc-status 0", resp.Trailer)
					}
				})
			}
			t.Run("unary gRPC", func(t *testing.T) {
				resp := do(t, "POST", "grpc.test", "/grpc.Echo/Say", "application/grpc", bytes.NewReader(grpcFrame("you")))
				defer resp.Body.Close()
				if cl.proto != "HTTP/2.0" {
					// Forwarded over HTTP/2 all the same; the answer's
					// trailer reaches an HTTP/1.1 client chunked.
					_, _ = io.Copy(io.Discard, resp.Body)
				} else {
					msg, err := readGRPCFrame(resp.Body)
					if err != nil || string(msg) != "hello you" {
						t.Fatalf("message %q (%v)", msg, err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
				}
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/grpc" || resp.Trailer.Get("Grpc-Status") != "0" {
					t.Errorf("%d %q trailers %v", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Trailer)
				}
			})
			if cl.proto == "HTTP/1.1" {
				t.Run("upgrade to an http2 group", func(t *testing.T) {
					req, _ := http.NewRequest("GET", cl.base+"/", nil)
					req.Host = "h2c.test"
					req.Header.Set("Connection", "Upgrade")
					req.Header.Set("Upgrade", "websocket")
					resp, err := cl.c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != 464 {
						t.Errorf("status %d, want 464", resp.StatusCode)
					}
				})
			}
		})
	}
	m := h.metrics()
	for _, want := range []string{
		`edgestack_lbd_requests_total{code_class="2xx",listener="secure",target_group="h2tls"}`,
		`edgestack_lbd_requests_total{code_class="4xx",listener="plain",target_group="grpc"}`,
		`edgestack_lbd_retries_total{target_group="retry"}`,
		`edgestack_lbd_upstream_latency_seconds_count{target_group="h2c"}`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestHTTP2TargetsReload: a reload that makes a group speak HTTP/2 moves
// its listener (auto engine) to the net/http engine on the same socket,
// and back.
func TestHTTP2TargetsReload(t *testing.T) { engines(t, testHTTP2TargetsReload) }

func testHTTP2TargetsReload(t *testing.T) {
	target := newH2Target(t, nil, false) // h2c, and HTTP/1.1 too
	port := render(t, `{{port "p"}}`, nil)
	cfgFor := func(version string) string {
		return `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: web
    protocol_version: ` + version + `
    targets: [{address: "` + target.addr + `"}]
listeners:
  - name: front
    listen: 127.0.0.1:` + port + `
    default_action: {forward: {target_group: web}}
`
	}
	h := startLB(t, cfgFor("http1"))
	wantFast := testEngine == "fast"
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for i, step := range []struct {
		version, proto string
		fast           bool
	}{
		{"http1", "HTTP/1.1", wantFast},
		{"http2", "HTTP/2.0", false},
		{"http1", "HTTP/1.1", wantFast},
	} {
		if i > 0 {
			if err := h.reload(cfgFor(step.version)); err != nil {
				t.Fatal(err)
			}
		}
		h.svc.mu.Lock()
		fast := h.svc.listeners["front"].fast
		h.svc.mu.Unlock()
		if fast != step.fast {
			t.Errorf("step %d (%s): fast engine %v, want %v", i, step.version, fast, step.fast)
		}
		// Connections kept alive from before the reload finish on the
		// old server; every fresh one gets the new (the old server stops
		// accepting before the reload returns).
		for j := range 10 {
			tr.CloseIdleConnections()
			code, body, _ := get(t, client, h.url("front")+"/")
			if code != 200 || !strings.HasPrefix(body, step.proto+" ") {
				t.Errorf("step %d (%s), connection %d: %d %q, want %s at the target", i, step.version, j, code, body, step.proto)
			}
		}
	}
}

// trackedListener counts the connections a target has open.
type trackedListener struct {
	net.Listener
	open atomic.Int64
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &trackedConn{Conn: c, l: l}, nil
}

type trackedConn struct {
	net.Conn
	l    *trackedListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// TestHTTP2TargetDeregistered: once a deregistered target of an http2
// group is dropped, lbd closes its HTTP/2 connection to it instead of
// keeping it (and its PINGs) until the idle timeout; the other target's
// connection stays.
func TestHTTP2TargetDeregistered(t *testing.T) {
	start := func() (*trackedListener, string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tl := &trackedListener{Listener: ln}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.Proto)
		}), Protocols: new(http.Protocols)}
		srv.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
		go func() { _ = srv.Serve(tl) }()
		t.Cleanup(func() { _ = srv.Close() })
		return tl, ln.Addr().String()
	}
	a, aAddr := start()
	b, bAddr := start()
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: web
    protocol_version: http2
    deregistration_delay: 100ms
    health_check: {disabled: true}
    targets: [{address: "`+aAddr+`"}, {address: "`+bAddr+`"}]
listeners:
  - name: front
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: web}}
`)
	client := &http.Client{Timeout: 5 * time.Second}
	for range 6 {
		if code, body, _ := get(t, client, h.url("front")+"/"); code != 200 || body != "HTTP/2.0" {
			t.Fatalf("%d %q", code, body)
		}
	}
	if a.open.Load() == 0 || b.open.Load() == 0 {
		t.Fatalf("open connections: a %d, b %d; want both in use", a.open.Load(), b.open.Load())
	}
	if code, body := h.api("DELETE", "/v1/target-groups/web/targets/"+aAddr, ""); code/100 != 2 {
		t.Fatalf("deregister: %d %s", code, body)
	}
	waitUntil(t, 5*time.Second, "the deregistered target's connection to close", func() bool { return a.open.Load() == 0 })
	if b.open.Load() == 0 {
		t.Errorf("the remaining target's connection was closed too")
	}
	if code, body, _ := get(t, client, h.url("front")+"/"); code != 200 || body != "HTTP/2.0" {
		t.Errorf("after deregistration: %d %q", code, body)
	}
}
