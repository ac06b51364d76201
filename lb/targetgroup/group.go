package targetgroup

import (
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/internal/health"
)

// State is a target's state as the API and metrics show it (ALB's names).
type State uint8

// Target states.
const (
	// Initial: registered, the health check has not decided yet.
	Initial State = iota
	// Healthy: gets traffic.
	Healthy
	// Unhealthy: failed its health check (or passive health ejected it);
	// gets traffic only when no target of the group is healthy.
	Unhealthy
	// Draining: deregistered; finishes in-flight work, gets no new work.
	Draining
	// Unused: registered in a group no listener or rule uses.
	Unused
)

// States lists every state in order.
func States() []State { return []State{Initial, Healthy, Unhealthy, Draining, Unused} }

func (s State) String() string {
	switch s {
	case Initial:
		return "initial"
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	case Draining:
		return "draining"
	case Unused:
		return "unused"
	}
	return "state" + strconv.Itoa(int(s))
}

// MarshalText makes State JSON-friendly.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Source says where a target came from.
type Source string

// Target sources.
const (
	FromConfig Source = "config"
	FromAPI    Source = "api"
)

// Target is one registered target. Its exported fields never change.
type Target struct {
	Addr   string
	Source Source
	// ID is a short stable identifier (sticky cookies).
	ID string

	group        *Group
	weight       atomic.Int32
	checked      bool // has an active check
	health       atomic.Uint32
	draining     atomic.Bool
	outstanding  atomic.Int64
	failures     atomic.Int32
	ejectedUntil atomic.Int64 // unix nanoseconds
	healthySince atomic.Int64 // unix nanoseconds; slow start
	registeredAt time.Time
	drained      chan struct{} // closed when dropped after draining
}

func newTarget(g *Group, tc TargetConfig, src Source, checked bool, now time.Time) *Target {
	h := fnv.New64a()
	h.Write([]byte(tc.Address))
	t := &Target{Addr: tc.Address, Source: src, ID: strconv.FormatUint(h.Sum64(), 36), group: g, checked: checked, registeredAt: now, drained: make(chan struct{})}
	t.setWeight(tc.Weight)
	if !checked {
		t.health.Store(uint32(health.Healthy))
		t.healthySince.Store(now.UnixNano())
	}
	return t
}

func (t *Target) setWeight(w int) {
	if w == 0 {
		w = 1
	}
	t.weight.Store(int32(w))
}

// Weight is the target's relative share.
func (t *Target) Weight() int { return int(t.weight.Load()) }

// Group returns the target's group.
func (t *Target) Group() *Group { return t.group }

// State returns the target's current state.
func (t *Target) State() State {
	if t.draining.Load() {
		return Draining
	}
	if !t.group.used.Load() {
		return Unused
	}
	switch health.State(t.health.Load()) {
	case health.Healthy:
		if t.ejected(time.Now()) {
			return Unhealthy
		}
		return Healthy
	case health.Unhealthy:
		return Unhealthy
	}
	return Initial
}

// Outstanding is the number of requests (or connections) in flight.
func (t *Target) Outstanding() int64 { return t.outstanding.Load() }

// Acquire counts a request or connection to t; call the returned function
// when it ends.
func (t *Target) Acquire() (release func()) {
	t.outstanding.Add(1)
	return t.release
}

func (t *Target) release() { t.outstanding.Add(-1) }

// Report feeds passive health: ok false for a connection failure or a 5xx
// answer. Enough consecutive failures eject the target for a while.
func (t *Target) Report(ok bool) {
	if ok {
		if t.failures.Load() != 0 {
			t.failures.Store(0)
		}
		return
	}
	s := t.group.settings.Load()
	if s.passiveN <= 0 {
		return
	}
	if n := t.failures.Add(1); int(n) >= s.passiveN {
		t.failures.Store(0)
		t.ejectedUntil.Store(time.Now().Add(s.ejectFor).UnixNano())
	}
}

func (t *Target) ejected(now time.Time) bool {
	u := t.ejectedUntil.Load()
	return u != 0 && now.UnixNano() < u
}

// routable reports whether t may get new work while other targets are
// healthy.
func (t *Target) routable(now time.Time) bool {
	return health.State(t.health.Load()) == health.Healthy && !t.ejected(now)
}

