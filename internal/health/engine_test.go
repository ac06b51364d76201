package health

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Unknown: "unknown", Healthy: "healthy", Unhealthy: "unhealthy", 7: "state(7)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", s, got, want)
		}
	}
}

// TestThresholdStateMachine feeds outcome sequences straight into the state
// machine: from Unknown it takes healthy_threshold successes to become
// Healthy and unhealthy_threshold failures to become Unhealthy.
func TestThresholdStateMachine(t *testing.T) {
	tests := []struct {
		name     string
		ht, ut   int
		inverted bool
		seq      string // s = success, f = failure
		want     []State
	}{
		{"unknown until healthy threshold", 3, 3, false, "sss", []State{Unknown, Unknown, Healthy}},
		{"unknown until unhealthy threshold", 3, 2, false, "ff", []State{Unknown, Unhealthy}},
		{"streak broken from unknown", 2, 2, false, "sfsf", []State{Unknown, Unknown, Unknown, Unknown}},
		{"flapping never leaves healthy", 1, 3, false, "sffsffsff", []State{Healthy, Healthy, Healthy, Healthy, Healthy, Healthy, Healthy, Healthy, Healthy}},
		{"healthy to unhealthy after threshold", 1, 3, false, "sfff", []State{Healthy, Healthy, Healthy, Unhealthy}},
		{"unhealthy back to healthy", 2, 1, false, "fssfss", []State{Unhealthy, Unhealthy, Healthy, Unhealthy, Unhealthy, Healthy}},
		{"thresholds of one follow every result", 1, 1, false, "sfsf", []State{Healthy, Unhealthy, Healthy, Unhealthy}},
		{"inverted", 1, 1, true, "sf", []State{Unhealthy, Healthy}},
		{"inverted unknown stays unknown", 2, 2, true, "s", []State{Unknown}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &check{cfg: CheckConfig{HealthyThreshold: tt.ht, UnhealthyThreshold: tt.ut, Inverted: tt.inverted}}
			for i, r := range tt.seq {
				c.record(r == 's')
				if c.reported != tt.want[i] {
					t.Fatalf("after %q: state %s, want %s", tt.seq[:i+1], c.reported, tt.want[i])
				}
			}
		})
	}
}

func TestHTTPStatusRanges(t *testing.T) {
	tests := []struct {
		name     string
		code     int
		expected string
		want     State
	}{
		{"default accepts 200", 200, "", Healthy},
		{"default accepts 302", 302, "", Healthy},
		{"default rejects 404", 404, "", Unhealthy},
		{"default rejects 500", 500, "", Unhealthy},
		{"list accepts 204", 204, "200,204", Healthy},
		{"list rejects 201", 201, "200,204", Unhealthy},
		{"range plus code accepts 404", 404, "200-299,404", Healthy},
		{"range rejects 300", 300, "200-299", Unhealthy},
	}
	e, _ := newTestEngine(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)
			s.status.Store(int64(tt.code))
			cfg := s.httpCheck()
			cfg.ExpectedStatus = tt.expected
			mustSet(t, e, tt.name, cfg)
			reason := Reason("")
			if tt.want == Unhealthy {
				reason = ReasonStatus
			}
			st := waitStateReason(t, e, tt.name, tt.want, reason)
			if st.LastResult.StatusCode != tt.code {
				t.Errorf("LastResult.StatusCode = %d, want %d", st.LastResult.StatusCode, tt.code)
			}
		})
	}
}

