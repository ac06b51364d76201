package targetgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/internal/health"
	"github.com/prometheus/client_golang/prometheus"
)

// HealthEngine is the part of the shared health engine a Manager uses.
type HealthEngine interface {
	Set(id string, c health.CheckConfig) error
	Remove(id string)
	State(id string) (health.State, bool)
}

// Errors of registration calls.
var (
	ErrUnknownGroup  = errors.New("no such target group")
	ErrUnknownTarget = errors.New("no such target in the group")
	ErrExists        = errors.New("target already registered")
)

// Options configure a Manager.
type Options struct {
	// Health runs active checks; nil means targets are healthy once
	// registered.
	Health HealthEngine
	Logger *slog.Logger
	// Namespace prefixes the metrics, e.g. "edgestack_lbd".
	Namespace string
	// OnDrop, when set, is called after a drained target is dropped (to
	// close its pooled connections).
	OnDrop func(*Target)
}

// Manager owns every target group. It is a health.Subscriber (subscribe it
// to the engine) and a prometheus.Collector (target state and in-flight
// gauges; series of removed targets disappear with them).
type Manager struct {
	opts   Options
	log    *slog.Logger
	groups atomic.Pointer[map[string]*Group]
	mu     sync.Mutex // serialises Apply, Register, Deregister
	checks sync.Map   // check ID -> *Target (the active one)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stateDesc, outstandingDesc *prometheus.Desc
}

// NewManager returns a manager with no groups.
func NewManager(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel}
	empty := map[string]*Group{}
	m.groups.Store(&empty)
	ns := opts.Namespace
	m.stateDesc = prometheus.NewDesc(prometheus.BuildFQName(ns, "", "target_state"),
		"State of each target: 1 for its current state (initial, healthy, unhealthy, draining, unused), 0 for the others.",
		[]string{"target_group", "target", "state"}, nil)
	m.outstandingDesc = prometheus.NewDesc(prometheus.BuildFQName(ns, "", "target_outstanding_requests"),
		"Requests (or L4 connections) in flight to each target.",
		[]string{"target_group", "target"}, nil)
	return m
}

// Close stops draining timers (dropping draining targets at once).
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
}

// Group returns the group named name, or nil.
func (m *Manager) Group(name string) *Group { return (*m.groups.Load())[name] }

// Groups returns every group, sorted by name.
func (m *Manager) Groups() []*Group {
	gs := *m.groups.Load()
	out := make([]*Group, 0, len(gs))
	for _, g := range gs {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Apply makes the groups match cfgs (already validated): new groups are
// created, changed ones keep their targets' state, config targets that
// disappeared are drained, removed groups are drained entirely. used names
// the groups some listener or rule refers to (others' targets are
// "unused"). Targets registered through the API are kept.
func (m *Manager) Apply(cfgs []Config, used map[string]bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.groups.Load()
	next := make(map[string]*Group, len(cfgs))
	now := time.Now()
	var errs []error
	for _, c := range cfgs {
		c = c.WithDefaults()
		g := old[c.Name]
		if g == nil {
			g = &Group{Name: c.Name, draining: map[string]*Target{}, m: m}
			empty := []*Target{}
			g.targets.Store(&empty)
		}
		g.settings.Store(&settings{cfg: c, algorithm: c.Algorithm, slowStart: c.SlowStart.D(), passiveN: c.PassiveHealth.ConsecutiveFailures, ejectFor: c.PassiveHealth.EjectFor.D()})
		g.used.Store(used[c.Name])
		next[c.Name] = g

		g.mu.Lock()
		cur := g.Targets()
		want := map[string]TargetConfig{}
		for _, t := range c.Targets {
			want[t.Address] = t
		}
		var keep []*Target
		for _, t := range cur {
			tc, inCfg := want[t.Addr]
			switch {
			case inCfg:
				t.setWeight(tc.Weight)
				delete(want, t.Addr)
				keep = append(keep, t)
			case t.Source == FromAPI:
				keep = append(keep, t)
			default:
				m.drainLocked(g, t)
			}
		}
		for _, tc := range c.Targets {
			if _, add := want[tc.Address]; add {
				keep = append(keep, m.newTargetLocked(g, tc, FromConfig, now))
			}
		}
		// Health check settings may have changed: re-set every check.
		for _, t := range keep {
			if err := m.setCheck(g, t); err != nil {
				errs = append(errs, err)
			}
		}
		g.targets.Store(&keep)
		g.mu.Unlock()
	}
	for name, g := range old {
		if _, ok := next[name]; ok {
			continue
		}
		g.mu.Lock()
		for _, t := range g.Targets() {
			m.drainLocked(g, t)
		}
		empty := []*Target{}
		g.targets.Store(&empty)
		g.mu.Unlock()
	}
	m.groups.Store(&next)
	return errors.Join(errs...)
}

// newTargetLocked creates a target and its health check; g.mu is held.
func (m *Manager) newTargetLocked(g *Group, tc TargetConfig, src Source, now time.Time) *Target {
	cfg := g.Config()
	_, checked := cfg.checkConfig(tc.Address)
	checked = checked && m.opts.Health != nil
	t := newTarget(g, tc, src, checked, now)
	if d, ok := g.draining[tc.Address]; ok {
		// Registered again while draining: the new target takes over the
		// check; the old one finishes its in-flight work.
		delete(g.draining, tc.Address)
		_ = d
	}
	if checked {
		id := checkID(g.Name, tc.Address)
		m.checks.Store(id, t)
		if st, ok := m.opts.Health.State(id); ok {
			t.health.Store(uint32(st))
			if st == health.Healthy {
				t.healthySince.Store(now.UnixNano())
			}
		}
	}
	return t
}

func (m *Manager) setCheck(g *Group, t *Target) error {
	if !t.checked {
		return nil
	}
	cc, ok := g.Config().checkConfig(t.Addr)
	if !ok {
		return nil
	}
	if err := m.opts.Health.Set(checkID(g.Name, t.Addr), cc); err != nil {
		return fmt.Errorf("target group %q: target %s: %w", g.Name, t.Addr, err)
	}
	return nil
}

// drainLocked starts draining t; g.mu is held and the caller removes t
// from the active list.
func (m *Manager) drainLocked(g *Group, t *Target) {
	if t.draining.Swap(true) {
		return
	}
	g.draining[t.Addr] = t
	delay := g.Config().DeregistrationDelay.D()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		deadline := time.NewTimer(delay)
		defer deadline.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
	wait:
		for t.outstanding.Load() > 0 {
			select {
			case <-tick.C:
			case <-deadline.C:
				break wait
			case <-m.ctx.Done():
				break wait
			}
		}
		m.drop(g, t)
	}()
}

// drop forgets a drained target.
func (m *Manager) drop(g *Group, t *Target) {
	g.mu.Lock()
	if g.draining[t.Addr] == t {
		delete(g.draining, t.Addr)
	}
	id := checkID(g.Name, t.Addr)
	stillActive := g.Lookup(t.Addr) != nil && m.Group(g.Name) == g
	if !stillActive {
		if cur, ok := m.checks.Load(id); ok && (cur == t || cur.(*Target).draining.Load()) {
			m.checks.Delete(id)
			if m.opts.Health != nil && t.checked {
				m.opts.Health.Remove(id)
			}
		}
	}
	g.mu.Unlock()
	if m.opts.OnDrop != nil {
		m.opts.OnDrop(t)
	}
	close(t.drained)
	m.log.Info("target drained", "target_group", g.Name, "target", t.Addr)
}

// Register adds a target to a group at run time (source api).
func (m *Manager) Register(group string, tc TargetConfig) (*Target, error) {
	if err := ValidateTarget(tc); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.Group(group)
	if g == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownGroup, group)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.Lookup(tc.Address) != nil {
		return nil, fmt.Errorf("%w: %s in %q", ErrExists, tc.Address, group)
	}
	t := m.newTargetLocked(g, tc, FromAPI, time.Now())
	if err := m.setCheck(g, t); err != nil {
		return nil, err
	}
	next := append(slices.Clone(g.Targets()), t)
	g.targets.Store(&next)
	m.log.Info("target registered", "target_group", group, "target", tc.Address)
	return t, nil
}

