package health

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/config"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// grpcTarget is a gRPC-like server written by hand: grpc.health.v1 Check
// with a serving status per service (changed at run time), and a few
// methods answering what real servers answer when things go wrong. Paths:
//
//	/grpc.health.v1.Health/Check   the status of the requested service;
//	                               NOT_FOUND (5) for services it does not know
//	/AWS.ALB/healthcheck           grpc-status 12 (UNIMPLEMENTED), trailers only
//	/test.Fail/Check               grpc-status 14 (UNAVAILABLE) "backend down"
//	/test.HTTP/Unavailable         HTTP 503
//	/test.No/Status                200 and a message, no grpc-status
//	/test.Echo/Any                 a message and grpc-status 0
//
// Requests that are not gRPC over HTTP/2 (protocol, content-type, te)
// get HTTP 400.
type grpcTarget struct {
	addr     string
	mu       sync.Mutex
	statuses map[string]int32 // service -> serving status
	services []string         // services asked about, in order
	accepted atomic.Int64     // connections accepted
	closed   atomic.Int64     // connections closed
}

func (s *grpcTarget) setStatus(service string, st int32) {
	s.mu.Lock()
	s.statuses[service] = st
	s.mu.Unlock()
}

func (s *grpcTarget) asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.services...)
}

func (s *grpcTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/grpc" || r.Header.Get("Te") != "trailers" {
		http.Error(w, fmt.Sprintf("not gRPC: %s %s content-type=%q te=%q", r.Proto, r.Method, r.Header.Get("Content-Type"), r.Header.Get("Te")), http.StatusBadRequest)
		return
	}
	msg, err := readFrame(r.Body)
	if err != nil {
		grpcError(w, 13, err.Error())
		return
	}
	switch r.URL.Path {
	case DefaultGRPCPath:
		service, err := decodeHealthRequest(msg)
		if err != nil {
			grpcError(w, 3, err.Error())
			return
		}
		s.mu.Lock()
		st, ok := s.statuses[service]
		s.services = append(s.services, service)
		s.mu.Unlock()
		if !ok {
			grpcError(w, 5, "unknown service "+service)
			return
		}
		grpcOK(w, encodeServingStatus(st))
	case "/AWS.ALB/healthcheck":
		grpcError(w, 12, "")
	case "/test.Fail/Check":
		grpcError(w, 14, "backend down")
	case "/test.HTTP/Unavailable":
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	case "/test.No/Status":
		w.Header().Set("Content-Type", "application/grpc")
		_, _ = w.Write(grpcFrame([]byte("x")))
	case "/test.Echo/Any":
		grpcOK(w, []byte("anything at all"))
	default:
		grpcError(w, 12, "unknown method")
	}
}

// grpcOK answers one message and grpc-status 0 in the trailers.
func grpcOK(w http.ResponseWriter, msg []byte) {
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Trailer", "Grpc-Status")
	_, _ = w.Write(grpcFrame(msg))
	w.Header().Set("Grpc-Status", "0")
}

// grpcError answers a trailers-only response: grpc-status in the headers
// of a response without a body.
func grpcError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Grpc-Status", fmt.Sprint(code))
	if msg != "" {
		w.Header().Set("Grpc-Message", strings.ReplaceAll(msg, " ", "%20"))
	}
	w.WriteHeader(http.StatusOK)
}

func readFrame(r io.Reader) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("gRPC frame header: %w", err)
	}
	if hdr[0] != 0 {
		return nil, errors.New("compressed request")
	}
	msg := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, fmt.Errorf("gRPC message: %w", err)
	}
	return msg, nil
}

// decodeHealthRequest is the server's side of encodeHealthRequest: field 1
// (tag 0x0a), a string; nothing else is expected.
func decodeHealthRequest(msg []byte) (string, error) {
	if len(msg) == 0 {
		return "", nil
	}
	if msg[0] != 0x0a {
		return "", fmt.Errorf("unexpected tag %#x", msg[0])
	}
	l, n := binary.Uvarint(msg[1:])
	if n <= 0 || uint64(len(msg)-1-n) != l {
		return "", errors.New("bad service length")
	}
	return string(msg[1+n:]), nil
}

// encodeServingStatus encodes a HealthCheckResponse as a protobuf library
// would: field 1 (tag 0x08) as a varint, left out when 0.
func encodeServingStatus(st int32) []byte {
	if st == 0 {
		return nil
	}
	return binary.AppendUvarint([]byte{0x08}, uint64(int64(st)))
}