// effWeight is the target's weight, ramped during slow start.
func (t *Target) effWeight(now time.Time, slow time.Duration) float64 {
	w := float64(t.weight.Load())
	if slow > 0 {
		since := time.Duration(now.UnixNano() - t.healthySince.Load())
		if since < slow {
			f := float64(since) / float64(slow)
			w *= max(f, 0.05)
		}
	}
	return w
}

// settings are a group's tunables, swapped as a whole on reload.
type settings struct {
	cfg       Config
	algorithm Algorithm
	slowStart time.Duration
	passiveN  int
	ejectFor  time.Duration
}

// Group is a running target group. It outlives reloads: targets keep their
// health and in-flight counts when its settings change.
type Group struct {
	Name     string
	settings atomic.Pointer[settings]
	targets  atomic.Pointer[[]*Target] // active (not draining), sorted by registration
	used     atomic.Bool
	rr       atomic.Uint64

	mu       sync.Mutex // serialises registration changes
	draining map[string]*Target
	m        *Manager
}

// Config returns the group's current config.
func (g *Group) Config() Config { return g.settings.Load().cfg }

// Targets returns the active targets (not draining).
func (g *Group) Targets() []*Target { return *g.targets.Load() }

// Draining returns the targets being drained.
func (g *Group) Draining() []*Target {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*Target, 0, len(g.draining))
	for _, t := range g.draining {
		out = append(out, t)
	}
	return out
}

// Lookup returns the active target with address addr.
func (g *Group) Lookup(addr string) *Target {
	for _, t := range g.Targets() {
		if t.Addr == addr {
			return t
		}
	}
	return nil
}

// ByID returns the active target with sticky ID id.
func (g *Group) ByID(id string) *Target {
	for _, t := range g.Targets() {
		if t.ID == id {
			return t
		}
	}
	return nil
}

// Sticky returns the stickiness settings (Enabled false when off).
func (g *Group) Sticky() Stickiness { return g.settings.Load().cfg.Stickiness }

// Pick chooses a target for new work, skipping those in exclude (targets
// already tried). When no target is healthy, every target not excluded is
// a candidate (fail-open). It returns nil when the group has no target
// left to try.
func (g *Group) Pick(exclude []*Target) *Target {
	ts := g.Targets()
	if len(ts) == 0 {
		return nil
	}
	now := time.Now()
	s := g.settings.Load()
	// Fast path: round robin over healthy targets, nothing excluded.
	if s.algorithm == RoundRobin && len(exclude) == 0 && s.slowStart == 0 && uniformWeights(ts) {
		n := uint64(len(ts))
		start := g.rr.Add(1)
		for i := uint64(0); i < n; i++ {
			if t := ts[(start+i)%n]; t.routable(now) {
				return t
			}
		}
		return ts[start%n] // fail-open
	}
	var buf [16]*Target
	cand := buf[:0]
	for _, t := range ts {
		if t.routable(now) && !contains(exclude, t) {
			cand = append(cand, t)
		}
	}
	if len(cand) == 0 {
		for _, t := range ts {
			if !contains(exclude, t) {
				cand = append(cand, t)
			}
		}
	}
	switch len(cand) {
	case 0:
		return nil
	case 1:
		return cand[0]
	}
	switch s.algorithm {
	case LeastOutstandingRequests:
		start := int(g.rr.Add(1) % uint64(len(cand)))
		var best *Target
		var bestScore float64
		for i := range cand {
			t := cand[(start+i)%len(cand)]
			score := float64(t.outstanding.Load()+1) / t.effWeight(now, s.slowStart)
			if best == nil || score < bestScore {
				best, bestScore = t, score
			}
		}
		return best
	case RoundRobin:
		if s.slowStart == 0 && uniformWeights(cand) {
			return cand[g.rr.Add(1)%uint64(len(cand))]
		}
	}
	// Weighted random (also round robin with weights or slow start).
	var total float64
	for _, t := range cand {
		total += t.effWeight(now, s.slowStart)
	}
	x := rand.Float64() * total
	for _, t := range cand {
		x -= t.effWeight(now, s.slowStart)
		if x < 0 {
			return t
		}
	}
	return cand[len(cand)-1]
}

func uniformWeights(ts []*Target) bool {
	for _, t := range ts {
		if t.weight.Load() != ts[0].weight.Load() {
			return false
		}
	}
	return true
}

func contains(ts []*Target, t *Target) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// HealthyCount counts the routable targets.
func (g *Group) HealthyCount() int {
	n := 0
	now := time.Now()
	for _, t := range g.Targets() {
		if t.routable(now) {
			n++
		}
	}
	return n
}