func TestHTTPBodyMatch(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		contains string
		want     State
	}{
		{"substring present", `{"status":"ok"}`, `"ok"`, Healthy},
		{"substring absent", `{"status":"degraded"}`, `"ok"`, Unhealthy},
		{"at the end of the first 5120 bytes", strings.Repeat("x", BodyLimit-2) + "OK", "OK", Healthy},
		{"beyond the first 5120 bytes", strings.Repeat("x", BodyLimit) + "OK", "OK", Unhealthy},
		{"straddling the limit", strings.Repeat("x", BodyLimit-1) + "OK", "OK", Unhealthy},
		{"large body without match", strings.Repeat("y", 200<<10), "OK", Unhealthy},
		{"not checked when unset", "anything", "", Healthy},
	}
	e, _ := newTestEngine(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)
			s.setBody(tt.body)
			cfg := s.httpCheck()
			cfg.BodyContains = tt.contains
			mustSet(t, e, tt.name, cfg)
			reason := Reason("")
			if tt.want == Unhealthy {
				reason = ReasonBody
			}
			waitStateReason(t, e, tt.name, tt.want, reason)
		})
	}
}

func TestSlowEndpointVersusTimeout(t *testing.T) {
	tests := []struct {
		name    string
		delay   time.Duration
		timeout time.Duration
		want    State
	}{
		{"slower than timeout", 2 * time.Second, 100 * time.Millisecond, Unhealthy},
		{"faster than timeout", 20 * time.Millisecond, 1 * time.Second, Healthy},
	}
	e, _ := newTestEngine(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)
			s.delay.Store(int64(tt.delay))
			cfg := s.httpCheck()
			cfg.Interval = config.Duration(2 * time.Second)
			cfg.Timeout = config.Duration(tt.timeout)
			mustSet(t, e, tt.name, cfg)
			reason := Reason("")
			if tt.want == Unhealthy {
				reason = ReasonTimeout
			}
			waitStateReason(t, e, tt.name, tt.want, reason)
		})
	}
}

// TestFlappingEndpoint runs an endpoint that alternates between 200 and 503
// against thresholds of 2: a healthy check never sees two failures in a row
// and stays healthy; once the endpoint fails for good the check turns
// unhealthy, and only after the threshold.
func TestFlappingEndpoint(t *testing.T) {
	e, _ := newTestEngine(t)
	rec := &recorder{}
	defer e.Subscribe(rec)()
	s := newTestServer(t)
	cfg := s.httpCheck()
	cfg.HealthyThreshold, cfg.UnhealthyThreshold = 2, 2
	mustSet(t, e, "flap", cfg)

	st := waitState(t, e, "flap", Healthy)
	if st.ConsecutiveSuccesses < 2 {
		t.Errorf("healthy after %d successes, want >= 2", st.ConsecutiveSuccesses)
	}

	s.mode.Store(modeAlternate)
	start := s.hits.Load()
	waitFor(t, "8 alternating probes", func() bool { return s.hits.Load() >= start+8 })
	if got, _ := e.State("flap"); got != Healthy {
		t.Fatalf("alternating endpoint made the check %s, want it to stay healthy", got)
	}

	s.mode.Store(modeFail)
	st = waitStateReason(t, e, "flap", Unhealthy, ReasonStatus)
	if st.ConsecutiveFailures < 2 {
		t.Errorf("unhealthy with %d consecutive failures, want >= 2", st.ConsecutiveFailures)
	}
	if st.LastError == "" || st.LastChange.IsZero() {
		t.Errorf("status lacks LastError or LastChange: %+v", st)
	}

	s.mode.Store(modeOK)
	waitState(t, e, "flap", Healthy)
	waitFor(t, "three events", func() bool { return len(rec.forCheck("flap")) == 3 })
	want := []event{{"flap", Unknown, Healthy}, {"flap", Healthy, Unhealthy}, {"flap", Unhealthy, Healthy}}
	for i, ev := range rec.forCheck("flap") {
		if ev != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, ev, want[i])
		}
	}
}

func TestTCPCheck(t *testing.T) {
	up, accepted := tcpListener(t)
	tests := []struct {
		name   string
		addr   string
		want   State
		reason Reason
	}{
		{"listening", up, Healthy, ""},
		{"refused", closedPort(t), Unhealthy, ReasonRefused},
		{"unresolvable name", "backend.example.test:80", Unhealthy, ReasonDNS},
	}
	e, _ := newTestEngine(t)
	// Resolve names without touching the network: every lookup fails.
	e.dialer.Resolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS server in tests")
	}}
	t.Run("group", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				mustSet(t, e, tt.name, CheckConfig{Kind: KindTCP, Address: tt.addr, Interval: testInterval, HealthyThreshold: 1, UnhealthyThreshold: 1})
				waitStateReason(t, e, tt.name, tt.want, tt.reason)
			})
		}
	})
	if accepted.Load() == 0 {
		t.Error("listener accepted no connection")
	}
}