// countingListener counts the connections it accepts and those closed.
type countingListener struct {
	net.Listener
	s *grpcTarget
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.accepted.Add(1)
	return &countingConn{Conn: c, s: l.s}, nil
}

type countingConn struct {
	net.Conn
	s    *grpcTarget
	once sync.Once
}

func (c *countingConn) Close() error {
	c.once.Do(func() { c.s.closed.Add(1) })
	return c.Conn.Close()
}

// newGRPCTarget starts a grpcTarget: tlsMode "" serves h2c with prior
// knowledge (x/net's h2c handler); "h2" serves TLS with ALPN h2; "h1"
// serves TLS offering only http/1.1. Every service starts SERVING under
// the names "" and "known".
func newGRPCTarget(t *testing.T, tlsMode string) *grpcTarget {
	t.Helper()
	s := &grpcTarget{statuses: map[string]int32{"": serving, "known": serving}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s)
	srv.Listener = countingListener{Listener: ln, s: s}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // rejected handshakes are expected
	switch tlsMode {
	case "":
		srv.Config.Handler = h2c.NewHandler(s, &http2.Server{})
		srv.Start()
	case "h2":
		srv.EnableHTTP2 = true
		srv.StartTLS()
	case "h1":
		srv.StartTLS()
	}
	t.Cleanup(srv.Close)
	s.addr = srv.Listener.Addr().String()
	return s
}

// grpcCheck is a fast grpc check of addr with thresholds of 1.
func grpcCheck(addr string) CheckConfig {
	return CheckConfig{Kind: KindGRPC, Address: addr, Interval: config.Duration(200 * time.Millisecond), HealthyThreshold: 1, UnhealthyThreshold: 1}
}

func TestGRPCCheck(t *testing.T) {
	h2cTarget := newGRPCTarget(t, "")
	h2cTarget.setStatus("sick", servingNotServing)
	h2cTarget.setStatus("starting", servingUnknown)
	tlsTarget := newGRPCTarget(t, "h2")
	h1TLS := newGRPCTarget(t, "h1")
	h1Plain := newTestServer(t)
	down := closedPort(t)
	overTLS := func(c CheckConfig) CheckConfig {
		// TLS handshakes are slow under the race detector: allow 1s.
		c.Kind, c.Interval, c.InsecureSkipVerify = KindGRPCS, config.Duration(time.Second), true
		return c
	}

	tests := []struct {
		name    string
		cfg     CheckConfig
		want    State
		reason  Reason
		errText string // in Status.LastError when unhealthy
	}{
		{"serving", grpcCheck(h2cTarget.addr), Healthy, "", ""},
		{"service serving", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.GRPCService = "known" }), Healthy, "", ""},
		{"service not serving", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.GRPCService = "sick" }), Unhealthy, ReasonNotServing, ": NOT_SERVING"},
		{"service status unknown", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.GRPCService = "starting" }), Unhealthy, ReasonNotServing, ": UNKNOWN"},
		{"unknown service", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.GRPCService = "nope" }), Unhealthy, ReasonGRPCStatus, `grpc-status 5 (NOT_FOUND: "unknown service nope"), want 0`},
		{"ALB path with matcher 12", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.Path, c.ExpectedGRPCStatus = "/AWS.ALB/healthcheck", "12" }), Healthy, "", ""},
		{"ALB path with a range", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.Path, c.ExpectedGRPCStatus = "/AWS.ALB/healthcheck", "0-99" }), Healthy, "", ""},
		{"ALB path with default matcher", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.Path = "/AWS.ALB/healthcheck" }), Unhealthy, ReasonGRPCStatus, "grpc-status 12 (UNIMPLEMENTED), want 0"},
		{"other method answering OK", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.Path = "/test.Echo/Any" }), Healthy, "", ""},
		{"grpc-status 14", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.Path = "/test.Fail/Check" }), Unhealthy, ReasonGRPCStatus, `grpc-status 14 (UNAVAILABLE: "backend down"), want 0`},
		{"grpc-status 14 accepted", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.Path, c.ExpectedGRPCStatus = "/test.Fail/Check", "0,12-14" }), Healthy, "", ""},
		{"HTTP 503", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.Path = "/test.HTTP/Unavailable" }), Unhealthy, ReasonStatus, "HTTP 503, want 200"},
		{"no grpc-status", with(grpcCheck(h2cTarget.addr), func(c *CheckConfig) { c.Path = "/test.No/Status" }), Unhealthy, ReasonGRPCStatus, "no grpc-status"},
		{"HTTP/1.1-only server", grpcCheck(h1Plain.addr()), Unhealthy, ReasonProtocol, "protocol: not HTTP/2"},
		{"unreachable port", grpcCheck(down), Unhealthy, ReasonRefused, "connection refused"},
		{"tls h2", overTLS(grpcCheck(tlsTarget.addr)), Healthy, "", ""},
		{"tls h2 not serving", overTLS(with(grpcCheck(tlsTarget.addr), func(c *CheckConfig) { c.GRPCService = "nope" })), Unhealthy, ReasonGRPCStatus, "grpc-status 5"},
		{"tls untrusted certificate", with(overTLS(grpcCheck(tlsTarget.addr)), func(c *CheckConfig) { c.InsecureSkipVerify = false }), Unhealthy, ReasonTLS, "certificate"},
		{"tls without ALPN h2", overTLS(grpcCheck(h1TLS.addr)), Unhealthy, ReasonProtocol, `did not negotiate HTTP/2 (ALPN h2): ` + h1TLS.addr + ` negotiated ALPN "http/1.1"`},
		{"h2c to a TLS server", grpcCheck(tlsTarget.addr), Unhealthy, ReasonOther, ""},
	}
	e, _ := newTestEngine(t)
	t.Run("group", func(t *testing.T) { // returns when the parallel cases are done
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				mustSet(t, e, tt.name, tt.cfg)
				st := waitStateReason(t, e, tt.name, tt.want, tt.reason)
				t.Logf("last error: %s", st.LastResult.Error)
				if tt.want == Unhealthy && !strings.Contains(st.LastResult.Error, tt.errText) {
					t.Errorf("error %q, want it to contain %q", st.LastResult.Error, tt.errText)
				}
				if tt.want == Healthy && (st.LastResult.StatusCode != 200 || st.Kind != tt.cfg.Kind) {
					t.Errorf("status %+v, want HTTP 200 of a %s check", st, tt.cfg.Kind)
				}
			})
		}
	})
	if got := h2cTarget.asked(); !containsAll(got, "", "known", "sick", "nope") {
		t.Errorf("services asked about: %q", got)
	}
}

