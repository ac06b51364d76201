// Package dnsserver is dnsd: an authoritative DNS server for zones loaded
// from master files and managed through a change API, with Route 53 style
// routing driven by health checks. See README.md.
package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/dns/routing"
	"github.com/edgestack/edgestack/dns/store"
	"github.com/edgestack/edgestack/dns/zone"
	"github.com/edgestack/edgestack/internal/app"
	"github.com/edgestack/edgestack/internal/health"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

type zkey struct {
	view   string
	origin string
}

// zoneState is one served zone: its base (file or creation) and the
// current version with applied change batches.
type zoneState struct {
	key     zkey
	file    string // "" for API-managed zones
	stamp   fileStamp
	cur     *zone.Zone
	journal []journalEntry // differences since the base, for IXFR
}

// Service is the running dnsd.
type Service struct {
	log     *slog.Logger
	deps    app.Deps
	m       *metrics
	health  *health.Engine
	unsub   func()
	store   *store.Store
	cfg     atomic.Pointer[Config]
	snap    atomic.Pointer[snapshot]
	mu      sync.Mutex // serialises zone changes and snapshot builds
	zones   map[zkey]*zoneState
	cfgHC   map[string]bool // health checks that come from the config
	udp     *net.UDPConn    // the first of udps
	udps    []*net.UDPConn  // one per UDP worker (SO_REUSEPORT)
	tcp     net.Listener
	tcpSem  chan struct{}
	conns   sync.Map // net.Conn → struct{}
	wg      sync.WaitGroup
	closing atomic.Bool
	started atomic.Bool
	notify  chan string // zones to NOTIFY secondaries about
	ctx     context.Context
	cancel  context.CancelFunc
}

// NewService builds dnsd from a valid config without starting it.
func NewService(deps app.Deps, cfg *Config) (app.Service[*Config], error) {
	return newService(deps, cfg)
}

func newService(deps app.Deps, cfg *Config) (*Service, error) {
	s := &Service{
		log:    deps.Logger.With("component", "dnsd"),
		deps:   deps,
		zones:  map[zkey]*zoneState{},
		notify: make(chan string, 64),
	}
	// The admin server runs while zones load: not ready until Start.
	deps.Admin.AddReadiness("dns", func() error {
		switch {
		case s.closing.Load():
			return errors.New("stopping")
		case !s.started.Load():
			return errors.New("starting")
		}
		return nil
	})
	s.m = newMetrics(deps.Registry)
	deps.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgestack_dnsd_fast_path_entries", Help: "Precomputed wire answers held for the current snapshot.",
	}, func() float64 {
		if snap := s.snap.Load(); snap != nil {
			return float64(snap.cache.len())
		}
		return 0
	}))
	eng, err := health.NewEngine(health.Options{Logger: deps.Logger.With("component", "health"), Registerer: deps.Registry, Namespace: "edgestack_dnsd"})
	if err != nil {
		return nil, err
	}
	s.health = eng
	if cfg.Storage != "" {
		st, err := store.Open(cfg.Storage)
		if err != nil {
			return nil, err
		}
		s.store = st
	} else {
		st, err := store.OpenMemory()
		if err != nil {
			return nil, err
		}
		s.store = st
		s.log.Warn("storage is not set: API changes are kept in memory only")
	}
	s.cfg.Store(cfg)
	if err := s.applyHealthConfig(cfg); err != nil {
		s.store.Close()
		return nil, err
	}
	if err := s.loadZones(cfg); err != nil {
		s.store.Close()
		return nil, err
	}
	// Parsing garbage of large zones would otherwise stay resident.
	debug.FreeOSMemory()
	s.registerAPI()
	s.unsub = eng.Subscribe(health.SubscriberFunc(func(id string, from, to health.State) {
		s.log.Info("health changed", "check", id, "from", from, "to", to)
		s.mu.Lock()
		s.publish()
		s.mu.Unlock()
	}))
	return s, nil
}

// applyHealthConfig sets the checks of the config and of the store.
func (s *Service) applyHealthConfig(cfg *Config) error {
	next := map[string]bool{}
	for id, hc := range cfg.HealthChecks {
		if err := s.health.Set(id, hc); err != nil {
			return fmt.Errorf("health_checks.%s: %w", id, err)
		}
		next[id] = true
	}
	for id := range s.cfgHC {
		if !next[id] {
			s.health.Remove(id)
		}
	}
	s.cfgHC = next
	stored, err := s.store.HealthChecks()
	if err != nil {
		return err
	}
	for id, hc := range stored {
		if next[id] {
			continue // the config wins
		}
		if err := s.health.Set(id, hc); err != nil {
			s.log.Error("stored health check rejected", "check", id, "err", err)
		}
	}
	return nil
}