func TestHTTPSCheck(t *testing.T) {
	var sni atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("host=" + r.Host))
	}))
	srv.TLS = &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni.Store(h.ServerName)
		return nil, nil
	}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // rejected handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "https://")

	tests := []struct {
		name    string
		cfg     CheckConfig
		want    State
		reason  Reason
		wantSNI string
	}{
		{"untrusted certificate", CheckConfig{}, Unhealthy, ReasonTLS, ""},
		{"insecure_skip_verify", CheckConfig{InsecureSkipVerify: true}, Healthy, "", ""},
		{"host sets header and SNI", CheckConfig{InsecureSkipVerify: true, Host: "www.example.test", BodyContains: "host=www.example.test"}, Healthy, "", "www.example.test"},
		{"server_name overrides SNI", CheckConfig{InsecureSkipVerify: true, Host: "www.example.test", ServerName: "sni.example.test"}, Healthy, "", "sni.example.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newTestEngine(t)
			cfg := tt.cfg
			// TLS handshakes are slow under the race detector: allow 1s.
			cfg.Kind, cfg.Address, cfg.Interval, cfg.HealthyThreshold, cfg.UnhealthyThreshold = KindHTTPS, addr, config.Duration(time.Second), 1, 1
			mustSet(t, e, "c", cfg)
			waitStateReason(t, e, "c", tt.want, tt.reason)
			if tt.wantSNI != "" {
				if got, _ := sni.Load().(string); got != tt.wantSNI {
					t.Errorf("SNI %q, want %q", got, tt.wantSNI)
				}
			}
		})
	}
}

func TestHostHeader(t *testing.T) {
	e, _ := newTestEngine(t)
	s := newTestServer(t)
	cfg := s.httpCheck()
	cfg.Host = "api.example.test"
	mustSet(t, e, "h", cfg)
	waitState(t, e, "h", Healthy)
	if got := s.lastHost(); got != "api.example.test" {
		t.Errorf("Host header %q, want api.example.test", got)
	}
}

func TestCalculated(t *testing.T) {
	up, _ := tcpListener(t)
	down := closedPort(t)
	probe := func(addr string) CheckConfig {
		return CheckConfig{Kind: KindTCP, Address: addr, Interval: testInterval, HealthyThreshold: 1, UnhealthyThreshold: 1}
	}
	calc := func(min int, children ...string) CheckConfig {
		return CheckConfig{Kind: KindCalculated, Children: children, MinHealthy: min, Interval: testInterval}
	}
	inverted := func(c CheckConfig) CheckConfig { c.Inverted = true; return c }
	disabled := func(c CheckConfig) CheckConfig { c.Disabled = true; return c }

	tests := []struct {
		name string
		calc CheckConfig
		want State
	}{
		{"2 of 3 with 2 healthy", calc(2, "up1", "up2", "down1"), Healthy},
		{"3 of 3 with 2 healthy", calc(3, "up1", "up2", "down1"), Unhealthy},
		{"default min is all children", calc(0, "up1", "down1"), Unhealthy},
		{"1 of 2", calc(1, "up1", "down1"), Healthy},
		{"inverted 2 of 3", inverted(calc(2, "up1", "up2", "down1")), Unhealthy},
		{"inverted 3 of 3", inverted(calc(3, "up1", "up2", "down1")), Healthy},
		{"disabled is always healthy", disabled(calc(2, "down1", "down2")), Healthy},
		{"disabled wins over inverted", inverted(disabled(calc(1, "up1"))), Healthy},
		{"disabled child counts healthy", calc(2, "up1", "down-disabled"), Healthy},
		{"inverted child counts inverted", calc(1, "down-inverted"), Healthy},
		{"nested calculated", calc(1, "calc-inner"), Healthy},
		{"missing children keep it unknown", calc(1, "nope1", "nope2"), Unknown},
		{"missing child cannot save it", calc(2, "down1", "down2", "nope1"), Unhealthy},
	}
	e, _ := newTestEngine(t)
	mustSet(t, e, "up1", probe(up))
	mustSet(t, e, "up2", probe(up))
	mustSet(t, e, "down1", probe(down))
	mustSet(t, e, "down2", probe(down))
	mustSet(t, e, "down-disabled", disabled(probe(down)))
	mustSet(t, e, "down-inverted", inverted(probe(down)))
	mustSet(t, e, "calc-inner", calc(2, "up1", "up2"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustSet(t, e, tt.name, tt.calc)
			waitState(t, e, tt.name, tt.want)
			// Give the children time to settle, then check it stays.
			waitState(t, e, "down1", Unhealthy)
			waitState(t, e, "up1", Healthy)
			time.Sleep(3 * time.Duration(testInterval))
			if got, _ := e.State(tt.name); got != tt.want {
				t.Errorf("state %s after settling, want %s", got, tt.want)
			}
		})
	}
}