func with(c CheckConfig, f func(*CheckConfig)) CheckConfig { f(&c); return c }

func containsAll(have []string, want ...string) bool {
	seen := map[string]bool{}
	for _, h := range have {
		seen[h] = true
	}
	for _, w := range want {
		if !seen[w] {
			return false
		}
	}
	return true
}

// TestGRPCTransitions toggles the health service between SERVING and
// NOT_SERVING while the check runs: the check follows after its
// thresholds, with NOT_SERVING as the reason, and subscribers see each
// change once.
func TestGRPCTransitions(t *testing.T) {
	e, reg := newTestEngine(t)
	rec := &recorder{}
	defer e.Subscribe(rec)()
	s := newGRPCTarget(t, "")
	cfg := grpcCheck(s.addr)
	cfg.HealthyThreshold, cfg.UnhealthyThreshold = 2, 2
	mustSet(t, e, "g", cfg)
	waitState(t, e, "g", Healthy)

	s.setStatus("", servingNotServing)
	st := waitStateReason(t, e, "g", Unhealthy, ReasonNotServing)
	if st.ConsecutiveFailures < 2 || !strings.HasSuffix(st.LastError, "/grpc.health.v1.Health/Check: NOT_SERVING") {
		t.Errorf("unhealthy status %+v", st)
	}
	s.setStatus("", serving)
	waitState(t, e, "g", Healthy)

	waitFor(t, "three events", func() bool { return len(rec.forCheck("g")) == 3 })
	want := []event{{"g", Unknown, Healthy}, {"g", Healthy, Unhealthy}, {"g", Unhealthy, Healthy}}
	for i, ev := range rec.forCheck("g") {
		if ev != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, ev, want[i])
		}
	}
	m := &metricsGetter{reg: reg}
	if v := m.value(t, "test_health_probe_failures_total", map[string]string{"kind": "grpc", "reason": "not_serving"}); v < 2 {
		t.Errorf("probe_failures_total{grpc,not_serving} = %v, want >= 2", v)
	}
}