// loadZones loads every file zone of cfg and every stored zone, replays
// stored change batches and publishes a snapshot. On any error nothing
// changes.
func (s *Service) loadZones(cfg *Config) error {
	next := map[zkey]*zoneState{}
	var errs []error
	for i, zc := range cfg.Zones {
		k := zkey{zc.View, dns.CanonicalName(zc.Name)}
		z, stamp, err := cfg.zoneFor(zc)
		if err != nil {
			s.m.zoneLoads.WithLabelValues("failure").Inc()
			errs = append(errs, fmt.Errorf("zones[%d]: %w", i, err))
			continue
		}
		s.m.zoneLoads.WithLabelValues("success").Inc()
		next[k] = &zoneState{key: k, file: zc.File, cur: z, stamp: stamp}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	stored, err := s.store.Zones()
	if err != nil {
		return err
	}
	for _, sz := range stored {
		k := zkey{sz.View, sz.Name}
		zs := next[k]
		if zs == nil {
			if sz.File {
				continue // a file zone no longer configured: its changes wait
			}
			base, err := baseZone(sz)
			if err != nil {
				s.log.Error("stored zone unreadable; not served", "zone", sz.Name, "err", err)
				continue
			}
			zs = &zoneState{key: k, cur: base}
			next[k] = zs
		}
		z, journal, err := s.replay(zs.cur, sz)
		if err != nil {
			s.log.Error("replaying stored changes", "zone", sz.Name, "err", err)
		}
		zs.cur, zs.journal = z, journal
	}
	old := s.zones
	s.zones = next
	for k, zs := range next {
		if o := old[k]; o == nil || o.cur.Serial() != zs.cur.Serial() {
			s.queueNotify(k.origin)
		}
	}
	s.publish()
	return nil
}

// publish builds and stores a new snapshot from s.zones and the config.
// s.mu must be held.
func (s *Service) publish() {
	cfg := s.cfg.Load()
	var views []*view
	for _, vc := range cfg.Views {
		views = append(views, &view{name: vc.Name, sources: parsePrefixes(vc.Sources), zones: map[string]*zone.Zone{}})
	}
	public := &view{zones: map[string]*zone.Zone{}}
	views = append(views, public)
	records := 0
	s.m.serial.Reset()
	for k, zs := range s.zones {
		records += zs.cur.Records()
		s.m.serial.WithLabelValues(k.origin, k.view).Set(float64(zs.cur.Serial()))
		if k.view == "" {
			public.zones[k.origin] = zs.cur
		}
	}
	// A view sees its own zones over the public ones.
	for _, v := range views[:len(views)-1] {
		for o, z := range public.zones {
			v.zones[o] = z
		}
		for k, zs := range s.zones {
			if k.view == v.name {
				v.zones[k.origin] = zs.cur
			}
		}
	}
	s.m.zones.Set(float64(len(s.zones)))
	s.m.records.Set(float64(records))
	colls := map[string]*routing.Collection{}
	for name, locs := range cfg.CIDRCollections {
		m := map[string][]netip.Prefix{}
		for loc, ps := range locs {
			m[loc] = parsePrefixes(ps)
		}
		colls[name] = routing.NewCollection(m)
	}
	snap := &snapshot{views: views, cache: newWireCache(cfg.CacheEntries), xfr: newXFRPolicy(cfg), rrl: s.rrlFor(cfg)}
	snap.router = &routing.Router{Health: s.health, Collections: colls, Resolve: resolver(views)}
	s.snap.Store(snap)
}

// rrlFor keeps the rate limiter's state across snapshots unless its
// config changed.
func (s *Service) rrlFor(cfg *Config) *rrl {
	if old := s.snap.Load(); old != nil && old.rrl != nil && old.rrl.cfg == cfg.RRL {
		return old.rrl
	}
	return newRRL(cfg.RRL)
}

// resolver finds alias targets: in the named zone, else in the zone the
// alias lives in, else the closest served zone, within the public view and
// the private ones (a private zone first).
func resolver(views []*view) routing.Resolver {
	return func(from *zone.Zone, a *zone.Alias, t uint16) (*zone.Zone, []*zone.RRSet) {
		if a.Type != 0 {
			t = a.Type
		}
		name := dns.CanonicalName(a.Name)
		var z *zone.Zone
		if a.Zone != "" {
			for _, v := range views {
				if z = v.zones[dns.CanonicalName(a.Zone)]; z != nil {
					break
				}
			}
		}
		if z == nil && dns.IsSubDomain(from.Origin, name) {
			z = from
		}
		if z == nil {
			z = views[len(views)-1].zoneFor(name, t)
		}
		if z == nil {
			return nil, nil
		}
		return z, z.Find(name, t)
	}
}

// Start binds the UDP and TCP listeners and starts serving.
func (s *Service) Start(ctx context.Context) error {
	cfg := s.cfg.Load()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	udps, tcp, err := listen(cfg.Listen, udpWorkers())
	if err != nil {
		return err
	}
	s.udps, s.udp = udps, udps[0]
	s.tcp = tcp
	s.tcpSem = make(chan struct{}, cfg.TCP.MaxConnections)
	s.health.Start(s.ctx)
	// One worker per socket; with a single socket (no SO_REUSEPORT) all
	// workers share it.
	for i := range udpWorkers() {
		s.wg.Add(1)
		go s.serveUDPBatch(udps[i%len(udps)])
	}
	s.wg.Add(3)
	go s.serveTCP()
	go s.notifier(s.ctx)
	go s.watchFiles(s.ctx)
	s.started.Store(true)
	s.log.Info("serving DNS", "udp", s.udp.LocalAddr().String(), "tcp", s.tcp.Addr().String(), "zones", len(s.zones))
	return nil
}

// listen binds n UDP sockets (SO_REUSEPORT; one where that is missing)
// and a TCP listener on the same address; with port 0 it retries until
// both get the same free port.
func listen(addr string, n int) ([]*net.UDPConn, net.Listener, error) {
	lc := net.ListenConfig{Control: reusePort}
	// With port 0 the kernel could pick a port another SO_REUSEPORT
	// socket of this user holds and share it: one plain socket then.
	if _, p, _ := net.SplitHostPort(addr); !canReusePort || p == "0" {
		n, lc = 1, net.ListenConfig{}
	}
	closeAll := func(us []*net.UDPConn) {
		for _, u := range us {
			u.Close()
		}
	}
	for attempt := 0; ; attempt++ {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns listener: %w", err)
		}
		udps := []*net.UDPConn{pc.(*net.UDPConn)}
		bound := net.JoinHostPort(hostOf(addr), fmt.Sprint(udps[0].LocalAddr().(*net.UDPAddr).Port))
		for len(udps) < n {
			pc, err := lc.ListenPacket(context.Background(), "udp", bound)
			if err != nil {
				closeAll(udps)
				return nil, nil, fmt.Errorf("dns listener: %w", err)
			}
			udps = append(udps, pc.(*net.UDPConn))
		}
		for _, u := range udps {
			_ = u.SetReadBuffer(4 << 20)
			_ = u.SetWriteBuffer(4 << 20)
		}
		tcp, err := net.Listen("tcp", bound)
		if err == nil {
			return udps, tcp, nil
		}
		closeAll(udps)
		if _, p, _ := net.SplitHostPort(addr); p != "0" || attempt > 20 {
			return nil, nil, fmt.Errorf("dns listener: %w", err)
		}
	}
}

