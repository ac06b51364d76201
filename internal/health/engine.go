package health

import (
	"container/heap"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxConcurrent is the default of Options.MaxConcurrent.
const DefaultMaxConcurrent = 256

// ErrClosed is returned by Set after Close.
var ErrClosed = errors.New("health: engine closed")

// Options configure an Engine. The zero value works.
type Options struct {
	// Logger receives state changes (info) and probe failures (debug).
	// Default: discard.
	Logger *slog.Logger
	// Registerer is where the engine's metrics are registered (never the
	// global registry). Nil: metrics are kept but not registered.
	Registerer prometheus.Registerer
	// Namespace prefixes every metric name, e.g. "edgestack_dnsd" gives
	// edgestack_dnsd_health_check_state.
	Namespace string
	// MaxConcurrent bounds the probes in flight at once. Default 256.
	MaxConcurrent int
	// Transport, if set, carries HTTP probes instead of the engine's own
	// transport. An *http.Transport is cloned for https checks that set
	// server_name, host or insecure_skip_verify, with those applied to the
	// clone's TLS config; any other RoundTripper is used as it is for every
	// HTTP probe (it then owns TLS settings). grpc and grpcs probes always
	// use the engine's own HTTP/2 transports.
	Transport http.RoundTripper
}

// Engine runs health checks. Create it with NewEngine, add checks with Set
// (before or after Start), and stop it with Close. All methods are safe for
// concurrent use.
type Engine struct {
	log     *slog.Logger
	reg     prometheus.Registerer
	m       *metrics
	maxConc int
	jobs    chan *check // unbuffered: due checks handed to idle workers
	dialer  *net.Dialer
	base    http.RoundTripper // Options.Transport
	bufs    *sync.Pool        // body buffers for HTTP probes

	// index maps ID to *check for lock-free reads (State, Status, List).
	// Writes happen with mu held.
	index sync.Map

	mu           sync.Mutex
	parents      map[string]map[string]struct{} // child ID -> IDs of calculated checks naming it
	queue        checkHeap                      // scheduled checks by next run
	transports   map[tlsKey]http.RoundTripper
	h2transports map[h2Key]*http.Transport // gRPC probes (grpc.go)
	owned        []idleCloser              // transports to close idle connections of
	workers      int                       // probe workers started (at most maxConc)
	started      bool
	closed       bool
	runCtx       context.Context // set by Start
	cancel       context.CancelFunc
	wake         chan struct{} // cap 1: the head of queue changed

	nmu   sync.Mutex // guards events and subs
	evq   []event
	subs  []*subscription
	nwake chan struct{} // cap 1: evq is non-empty

	wg sync.WaitGroup // scheduler, notifier and probes
}

// check is one configured check. Fields below mu are guarded by Engine.mu.
type check struct {
	id     string
	prober prober // nil for calculated checks
	gauge  prometheus.Gauge

	snap atomic.Pointer[Status] // published after every change

	cfg         CheckConfig // with defaults applied
	raw         State       // state before inverted and disabled
	reported    State       // state consumers see
	succ, fail  int         // consecutive raw outcomes
	lastResult  Result
	lastError   string
	lastErrorAt time.Time
	lastChange  time.Time
	next        time.Time          // next scheduled run
	heapIdx     int                // index in Engine.queue, -1 when not queued
	cancelProbe context.CancelFunc // cancels the probe in flight, if any
	removed     bool               // removed or replaced: drop results
}

type event struct {
	id       string
	from, to State
}

type subscription struct {
	s         Subscriber
	cancelled atomic.Bool
}

// idleCloser is a transport whose idle connections Close closes.
type idleCloser interface{ CloseIdleConnections() }

type tlsKey struct {
	insecure   bool
	serverName string
}

// NewEngine returns an engine that probes nothing until Start.
func NewEngine(opts Options) (*Engine, error) {
	if opts.MaxConcurrent < 0 {
		return nil, fmt.Errorf("health: MaxConcurrent must not be negative, got %d", opts.MaxConcurrent)
	}
	if opts.MaxConcurrent == 0 {
		opts.MaxConcurrent = DefaultMaxConcurrent
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer, opts.Namespace)
	if err != nil {
		return nil, err
	}
	return &Engine{
		log:          opts.Logger,
		reg:          opts.Registerer,
		m:            m,
		maxConc:      opts.MaxConcurrent,
		jobs:         make(chan *check),
		dialer:       &net.Dialer{KeepAlive: 30 * time.Second},
		base:         opts.Transport,
		bufs:         &sync.Pool{New: func() any { return new([BodyLimit]byte) }},
		parents:      map[string]map[string]struct{}{},
		transports:   map[tlsKey]http.RoundTripper{},
		h2transports: map[h2Key]*http.Transport{},
		wake:         make(chan struct{}, 1),
		nwake:        make(chan struct{}, 1),
	}, nil
}

// Start starts the scheduler and the subscriber notifier. They stop when ctx
// is done or Close is called. Checks added before Start get their first run
// spread randomly over their interval from now. Calling Start again, or after
// Close, does nothing.
func (e *Engine) Start(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started || e.closed {
		return
	}
	e.started = true
	e.runCtx, e.cancel = context.WithCancel(ctx)
	now := time.Now()
	for _, c := range e.queue {
		c.next = firstRun(now, c.cfg.Interval.D())
	}
	heap.Init(&e.queue)
	e.wg.Add(2)
	go e.schedule(e.runCtx)
	go e.notify(e.runCtx)
}

// Close stops probing, cancels probes in flight, waits for every goroutine
// of the engine to return, closes idle HTTP connections and unregisters the
// metrics. Pending subscriber events are dropped. Close must not be called
// from a Subscriber. It is safe to call more than once.
func (e *Engine) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	if e.cancel != nil {
		e.cancel()
	}
	e.mu.Unlock()
	e.wg.Wait()
	for _, t := range e.owned {
		t.CloseIdleConnections()
	}
	e.m.unregister(e.reg)
}