// TestCalculatedFollowsChildren checks that a calculated check reacts to its
// children changing, being added late and being removed.
func TestCalculatedFollowsChildren(t *testing.T) {
	e, _ := newTestEngine(t)
	rec := &recorder{}
	defer e.Subscribe(rec)()
	s := newTestServer(t)
	// A long interval: only child changes can move the calculated check
	// quickly.
	mustSet(t, e, "both", CheckConfig{Kind: KindCalculated, Children: []string{"a", "b"}, Interval: config.Duration(time.Hour)})
	if st, _ := e.State("both"); st != Unknown {
		t.Fatalf("with no children yet: %s, want unknown", st)
	}
	mustSet(t, e, "a", s.httpCheck())
	mustSet(t, e, "b", s.httpCheck())
	waitState(t, e, "both", Healthy)

	s.mode.Store(modeFail)
	waitState(t, e, "both", Unhealthy)
	s.mode.Store(modeOK)
	waitState(t, e, "both", Healthy)

	e.Remove("b")
	waitState(t, e, "both", Unknown)
	waitFor(t, "events of both", func() bool { return len(rec.forCheck("both")) == 4 })
	want := []event{{"both", Unknown, Healthy}, {"both", Healthy, Unhealthy}, {"both", Unhealthy, Healthy}, {"both", Healthy, Unknown}}
	for i, ev := range rec.forCheck("both") {
		if ev != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, ev, want[i])
		}
	}
}

func TestCalculatedCycles(t *testing.T) {
	e, _ := newTestEngine(t)
	calc := func(children ...string) CheckConfig {
		return CheckConfig{Kind: KindCalculated, Children: children, MinHealthy: 1}
	}
	mustSet(t, e, "a", calc("b"))
	mustSet(t, e, "b", calc("c"))
	tests := []struct {
		id   string
		cfg  CheckConfig
		want string
	}{
		{"a", calc("a"), "cycle: a -> a"},
		{"c", calc("a"), "cycle: c -> a -> b -> c"},
		{"c", calc("x", "b"), "cycle: c -> b -> c"},
	}
	for _, tt := range tests {
		err := e.Set(tt.id, tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Set(%q, %v) = %v, want error containing %q", tt.id, tt.cfg.Children, err, tt.want)
		}
	}
	mustSet(t, e, "c", calc("x")) // no cycle
}