func hostOf(listen string) string {
	h, _, _ := net.SplitHostPort(listen)
	return h
}

// Addr returns the bound UDP address (for tests).
func (s *Service) Addr() string { return s.udp.LocalAddr().String() }

// Reload applies a new config: zones reloaded from their files (a file that
// fails keeps the whole reload from applying), views, collections, health
// checks. Listener changes need a restart.
func (s *Service) Reload(_ context.Context, cfg *Config) error {
	old := s.cfg.Load()
	if cfg.Listen != old.Listen || cfg.Storage != old.Storage || cfg.TCP != old.TCP {
		s.log.Warn("listen, storage and tcp changes need a restart; keeping the running values")
	}
	prev := s.cfg.Swap(cfg)
	if err := s.applyHealthConfig(cfg); err != nil {
		s.cfg.Store(prev)
		return err
	}
	if err := s.loadZones(cfg); err != nil {
		s.cfg.Store(prev)
		return err
	}
	return nil
}

// Shutdown stops accepting, lets open TCP connections finish until ctx
// ends, then closes them.
func (s *Service) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	if s.unsub != nil {
		s.unsub()
	}
	for _, u := range s.udps {
		u.Close()
	}
	if s.tcp != nil {
		s.tcp.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	// Idle connections go at once; busy ones get until ctx.
	s.conns.Range(func(k, _ any) bool {
		_ = k.(net.Conn).SetReadDeadline(time.Now())
		return true
	})
	select {
	case <-done:
	case <-ctx.Done():
		s.conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		<-done
	}
	s.health.Close()
	return s.store.Close()
}

// zoneList is the summary of served zones for the API.
type zoneList struct {
	Name   string `json:"name"`
	View   string `json:"view,omitempty"`
	Serial uint32 `json:"serial"`
	RRSets int    `json:"rrsets"`
	Source string `json:"source"` // "file" or "api"
}

func (s *Service) listZones() []zoneList {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []zoneList
	for k, zs := range s.zones {
		src := "api"
		if zs.file != "" {
			src = "file"
		}
		out = append(out, zoneList{Name: k.origin, View: k.view, Serial: zs.cur.Serial(), RRSets: len(zs.cur.Sets()), Source: src})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].View < out[j].View
	})
	return out
}

func normZone(z string) string { return dns.CanonicalName(strings.TrimSpace(z)) }