// Set adds the check id or replaces it. cfg is validated after defaults are
// applied (see CheckConfig.Validate); a calculated check whose children would
// form a cycle is rejected. Replacing a check whose probe definition is
// unchanged (everything but interval, timeout, the thresholds and inverted)
// keeps its state and counts; otherwise the check starts again as Unknown.
func (e *Engine) Set(id string, cfg CheckConfig) error {
	if err := validateID(id); err != nil {
		return fmt.Errorf("health: set check: %w", err)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("health: check %q: %w", id, err)
	}
	var status StatusRanges
	switch {
	case cfg.Kind.isHTTP():
		status, _ = ParseStatusRanges(cfg.ExpectedStatus) // validated above
	case cfg.Kind.isGRPC():
		status, _ = ParseGRPCCodes(cfg.ExpectedGRPCStatus)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if cfg.Kind == KindCalculated {
		cycle := findCycle(id, cfg.Children, func(x string) []string {
			if xc := e.get(x); xc != nil && xc.cfg.Kind == KindCalculated {
				return xc.cfg.Children
			}
			return nil
		})
		if cycle != nil {
			return fmt.Errorf("health: check %q: children: cycle: %s", id, strings.Join(cycle, " -> "))
		}
	}
	now := time.Now()
	old := e.get(id)

	if old != nil && old.cfg.def() == cfg.def() {
		prev := old.reported
		oldInterval := old.cfg.Interval
		old.cfg = cfg
		if old.heapIdx >= 0 && cfg.Interval != oldInterval {
			if n := firstRun(now, cfg.Interval.D()); n.Before(old.next) {
				old.next = n
				heap.Fix(&e.queue, old.heapIdx)
				e.wakeScheduler(old)
			}
		}
		old.reported = old.computeReported()
		if old.reported != prev {
			e.transition(old, prev, now)
		}
		old.publish()
		return nil
	}

	prev := Unknown
	lastChange := now
	if old != nil {
		prev, lastChange = old.reported, old.lastChange
		e.detach(old)
	}
	c := &check{id: id, cfg: cfg, heapIdx: -1, gauge: e.m.state.WithLabelValues(id), lastChange: lastChange}
	switch cfg.Kind {
	case KindTCP:
		c.prober = &tcpProber{dialer: e.dialer, addr: cfg.Address}
	case KindHTTP, KindHTTPS:
		c.prober = e.newHTTPProber(cfg, status)
	case KindGRPC, KindGRPCS:
		c.prober = e.newGRPCProber(cfg, status)
	case KindCalculated:
		for _, ch := range cfg.Children {
			if e.parents[ch] == nil {
				e.parents[ch] = map[string]struct{}{}
			}
			e.parents[ch][id] = struct{}{}
			if e.get(ch) == nil {
				e.log.Debug("health: calculated check names a child that does not exist yet", "check", id, "child", ch)
			}
		}
		e.evaluate(c, now)
	}
	c.reported = c.computeReported()
	c.publish()
	e.index.Store(id, c)
	if !cfg.Disabled {
		c.next = firstRun(now, cfg.Interval.D())
		heap.Push(&e.queue, c)
		e.wakeScheduler(c)
	}
	c.gauge.Set(float64(c.reported))
	if c.reported != prev {
		e.transition(c, prev, now)
		c.publish()
	}
	return nil
}

// Remove deletes the check id: it is no longer scheduled, a probe in flight
// is cancelled and its result dropped, and its metric series is deleted.
// Calculated checks naming it now count it as unknown. Removing an unknown ID
// does nothing.
func (e *Engine) Remove(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.get(id)
	if c == nil {
		return
	}
	e.index.Delete(id)
	e.detach(c)
	e.m.state.DeleteLabelValues(id)
	e.propagate(id, time.Now())
}

// State returns the state of check id and whether it exists. It does not
// block.
func (e *Engine) State(id string) (State, bool) {
	c := e.get(id)
	if c == nil {
		return Unknown, false
	}
	return c.snap.Load().State, true
}

// Status returns a snapshot of check id and whether it exists. It does not
// block.
func (e *Engine) Status(id string) (Status, bool) {
	c := e.get(id)
	if c == nil {
		return Status{}, false
	}
	return *c.snap.Load(), true
}

// List returns a snapshot of every check, sorted by ID.
func (e *Engine) List() []Status {
	var out []Status
	e.index.Range(func(_, v any) bool {
		out = append(out, *v.(*check).snap.Load())
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Subscribe registers s to be told of every state change from now on, and
// returns a function that unregisters it (after which s may still receive
// the event being delivered at that moment, but no later one). Events that
// happen before Start are delivered once Start is called.
func (e *Engine) Subscribe(s Subscriber) (cancel func()) {
	sub := &subscription{s: s}
	e.nmu.Lock()
	e.subs = append(e.subs, sub)
	e.nmu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			sub.cancelled.Store(true)
			e.nmu.Lock()
			e.subs = slices.DeleteFunc(e.subs, func(x *subscription) bool { return x == sub })
			e.nmu.Unlock()
		})
	}
}

// get returns the check id, or nil.
func (e *Engine) get(id string) *check {
	v, ok := e.index.Load(id)
	if !ok {
		return nil
	}
	return v.(*check)
}

// detach stops a check that is being removed or replaced. e.mu is held.
func (e *Engine) detach(c *check) {
	c.removed = true
	if c.heapIdx >= 0 {
		heap.Remove(&e.queue, c.heapIdx)
	}
	if c.cancelProbe != nil {
		c.cancelProbe()
		c.cancelProbe = nil
	}
	if c.cfg.Kind == KindCalculated {
		for _, ch := range c.cfg.Children {
			delete(e.parents[ch], c.id)
			if len(e.parents[ch]) == 0 {
				delete(e.parents, ch)
			}
		}
	}
}

// wakeScheduler nudges the scheduler if c is now the first check due.
// e.mu is held.
func (e *Engine) wakeScheduler(c *check) {
	if c.heapIdx == 0 {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
}

// transition records that c's reported state changed from prev, updates the
// gauge, queues the event and re-evaluates calculated checks naming c.
// e.mu is held.
func (e *Engine) transition(c *check, prev State, now time.Time) {
	c.lastChange = now
	c.gauge.Set(float64(c.reported))
	attrs := []any{"check", c.id, "kind", c.cfg.Kind, "from", prev, "to", c.reported}
	if c.reported != Healthy && c.lastResult.Error != "" {
		attrs = append(attrs, "error", c.lastResult.Error)
	}
	e.log.Info("health: check state changed", attrs...)
	e.enqueue(event{id: c.id, from: prev, to: c.reported})
	e.propagate(c.id, now)
}

// propagate re-evaluates the calculated checks naming id. Set rejects
// cycles, so this terminates. e.mu is held.
func (e *Engine) propagate(id string, now time.Time) {
	for pid := range e.parents[id] {
		p := e.get(pid)
		if p == nil || p.removed {
			continue
		}
		prev := p.reported
		e.evaluate(p, now)
		if p.reported != prev {
			e.transition(p, prev, now)
		}
		p.publish()
	}
}

// evaluate recomputes calculated check c from its children's reported
// states: healthy when at least min_healthy are healthy, unhealthy when that
// many cannot be healthy even if every unknown child turned out healthy, and
// unknown otherwise. A missing child counts as unknown. e.mu is held.
func (e *Engine) evaluate(c *check, now time.Time) {
	healthy, unknown := 0, 0
	for _, ch := range c.cfg.Children {
		s := Unknown
		if x := e.get(ch); x != nil {
			s = x.reported
		}
		switch s {
		case Healthy:
			healthy++
		case Unknown:
			unknown++
		}
	}
	n, m := c.cfg.MinHealthy, len(c.cfg.Children)
	r := Result{At: now}
	switch {
	case healthy >= n:
		c.raw = Healthy
		r.OK = true
		c.succ++
		c.fail = 0
	case healthy+unknown < n:
		c.raw = Unhealthy
		r.Error = fmt.Sprintf("%d of %d children healthy, %d unknown; want %d", healthy, m, unknown, n)
		c.fail++
		c.succ = 0
		c.lastError, c.lastErrorAt = r.Error, now
	default:
		c.raw = Unknown
		r.Error = fmt.Sprintf("%d of %d children healthy, %d unknown; want %d", healthy, m, unknown, n)
	}
	c.lastResult = r
	c.reported = c.computeReported()
}

// computeReported applies disabled and inverted to the raw state.
func (c *check) computeReported() State {
	if c.cfg.Disabled {
		return Healthy
	}
	if c.cfg.Inverted {
		return c.raw.inverted()
	}
	return c.raw
}

// record feeds one probe outcome into the threshold state machine:
// healthy_threshold consecutive successes make a check Healthy and
// unhealthy_threshold consecutive failures make it Unhealthy, from any state.
func (c *check) record(ok bool) {
	if ok {
		c.succ++
		c.fail = 0
		if c.raw != Healthy && c.succ >= c.cfg.HealthyThreshold {
			c.raw = Healthy
		}
	} else {
		c.fail++
		c.succ = 0
		if c.raw != Unhealthy && c.fail >= c.cfg.UnhealthyThreshold {
			c.raw = Unhealthy
		}
	}
	c.reported = c.computeReported()
}

// publish stores a fresh Status snapshot for lock-free readers. e.mu is held
// (or c is not yet visible).
func (c *check) publish() {
	c.snap.Store(&Status{
		ID:                   c.id,
		Kind:                 c.cfg.Kind,
		State:                c.reported,
		LastResult:           c.lastResult,
		LastError:            c.lastError,
		LastErrorAt:          c.lastErrorAt,
		LastChange:           c.lastChange,
		ConsecutiveSuccesses: c.succ,
		ConsecutiveFailures:  c.fail,
	})
}

// schedule is the single scheduler goroutine: it pops due checks off the
// heap and hands each to an idle probe worker, starting a new worker while
// there are fewer than MaxConcurrent and waiting for one to finish
// otherwise. Calculated checks are evaluated inline.
func (e *Engine) schedule(ctx context.Context) {
	defer e.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		e.mu.Lock()
		now := time.Now()
		wait := time.Hour
		for len(e.queue) > 0 {
			c := e.queue[0]
			if d := c.next.Sub(now); d > 0 {
				wait = d
				break
			}
			heap.Pop(&e.queue)
			if c.cfg.Kind == KindCalculated {
				prev := c.reported
				e.evaluate(c, now)
				if c.reported != prev {
					e.transition(c, prev, now)
				}
				c.publish()
				c.next = nextRun(c.next, c.cfg.Interval.D(), now)
				heap.Push(&e.queue, c)
				continue
			}
			switch {
			case e.offer(c):
			case e.workers < e.maxConc:
				e.workers++
				e.wg.Add(1)
				go e.worker(ctx, c)
			default:
				// Every worker is busy: wait for one without holding the
				// lock. c is out of the queue meanwhile; Remove and Set mark
				// it removed, which the worker checks.
				e.mu.Unlock()
				select {
				case e.jobs <- c:
				case <-ctx.Done():
					return
				}
				e.mu.Lock()
				now = time.Now()
			}
		}
		e.mu.Unlock()

		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.wake:
		}
	}
}