// TestRemoveStopsProbing counts requests on the server: after Remove
// returns, and any request already in flight has landed, none arrive.
func TestRemoveStopsProbing(t *testing.T) {
	e, reg := newTestEngine(t)
	s := newTestServer(t)
	keep := newTestServer(t)
	mustSet(t, e, "gone", s.httpCheck())
	mustSet(t, e, "kept", keep.httpCheck())
	waitFor(t, "a few probes", func() bool { return s.hits.Load() >= 3 })
	if n := seriesCount(t, reg, "test_health_check_state"); n != 2 {
		t.Fatalf("%d state series, want 2", n)
	}

	e.Remove("gone")
	if _, ok := e.State("gone"); ok {
		t.Error("State still knows the removed check")
	}
	time.Sleep(100 * time.Millisecond) // a request already sent may still land
	before := s.hits.Load()
	keepBefore := keep.hits.Load()
	waitFor(t, "the other check to be probed 5 more times", func() bool { return keep.hits.Load() >= keepBefore+5 })
	if got := s.hits.Load(); got != before {
		t.Errorf("removed check was probed %d more times", got-before)
	}
	if n := seriesCount(t, reg, "test_health_check_state"); n != 1 {
		t.Errorf("%d state series after Remove, want 1", n)
	}
	e.Remove("never-existed") // no-op
}

// TestSubscriberOrdering flaps several checks at every probe and checks that
// each check's events form one unbroken chain starting from Unknown, and that
// subscribers see the same sequence.
func TestSubscriberOrdering(t *testing.T) {
	e, _ := newTestEngine(t)
	r1, r2 := &recorder{}, &recorder{}
	defer e.Subscribe(r1)()
	cancel2 := e.Subscribe(r2)
	ids := []string{"f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"}
	for _, id := range ids {
		// One server per check, so that each check sees 200 and 503 in turn.
		s := newTestServer(t)
		s.mode.Store(modeAlternate)
		mustSet(t, e, id, s.httpCheck())
	}
	waitFor(t, "10 events per check", func() bool {
		for _, id := range ids {
			if len(r1.forCheck(id)) < 10 {
				return false
			}
		}
		return true
	})
	cancel2()
	cancel2() // idempotent
	n2 := len(r2.get())
	for _, id := range ids {
		evs := r1.forCheck(id)
		if evs[0].from != Unknown {
			t.Errorf("%s: first event %+v does not start from unknown", id, evs[0])
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].from != evs[i-1].to || evs[i].from == evs[i].to {
				t.Fatalf("%s: event %d %+v does not follow %+v", id, i, evs[i], evs[i-1])
			}
		}
	}
	all1, all2 := r1.get(), r2.get()
	for i := range all2 {
		if all1[i] != all2[i] {
			t.Fatalf("subscribers disagree at event %d: %+v vs %+v", i, all1[i], all2[i])
		}
	}
	time.Sleep(3 * time.Duration(testInterval))
	if len(r2.get()) > n2+1 {
		t.Errorf("cancelled subscriber got %d more events", len(r2.get())-n2)
	}
}

// TestSubscriberMayCallEngine checks that subscribers run without engine
// locks held: a subscriber calling back into the engine does not deadlock.
func TestSubscriberMayCallEngine(t *testing.T) {
	e, _ := newTestEngine(t)
	up, _ := tcpListener(t)
	got := make(chan State, 10)
	defer e.Subscribe(SubscriberFunc(func(id string, from, to State) {
		s, _ := e.State(id)
		_ = e.Set("added-by-subscriber", CheckConfig{Kind: KindTCP, Address: up})
		_ = e.List()
		got <- s
	}))()
	mustSet(t, e, "x", CheckConfig{Kind: KindTCP, Address: up, Interval: testInterval, HealthyThreshold: 1})
	select {
	case <-got:
	case <-time.After(waitLimit):
		t.Fatal("subscriber not called")
	}
}

