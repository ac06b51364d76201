package targetgroup

import (
	"sync"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/config"
	"github.com/edgestack/edgestack/internal/health"
)

// fakeEngine records checks; the test sets states through the manager's
// HealthChanged, as the real engine's subscription would.
type fakeEngine struct {
	mu     sync.Mutex
	checks map[string]health.CheckConfig
}

func (f *fakeEngine) Set(id string, c health.CheckConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks[id] = c
	return nil
}
func (f *fakeEngine) Remove(id string)                  { f.mu.Lock(); delete(f.checks, id); f.mu.Unlock() }
func (f *fakeEngine) State(string) (health.State, bool) { return health.Unknown, false }
func (f *fakeEngine) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.checks[id]
	return ok
}

func group(alg Algorithm, addrs ...string) Config {
	c := Config{Name: "web", Algorithm: alg, DeregistrationDelay: config.Duration(time.Second)}
	for _, a := range addrs {
		c.Targets = append(c.Targets, TargetConfig{Address: a})
	}
	return c
}

func setAll(m *Manager, g string, st health.State, addrs ...string) {
	for _, a := range addrs {
		m.HealthChanged(checkID(g, a), health.Unknown, st)
	}
}

func TestPick(t *testing.T) {
	a, b, c := "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"
	type tc struct {
		name    string
		alg     Algorithm
		healthy []string
		want    map[string]bool // targets that may be picked
	}
	for _, x := range []tc{
		{name: "rr all healthy", alg: RoundRobin, healthy: []string{a, b, c}, want: map[string]bool{a: true, b: true, c: true}},
		{name: "rr skips unhealthy", alg: RoundRobin, healthy: []string{a, c}, want: map[string]bool{a: true, c: true}},
		{name: "lor", alg: LeastOutstandingRequests, healthy: []string{b}, want: map[string]bool{b: true}},
		{name: "random", alg: WeightedRandom, healthy: []string{a, b}, want: map[string]bool{a: true, b: true}},
		{name: "fail-open", alg: RoundRobin, healthy: nil, want: map[string]bool{a: true, b: true, c: true}},
	} {
		t.Run(x.name, func(t *testing.T) {
			m := NewManager(Options{Health: &fakeEngine{checks: map[string]health.CheckConfig{}}})
			defer m.Close()
			if err := m.Apply([]Config{group(x.alg, a, b, c)}, map[string]bool{"web": true}); err != nil {
				t.Fatal(err)
			}
			setAll(m, "web", health.Unhealthy, a, b, c)
			setAll(m, "web", health.Healthy, x.healthy...)
			g := m.Group("web")
			got := map[string]bool{}
			for range 60 {
				got[g.Pick(nil).Addr] = true
			}
			for k := range got {
				if !x.want[k] {
					t.Errorf("picked %s", k)
				}
			}
			if len(got) != len(x.want) {
				t.Errorf("picked %v, want all of %v", got, x.want)
			}
		})
	}
}

func TestLeastOutstanding(t *testing.T) {
	m := NewManager(Options{})
	defer m.Close()
	_ = m.Apply([]Config{group(LeastOutstandingRequests, "10.0.0.1:80", "10.0.0.2:80")}, map[string]bool{"web": true})
	g := m.Group("web")
	busy := g.Lookup("10.0.0.1:80")
	for range 5 {
		busy.Acquire()
	}
	for range 10 {
		if p := g.Pick(nil); p == busy {
			t.Fatal("picked the busy target")
		}
	}
}

func TestExcludeAndPassive(t *testing.T) {
	m := NewManager(Options{})
	defer m.Close()
	c := group(RoundRobin, "10.0.0.1:80", "10.0.0.2:80")
	c.PassiveHealth = PassiveHealth{ConsecutiveFailures: 2, EjectFor: config.Duration(time.Hour)}
	_ = m.Apply([]Config{c}, map[string]bool{"web": true})
	g := m.Group("web")
	bad := g.Lookup("10.0.0.1:80")
	if p := g.Pick([]*Target{bad}); p == bad || p == nil {
		t.Fatalf("exclude: got %v", p)
	}
	if p := g.Pick(g.Targets()); p != nil {
		t.Fatalf("all excluded: got %v", p.Addr)
	}
	bad.Report(false)
	bad.Report(false)
	if bad.State() != Unhealthy {
		t.Fatalf("after 2 failures: %s", bad.State())
	}
	for range 10 {
		if g.Pick(nil) == bad {
			t.Fatal("picked an ejected target")
		}
	}
}