// offer hands c to an idle worker, if one is waiting.
func (e *Engine) offer(c *check) bool {
	select {
	case e.jobs <- c:
		return true
	default:
		return false
	}
}

// worker is one of at most MaxConcurrent probe goroutines. The scheduler
// starts one when a check is due and no worker is idle; it then takes checks
// from e.jobs until ctx ends.
func (e *Engine) worker(ctx context.Context, c *check) {
	defer e.wg.Done()
	for {
		e.runProbe(ctx, c)
		select {
		case c = <-e.jobs:
		case <-ctx.Done():
			return
		}
	}
}

// runProbe runs one probe of c, feeds the result into c's state machine and
// schedules c's next run.
func (e *Engine) runProbe(ctx context.Context, c *check) {
	e.mu.Lock()
	if c.removed || ctx.Err() != nil {
		e.mu.Unlock()
		return
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout.D())
	defer cancel()
	c.cancelProbe = cancel
	scheduled := c.next
	e.mu.Unlock()

	start := time.Now()
	code, reason, err := c.prober.probe(pctx)
	dur := time.Since(start)

	e.mu.Lock()
	if c.removed || ctx.Err() != nil {
		// Removed, replaced or shutting down: the result means nothing.
		e.mu.Unlock()
		return
	}
	c.cancelProbe = nil
	kind := c.cfg.Kind
	r := Result{At: start, OK: err == nil, Reason: reason, Duration: dur, StatusCode: code}
	if err != nil {
		r.Error = err.Error()
		c.lastError, c.lastErrorAt = r.Error, start
	}
	c.lastResult = r
	prev := c.reported
	c.record(r.OK)
	now := time.Now()
	if c.reported != prev {
		e.transition(c, prev, now)
	}
	c.publish()
	c.next = nextRun(scheduled, c.cfg.Interval.D(), now)
	heap.Push(&e.queue, c)
	e.wakeScheduler(c)
	e.mu.Unlock()

	e.m.durationBy[kind].Observe(dur.Seconds())
	if err != nil {
		e.m.failuresBy[kind][reason].Inc()
		e.log.Debug("health: probe failed", "check", c.id, "reason", reason, "error", err)
	}
}