func TestSetKeepsStateWhenProbeUnchanged(t *testing.T) {
	e, _ := newTestEngine(t)
	rec := &recorder{}
	defer e.Subscribe(rec)()
	s := newTestServer(t)
	other := newTestServer(t)
	cfg := s.httpCheck()
	mustSet(t, e, "c", cfg)
	waitState(t, e, "c", Healthy)

	// Interval, timeout and thresholds may change without a reset.
	cfg.Interval = config.Duration(200 * time.Millisecond)
	cfg.Timeout = config.Duration(150 * time.Millisecond)
	cfg.HealthyThreshold, cfg.UnhealthyThreshold = 5, 5
	mustSet(t, e, "c", cfg)
	if st, _ := e.State("c"); st != Healthy {
		t.Fatalf("after changing only timing: %s, want healthy", st)
	}

	// Inverted flips the reported state at once, still without a reset.
	cfg.Inverted = true
	mustSet(t, e, "c", cfg)
	if st, _ := e.State("c"); st != Unhealthy {
		t.Fatalf("after inverting: %s, want unhealthy", st)
	}
	cfg.Inverted = false
	mustSet(t, e, "c", cfg)

	// A new address starts over.
	cfg.Address = other.addr()
	cfg.HealthyThreshold = 1
	mustSet(t, e, "c", cfg)
	if st, _ := e.State("c"); st != Unknown {
		t.Fatalf("after changing the address: %s, want unknown", st)
	}
	waitState(t, e, "c", Healthy)
	waitFor(t, "events", func() bool { return len(rec.forCheck("c")) == 5 })
	want := []event{{"c", Unknown, Healthy}, {"c", Healthy, Unhealthy}, {"c", Unhealthy, Healthy}, {"c", Healthy, Unknown}, {"c", Unknown, Healthy}}
	for i, ev := range rec.forCheck("c") {
		if ev != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, ev, want[i])
		}
	}
}

func TestDisabledProbeIsNotProbed(t *testing.T) {
	e, _ := newTestEngine(t)
	s := newTestServer(t)
	s.mode.Store(modeFail)
	cfg := s.httpCheck()
	cfg.Disabled = true
	mustSet(t, e, "d", cfg)
	if st, _ := e.State("d"); st != Healthy {
		t.Fatalf("disabled check is %s, want healthy", st)
	}
	time.Sleep(5 * time.Duration(testInterval))
	if n := s.hits.Load(); n != 0 {
		t.Errorf("disabled check was probed %d times", n)
	}
}