// Deregister starts draining a target; it is dropped after the group's
// deregistration delay or when nothing is in flight. The returned channel
// is closed then.
func (m *Manager) Deregister(group, addr string) (<-chan struct{}, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.Group(group)
	if g == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownGroup, group)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.Lookup(addr)
	if t == nil {
		return nil, fmt.Errorf("%w: %s in %q", ErrUnknownTarget, addr, group)
	}
	next := slices.DeleteFunc(slices.Clone(g.Targets()), func(x *Target) bool { return x == t })
	g.targets.Store(&next)
	m.drainLocked(g, t)
	m.log.Info("target deregistered; draining", "target_group", group, "target", addr)
	return t.drained, nil
}

// HealthChanged implements health.Subscriber.
func (m *Manager) HealthChanged(id string, from, to health.State) {
	v, ok := m.checks.Load(id)
	if !ok {
		return
	}
	t := v.(*Target)
	if to == health.Healthy && from != health.Healthy {
		t.healthySince.Store(time.Now().UnixNano())
		t.ejectedUntil.Store(0)
	}
	t.health.Store(uint32(to))
}

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.stateDesc
	ch <- m.outstandingDesc
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	for _, g := range m.Groups() {
		ts := append(slices.Clone(g.Targets()), g.Draining()...)
		for _, t := range ts {
			cur := t.State()
			for _, s := range States() {
				v := 0.0
				if s == cur {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(m.stateDesc, prometheus.GaugeValue, v, g.Name, t.Addr, s.String())
			}
			ch <- prometheus.MustNewConstMetric(m.outstandingDesc, prometheus.GaugeValue, float64(t.Outstanding()), g.Name, t.Addr)
		}
	}
}

// TargetInfo describes a target for the API.
type TargetInfo struct {
	Address     string `json:"address"`
	Weight      int    `json:"weight"`
	Source      Source `json:"source"`
	State       State  `json:"state"`
	Outstanding int64  `json:"outstanding"`
	Ejected     bool   `json:"passively_ejected,omitempty"`
}

// Info lists a group's targets, draining ones included.
func (g *Group) Info() []TargetInfo {
	now := time.Now()
	ts := append(slices.Clone(g.Targets()), g.Draining()...)
	out := make([]TargetInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, TargetInfo{Address: t.Addr, Weight: t.Weight(), Source: t.Source, State: t.State(), Outstanding: t.Outstanding(), Ejected: t.ejected(now)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out
}