// firstRun spreads a new check's first run uniformly over its interval, so
// that checks added together do not probe together.
func firstRun(now time.Time, interval time.Duration) time.Time {
	return now.Add(time.Duration(rand.Int64N(int64(interval))))
}

// nextRun is one interval after the previous scheduled run, plus or minus up
// to 5% jitter; a check that fell behind runs again within 5% of its
// interval rather than at once, so a backlog does not turn into a burst.
func nextRun(prev time.Time, interval time.Duration, now time.Time) time.Time {
	j := int64(interval / 20)
	var jitter time.Duration
	if j > 0 {
		jitter = time.Duration(rand.Int64N(2*j+1) - j)
	}
	next := prev.Add(interval + jitter)
	if next.Before(now) {
		next = now
		if j > 0 {
			next = now.Add(time.Duration(rand.Int64N(j + 1)))
		}
	}
	return next
}

// enqueue queues an event for the notifier. It may be called with e.mu held.
func (e *Engine) enqueue(ev event) {
	e.nmu.Lock()
	e.evq = append(e.evq, ev)
	e.nmu.Unlock()
	select {
	case e.nwake <- struct{}{}:
	default:
	}
}

// notify is the single notifier goroutine: it delivers queued events to the
// subscribers in the order they happened, holding no lock while calling them.
func (e *Engine) notify(ctx context.Context) {
	defer e.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.nwake:
		}
		e.nmu.Lock()
		batch := e.evq
		e.evq = nil
		subs := slices.Clone(e.subs)
		e.nmu.Unlock()
		for _, ev := range batch {
			if ctx.Err() != nil {
				return
			}
			for _, s := range subs {
				if !s.cancelled.Load() {
					s.s.HealthChanged(ev.id, ev.from, ev.to)
				}
			}
		}
	}
}