func TestRegisterDrain(t *testing.T) {
	eng := &fakeEngine{checks: map[string]health.CheckConfig{}}
	m := NewManager(Options{Health: eng})
	defer m.Close()
	_ = m.Apply([]Config{group(RoundRobin, "10.0.0.1:80")}, map[string]bool{"web": true})
	if _, err := m.Register("nope", TargetConfig{Address: "10.0.0.9:80"}); err == nil {
		t.Fatal("register in unknown group: no error")
	}
	tg, err := m.Register("web", TargetConfig{Address: "10.0.0.2:80"})
	if err != nil {
		t.Fatal(err)
	}
	if tg.State() != Initial {
		t.Fatalf("new target: %s, want initial", tg.State())
	}
	m.HealthChanged(checkID("web", "10.0.0.2:80"), health.Unknown, health.Healthy)
	if tg.State() != Healthy {
		t.Fatalf("after check: %s", tg.State())
	}
	release := tg.Acquire()
	done, err := m.Deregister("web", "10.0.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	if tg.State() != Draining {
		t.Fatalf("deregistered: %s", tg.State())
	}
	for range 20 {
		if m.Group("web").Pick(nil) == tg {
			t.Fatal("picked a draining target")
		}
	}
	select {
	case <-done:
		t.Fatal("dropped with a request in flight")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("not dropped after the last request")
	}
	if eng.has(checkID("web", "10.0.0.2:80")) {
		t.Error("health check of a dropped target still set")
	}
	// A reload keeps API targets and drains removed config ones.
	tg3, _ := m.Register("web", TargetConfig{Address: "10.0.0.3:80"})
	_ = m.Apply([]Config{group(RoundRobin)}, map[string]bool{"web": true})
	if m.Group("web").Lookup("10.0.0.3:80") != tg3 || m.Group("web").Lookup("10.0.0.1:80") != nil {
		t.Errorf("after reload: %+v", m.Group("web").Info())
	}
}

func TestSlowStartAndWeights(t *testing.T) {
	type tc struct {
		name      string
		alg       Algorithm
		slow      time.Duration
		weights   [2]int
		newSecond bool // the second target just became healthy
		minShare  float64
		maxShare  float64 // share of the second target
	}
	for _, x := range []tc{
		{name: "equal weights", alg: RoundRobin, weights: [2]int{1, 1}, minShare: 0.45, maxShare: 0.55},
		{name: "weighted random 1:3", alg: WeightedRandom, weights: [2]int{1, 3}, minShare: 0.65, maxShare: 0.85},
		{name: "round robin with weights 1:3", alg: RoundRobin, weights: [2]int{1, 3}, minShare: 0.65, maxShare: 0.85},
		{name: "slow start ramps a new target", alg: RoundRobin, slow: time.Hour, weights: [2]int{1, 1}, newSecond: true, minShare: 0, maxShare: 0.15},
		{name: "slow start, least outstanding", alg: LeastOutstandingRequests, slow: time.Hour, weights: [2]int{1, 1}, newSecond: true, minShare: 0, maxShare: 0.15},
	} {
		t.Run(x.name, func(t *testing.T) {
			m := NewManager(Options{})
			defer m.Close()
			c := Config{Name: "g", Algorithm: x.alg, SlowStart: config.Duration(x.slow), Targets: []TargetConfig{
				{Address: "10.0.0.1:80", Weight: x.weights[0]}, {Address: "10.0.0.2:80", Weight: x.weights[1]}}}
			_ = m.Apply([]Config{c}, map[string]bool{"g": true})
			g := m.Group("g")
			first, second := g.Lookup("10.0.0.1:80"), g.Lookup("10.0.0.2:80")
			first.healthySince.Store(time.Now().Add(-2 * time.Hour).UnixNano())
			if x.newSecond {
				second.healthySince.Store(time.Now().UnixNano())
			} else {
				second.healthySince.Store(time.Now().Add(-2 * time.Hour).UnixNano())
			}
			n := 0
			const picks = 4000
			for range picks {
				if g.Pick(nil) == second {
					n++
				}
			}
			share := float64(n) / picks
			if share < x.minShare || share > x.maxShare {
				t.Errorf("second target got %.2f of picks, want %.2f..%.2f", share, x.minShare, x.maxShare)
			}
		})
	}
}