func TestSetBeforeStartAndStopByContext(t *testing.T) {
	e, err := NewEngine(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rec := &recorder{}
	defer e.Subscribe(rec)()
	s := newTestServer(t)
	mustSet(t, e, "early", s.httpCheck())
	time.Sleep(3 * time.Duration(testInterval))
	if s.hits.Load() != 0 {
		t.Fatal("probed before Start")
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.Start(ctx)
	e.Start(ctx) // second Start does nothing
	waitState(t, e, "early", Healthy)
	waitFor(t, "the event", func() bool { return len(rec.get()) == 1 })

	cancel()
	time.Sleep(200 * time.Millisecond)
	before := s.hits.Load()
	time.Sleep(5 * time.Duration(testInterval))
	if got := s.hits.Load(); got != before {
		t.Errorf("probed %d times after the context ended", got-before)
	}
}

func TestClose(t *testing.T) {
	e, err := NewEngine(Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t)
	s.delay.Store(int64(time.Hour)) // a probe will be in flight at Close
	cfg := s.httpCheck()
	cfg.Interval = config.Duration(time.Second)
	mustSet(t, e, "c", cfg)
	e.Start(context.Background())
	waitFor(t, "a request", func() bool { return s.hits.Load() > 0 })
	done := make(chan struct{})
	go func() { e.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("Close did not return with a probe in flight")
	}
	e.Close()
	if err := e.Set("x", cfg); err == nil {
		t.Error("Set after Close succeeded")
	}
}

func TestMetrics(t *testing.T) {
	e, reg := newTestEngine(t)
	s := newTestServer(t)
	bad := newTestServer(t)
	bad.mode.Store(modeFail)
	mustSet(t, e, "good", s.httpCheck())
	mustSet(t, e, "bad", bad.httpCheck())
	mustSet(t, e, "refused", CheckConfig{Kind: KindTCP, Address: closedPort(t), Interval: testInterval, UnhealthyThreshold: 1})
	mustSet(t, e, "pending", CheckConfig{Kind: KindCalculated, Children: []string{"nothing"}})
	waitState(t, e, "good", Healthy)
	waitState(t, e, "bad", Unhealthy)
	waitState(t, e, "refused", Unhealthy)

	gauge := func(id string) float64 {
		m := &metricsGetter{reg: reg}
		return m.value(t, "test_health_check_state", map[string]string{"check": id})
	}
	for id, want := range map[string]float64{"good": 1, "bad": 2, "refused": 2, "pending": 0} {
		if got := gauge(id); got != want {
			t.Errorf("check_state{check=%q} = %v, want %v", id, got, want)
		}
	}
	m := &metricsGetter{reg: reg}
	if v := m.value(t, "test_health_probe_failures_total", map[string]string{"kind": "http", "reason": "status"}); v < 1 {
		t.Errorf("probe_failures_total{http,status} = %v, want >= 1", v)
	}
	if v := m.value(t, "test_health_probe_failures_total", map[string]string{"kind": "tcp", "reason": "refused"}); v < 1 {
		t.Errorf("probe_failures_total{tcp,refused} = %v, want >= 1", v)
	}
	probing := 0
	for _, k := range Kinds() {
		if k.probes() {
			probing++
		}
	}
	if n := seriesCount(t, reg, "test_health_probe_failures_total"); probing != 5 || n != probing*len(Reasons()) {
		t.Errorf("%d failure series, want every probing kind (%d of 5) x reason (%d)", n, probing, probing*len(Reasons()))
	}
	if v := m.value(t, "test_health_probe_duration_seconds", map[string]string{"kind": "http"}); v < 2 {
		t.Errorf("probe_duration_seconds{http} count = %v, want >= 2", v)
	}

	// Closing unregisters, so a new engine can register again.
	e.Close()
	e2, err := NewEngine(Options{Registerer: reg, Namespace: "test"})
	if err != nil {
		t.Fatalf("NewEngine after Close on the same registry: %v", err)
	}
	e2.Close()
}

func TestMetricsConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := NewEngine(Options{Registerer: reg, Namespace: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := NewEngine(Options{Registerer: reg, Namespace: "x"}); err == nil {
		t.Error("second engine with the same namespace registered")
	}
	e3, err := NewEngine(Options{Registerer: reg, Namespace: "y"})
	if err != nil {
		t.Errorf("engine with another namespace: %v", err)
	} else {
		e3.Close()
	}
	if _, err := NewEngine(Options{MaxConcurrent: -1}); err == nil {
		t.Error("negative MaxConcurrent accepted")
	}
}

func TestListAndStatus(t *testing.T) {
	e, _ := newTestEngine(t)
	up, _ := tcpListener(t)
	for _, id := range []string{"b", "a", "c"} {
		mustSet(t, e, id, CheckConfig{Kind: KindTCP, Address: up, Interval: testInterval, HealthyThreshold: 1})
	}
	waitState(t, e, "a", Healthy)
	l := e.List()
	if len(l) != 3 || l[0].ID != "a" || l[1].ID != "b" || l[2].ID != "c" {
		t.Fatalf("List() = %+v, want a, b, c", l)
	}
	st, ok := e.Status("a")
	if !ok || st.Kind != KindTCP || !st.LastResult.OK || st.LastResult.At.IsZero() || st.ConsecutiveSuccesses < 1 {
		t.Errorf("Status(a) = %+v, %v", st, ok)
	}
	if _, ok := e.Status("zzz"); ok {
		t.Error("Status of unknown ID reports ok")
	}
	if s, ok := e.State("zzz"); ok || s != Unknown {
		t.Error("State of unknown ID reports ok")
	}
}

// TestCustomTransport checks that Options.Transport carries HTTP probes.
func TestCustomTransport(t *testing.T) {
	var used atomic.Int64
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		used.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})
	e, err := NewEngine(Options{Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.Start(context.Background())
	s := newTestServer(t)
	mustSet(t, e, "c", s.httpCheck())
	waitState(t, e, "c", Healthy)
	if used.Load() == 0 {
		t.Error("custom transport not used")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