// newHTTPProber builds the prober of an http or https check. e.mu is held.
func (e *Engine) newHTTPProber(cfg CheckConfig, status StatusRanges) *httpProber {
	scheme, key := targetTLS(cfg, cfg.Kind == KindHTTPS)
	p := &httpProber{
		rt:     e.transportFor(key),
		url:    scheme + "://" + cfg.Address + cfg.Path,
		host:   cfg.Host,
		status: status,
		bufs:   e.bufs,
	}
	if cfg.BodyContains != "" {
		p.body = []byte(cfg.BodyContains)
	}
	return p
}

// targetTLS returns the URL scheme of a check and, when secure, how its
// target's certificate is verified (the server name defaults to the Host
// override's name).
func targetTLS(cfg CheckConfig, secure bool) (string, tlsKey) {
	if !secure {
		return "http", tlsKey{}
	}
	key := tlsKey{insecure: cfg.InsecureSkipVerify, serverName: cfg.ServerName}
	if key.serverName == "" && cfg.Host != "" {
		key.serverName = hostOnly(cfg.Host)
	}
	return "https", key
}

// hostOnly strips a port and IPv6 brackets from a Host value.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}

// transportFor returns the round tripper for HTTP probes with TLS settings
// k, creating it on first use. Transports are shared by every check with the
// same settings, so connections to a target are reused across its checks.
// e.mu is held.
func (e *Engine) transportFor(k tlsKey) http.RoundTripper {
	if rt, ok := e.transports[k]; ok {
		return rt
	}
	var rt http.RoundTripper
	switch base := e.base.(type) {
	case nil:
		t := &http.Transport{
			Proxy:                  nil, // probes go straight to the target
			DialContext:            e.dialer.DialContext,
			MaxIdleConns:           4 * e.maxConc,
			MaxIdleConnsPerHost:    e.maxConc,
			IdleConnTimeout:        90 * time.Second,
			DisableCompression:     true,
			MaxResponseHeaderBytes: 64 << 10,
			TLSClientConfig: &tls.Config{
				MinVersion:         tls.VersionTLS12,
				InsecureSkipVerify: k.insecure, //nolint:gosec // only when the check asks for it
				ServerName:         k.serverName,
			},
		}
		e.owned = append(e.owned, t)
		rt = t
	case *http.Transport:
		if k == (tlsKey{}) {
			rt = base
			break
		}
		t := base.Clone()
		if t.TLSClientConfig == nil {
			t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		t.TLSClientConfig.InsecureSkipVerify = t.TLSClientConfig.InsecureSkipVerify || k.insecure
		if k.serverName != "" {
			t.TLSClientConfig.ServerName = k.serverName
		}
		e.owned = append(e.owned, t)
		rt = t
	default:
		rt = base
	}
	e.transports[k] = rt
	return rt
}

// checkHeap is a min-heap of checks by next run time.
type checkHeap []*check

func (h checkHeap) Len() int           { return len(h) }
func (h checkHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h checkHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h *checkHeap) Push(x any) {
	c := x.(*check)
	c.heapIdx = len(*h)
	*h = append(*h, c)
}

func (h *checkHeap) Pop() any {
	old := *h
	n := len(old)
	c := old[n-1]
	old[n-1] = nil
	c.heapIdx = -1
	*h = old[:n-1]
	return c
}
