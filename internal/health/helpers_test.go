package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// Test timing: probes every 100ms, and waits up to 10s for anything to
// happen, so a loaded machine slows the tests down instead of failing them.
const (
	testInterval = config.Duration(100 * time.Millisecond)
	waitLimit    = 10 * time.Second
)

// newTestEngine returns a started engine with its own registry; it is closed
// when the test ends.
func newTestEngine(t *testing.T) (*Engine, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e, err := NewEngine(Options{Registerer: reg, Namespace: "test"})
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.Start(ctx)
	t.Cleanup(func() {
		cancel()
		e.Close()
	})
	return e, reg
}

// waitFor polls cond until it is true or waitLimit passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState waits until check id is in state want.
func waitState(t *testing.T, e *Engine, id string, want State) Status {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to be %s", id, want), func() bool {
		s, ok := e.State(id)
		return ok && s == want
	})
	st, _ := e.Status(id)
	return st
}

// waitStateReason waits until check id is in state want and its last result
// failed for reason (or succeeded, for ""). A loaded machine may time a probe
// out now and then, so the reason is polled for rather than read once.
func waitStateReason(t *testing.T, e *Engine, id string, want State, reason Reason) Status {
	t.Helper()
	var last Status
	deadline := time.Now().Add(waitLimit)
	for {
		st, ok := e.Status(id)
		if ok && st.State == want && st.LastResult.Reason == reason && !st.LastResult.At.IsZero() {
			return st
		}
		last = st
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s to be %s with reason %q; last status %+v", waitLimit, id, want, reason, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mustSet calls e.Set and fails the test on error.
func mustSet(t *testing.T, e *Engine, id string, cfg CheckConfig) {
	t.Helper()
	if err := e.Set(id, cfg); err != nil {
		t.Fatalf("Set(%q): %v", id, err)
	}
}

// Server modes for testServer.
const (
	modeOK        = iota // answer status (default 200) with body
	modeFail             // answer 503
	modeAlternate        // odd requests 200, even requests 503
)

// testServer is an HTTP server whose behaviour tests change on the fly and
// which counts the requests it receives.
type testServer struct {
	*httptest.Server
	hits   atomic.Int64
	mode   atomic.Int64
	status atomic.Int64 // for modeOK; 0 means 200
	delay  atomic.Int64 // nanoseconds to sleep before answering
	mu     sync.Mutex
	body   string
	hosts  []string // Host headers seen
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	s := &testServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *testServer) serve(w http.ResponseWriter, r *http.Request) {
	n := s.hits.Add(1)
	s.mu.Lock()
	body := s.body
	s.hosts = append(s.hosts, r.Host)
	s.mu.Unlock()
	if d := time.Duration(s.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	code := http.StatusOK
	switch s.mode.Load() {
	case modeOK:
		if c := s.status.Load(); c != 0 {
			code = int(c)
		}
	case modeFail:
		code = http.StatusServiceUnavailable
	case modeAlternate:
		if n%2 == 0 {
			code = http.StatusServiceUnavailable
		}
	}
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func (s *testServer) setBody(b string) {
	s.mu.Lock()
	s.body = b
	s.mu.Unlock()
}

func (s *testServer) lastHost() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.hosts) == 0 {
		return ""
	}
	return s.hosts[len(s.hosts)-1]
}

// addr is the server's host:port.
func (s *testServer) addr() string { return strings.TrimPrefix(s.URL, "http://") }

// httpCheck is a fast http check of s with thresholds of 1.
func (s *testServer) httpCheck() CheckConfig {
	return CheckConfig{Kind: KindHTTP, Address: s.addr(), Interval: testInterval, HealthyThreshold: 1, UnhealthyThreshold: 1}
}

// tcpListener accepts and closes connections until the test ends, counting
// them.
func tcpListener(t *testing.T) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	accepted = new(atomic.Int64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String(), accepted
}

// closedPort returns a loopback address nothing listens on, below the
// ephemeral range, where no other test's server will be given it.
func closedPort(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", apptest.FreePort(t))
}

// recorder is a Subscriber that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) HealthChanged(id string, from, to State) {
	r.mu.Lock()
	r.events = append(r.events, event{id: id, from: from, to: to})
	r.mu.Unlock()
}

func (r *recorder) get() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// forCheck returns the events of one check.
func (r *recorder) forCheck(id string) []event {
	var out []event
	for _, ev := range r.get() {
		if ev.id == id {
			out = append(out, ev)
		}
	}
	return out
}