// TestGRPCSharedTransport: checks of one target share one HTTP/2
// connection, and Close closes it.
func TestGRPCSharedTransport(t *testing.T) {
	e, err := NewEngine(Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.Start(context.Background())
	s := newGRPCTarget(t, "")
	for _, id := range []string{"a", "b", "c"} {
		cfg := grpcCheck(s.addr)
		cfg.Interval = config.Duration(time.Second) // lenient timeout under -race
		mustSet(t, e, id, cfg)
	}
	for _, id := range []string{"a", "b", "c"} {
		waitState(t, e, id, Healthy)
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("%d connections for three checks of one target, want 1", n)
	}
	e.Close()
	waitFor(t, "the connection to be closed", func() bool { return s.closed.Load() == s.accepted.Load() })
}

func TestGRPCTimeoutHeader(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "1m", 500 * time.Microsecond: "1m", 1500 * time.Millisecond: "1500m", time.Hour: "3600000m"} {
		if got := grpcTimeout(d); got != want {
			t.Errorf("grpcTimeout(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestEncodeHealthRequest(t *testing.T) {
	for _, svc := range []string{"", "known", strings.Repeat("s", 300)} {
		got, err := decodeHealthRequest(encodeHealthRequest(svc))
		if err != nil || got != svc {
			t.Errorf("round trip of %q: %q, %v", svc, got, err)
		}
	}
	if b := encodeHealthRequest("ab"); !bytes.Equal(b, []byte{0x0a, 2, 'a', 'b'}) {
		t.Errorf("encodeHealthRequest(ab) = %x", b)
	}
	if f := grpcFrame(nil); !bytes.Equal(f, []byte{0, 0, 0, 0, 0}) {
		t.Errorf("empty frame = %x", f)
	}
}

func TestDecodeHealthResponse(t *testing.T) {
	frame := func(b ...byte) []byte { return grpcFrame(b) }
	tests := []struct {
		name    string
		body    []byte
		want    int32
		wantErr string
	}{
		{"serving", frame(0x08, 0x01), serving, ""},
		{"not serving", frame(0x08, 0x02), servingNotServing, ""},
		{"empty message is UNKNOWN", frame(), servingUnknown, ""},
		{"last status wins", frame(0x08, 0x02, 0x08, 0x01), serving, ""},
		{"unknown fields skipped", frame(0x12, 0x02, 'h', 'i', 0x18, 0x96, 0x01, 0x21, 1, 2, 3, 4, 5, 6, 7, 8, 0x2d, 1, 2, 3, 4, 0x08, 0x01), serving, ""},
		{"negative enum", frame(0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), -1, ""},
		{"no message", nil, 0, "no response message"},
		{"short header", []byte{0, 0, 0}, 0, "truncated gRPC frame header"},
		{"compressed", []byte{1, 0, 0, 0, 0}, 0, "compressed"},
		{"bad flag", []byte{7, 0, 0, 0, 0}, 0, "bad gRPC frame flag 7"},
		{"truncated message", []byte{0, 0, 0, 0, 3, 0x08}, 0, "truncated gRPC message"},
		{"two messages", append(frame(0x08, 0x01), frame(0x08, 0x01)...), 0, "bytes after the response message"},
		{"truncated varint", frame(0x08, 0x80), 0, "bad varint"},
		{"status not a varint", frame(0x0a, 0x00), 0, "status has wire type 2"},
		{"field 0", frame(0x00, 0x01), 0, "field number 0"},
		{"group", frame(0x0b), 0, "unsupported wire type 3"},
		{"length past the end", frame(0x12, 0x05, 'x'), 0, "bad length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeHealthResponse(tt.body)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decodeHealthResponse(%x) = %d, %v; want error %q", tt.body, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("decodeHealthResponse(%x) = %d, %v; want %d", tt.body, got, err, tt.want)
			}
		})
	}
}

// FuzzDecodeHealthResponse checks that the response decoder never panics
// on any body, and that a status it decodes survives being encoded again
// as a protobuf library would.
func FuzzDecodeHealthResponse(f *testing.F) {
	for _, b := range [][]byte{
		grpcFrame([]byte{0x08, 0x01}),
		grpcFrame([]byte{0x08, 0x02}),
		grpcFrame(nil),
		grpcFrame([]byte{0x12, 0x02, 'h', 'i', 0x08, 0x03}),
		grpcFrame([]byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}),
		{1, 0, 0, 0, 0},
		{0, 0xff, 0xff, 0xff, 0xff, 0x08},
		{},
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		st, err := decodeHealthResponse(body)
		if err != nil {
			return
		}
		again, err := decodeHealthResponse(grpcFrame(encodeServingStatus(st)))
		if err != nil || again != st {
			t.Fatalf("status %d from %x does not round-trip: %d, %v", st, body, again, err)
		}
		if servingName(st) == "" {
			t.Fatalf("no name for status %d", st)
		}
	})
}
