package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/certs/certsource"
	"github.com/edgestack/edgestack/edge/cache"
	"github.com/edgestack/edgestack/internal/accesslog"
	"github.com/edgestack/edgestack/internal/app"
	"github.com/edgestack/edgestack/internal/h2"
	"github.com/edgestack/edgestack/internal/httpguard"
	"github.com/edgestack/edgestack/internal/sharedsock"
	"github.com/prometheus/client_golang/prometheus"
)

// Service is the running edged.
type Service struct {
	deps  app.Deps
	log   *slog.Logger
	cfg   atomic.Pointer[Config]
	store *cache.Store
	h     *Handler
	m     *metrics

	certs   atomic.Pointer[certSet]
	sources atomic.Pointer[certSources] // nil until Start
	srcCtx  context.Context             // Start's: the certd sources' pollers run under it

	socks sharedsock.Set
	mu    sync.Mutex
	// listeners are the running ones in config order; a reload replaces
	// those whose settings changed (listeners.go).
	listeners []*edgeListener
	logOut    io.WriteCloser
	logPath   string
	wg        sync.WaitGroup
	started   atomic.Bool
	gcStop    context.CancelFunc // ends gcTuner (nil: GOGC set by the user)
	gcDone    chan struct{}

	rejects prometheus.Counter
}

// NewService builds edged from a valid config.
func NewService(deps app.Deps, cfg *Config) (app.Service[*Config], error) {
	return New(deps, cfg)
}

// New is NewService returning the concrete type (for tests).
func New(deps app.Deps, cfg *Config) (*Service, error) {
	log := deps.Logger.With("component", "edge")
	store, err := cache.New(cache.Options{MaxBytes: int64(cfg.Cache.MaxSize)})
	if err != nil {
		return nil, err
	}
	s := &Service{deps: deps, log: log, store: store}
	s.m = newMetrics(deps.Registry, store)
	s.rejects = prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "malformed_requests_total",
		Help: "Requests refused by the request-framing guard (400/431) before any origin request."})
	deps.Registry.MustRegister(s.rejects)
	s.h = newHandler(store, s.m, log)
	snap, err := build(cfg, s.m)
	if err != nil {
		store.Close()
		return nil, err
	}
	if err := s.setAccessLog(cfg, snap); err != nil {
		store.Close()
		return nil, err
	}
	s.h.snap.Store(snap)
	certs, err := loadCerts(cfg)
	if err != nil {
		store.Close()
		return nil, err
	}
	s.certs.Store(certs)
	s.cfg.Store(cfg)
	s.registerAPI()
	deps.Admin.AddReadiness("edge", func() error {
		if !s.started.Load() {
			return errors.New("listeners not started")
		}
		return nil
	})
	return s, nil
}

// Handler returns the viewer-facing handler (for tests and embedding).
func (s *Service) Handler() http.Handler { return s.h }

// Store returns the cache (for tests).
func (s *Service) Store() *cache.Store { return s.store }

// Addrs returns the bound listener addresses, in config order.
func (s *Service) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, 0, len(s.listeners))
	for _, l := range s.listeners {
		out = append(out, l.addr)
	}
	return out
}

func (s *Service) setAccessLog(cfg *Config, snap *snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	path := cfg.AccessLog.Path
	if path == "" {
		return nil
	}
	var w io.Writer
	switch path {
	case "stdout":
		w = os.Stdout
	case "stderr":
		w = os.Stderr
	default:
		if path == s.logPath && s.logOut != nil {
			w = s.logOut
			break
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return fmt.Errorf("access log: %w", err)
		}
		if s.logOut != nil {
			old := s.logOut
			time.AfterFunc(5*time.Second, func() { _ = old.Close() })
		}
		s.logOut, s.logPath, w = f, path, f
	}
	l, err := accesslog.New(w, cfg.AccessLog.Format)
	if err != nil {
		return err
	}
	snap.log = l
	return nil
}

// memoryLimit is the Go soft memory limit edged sets for a cache budget
// unless GOMEMLIMIT is set: a backstop at 1.5 × the budget + 128 MiB, high
// enough above the live heap (cache, connections, buffers) that the
// collector never has to run continuously to stay under it.
func memoryLimit(maxSize int64) int64 { return maxSize + maxSize/2 + 128<<20 }

// tuneGC makes the collector keep the heap near the live cache: GOGC=50
// (unless GOGC is set) lets garbage reach half the live heap instead of
// all of it, and the soft limit caps the rest.
func tuneGC(maxSize int64) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercentMin) // gcTuner raises it for a small heap
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit(maxSize))
	}
}

// Start binds every listener and serves.
func (s *Service) Start(ctx context.Context) error {
	cfg := s.cfg.Load()
	tuneGC(int64(cfg.Cache.MaxSize))
	if os.Getenv("GOGC") == "" {
		gctx, cancel := context.WithCancel(context.Background())
		s.gcStop, s.gcDone = cancel, make(chan struct{})
		go func() {
			defer close(s.gcDone)
			gcTuner(gctx, func() int64 { return int64(s.cfg.Load().Cache.MaxSize) })
		}()
	}
	s.srcCtx = ctx
	srcs, _, err := s.openSources(certdDirs(cfg), nil)
	if err != nil {
		return err
	}
	s.sources.Store(srcs)
	var listeners []*edgeListener
	for _, lc := range cfg.Listeners {
		l, err := s.newListener(cfg, lc)
		if err != nil {
			s.closeUnserved(listeners)
			return err
		}
		listeners = append(listeners, l)
	}
	s.swapListeners(listeners, 0) // nothing runs yet: all are served
	s.started.Store(true)
	return nil
}

func certdDirs(cfg *Config) []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range cfg.Listeners {
		if l.TLS != nil && l.TLS.CertdDir != "" && !seen[l.TLS.CertdDir] {
			seen[l.TLS.CertdDir] = true
			out = append(out, l.TLS.CertdDir)
		}
	}
	return out
}

// waitCtx waits for wg or ctx, whichever ends first.
func waitCtx(ctx context.Context, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Reload swaps in a new config. Listeners whose settings (address, TLS on
// or off, timeouts, header limit, http2) changed get new servers on their
// sockets, new ones are bound and removed ones drained; the rest keep
// serving. Added certd_dir folders are read before the swap, removed ones
// stop being read after it.
func (s *Service) Reload(_ context.Context, cfg *Config) error {
	old := s.cfg.Load()
	snap, err := build(cfg, s.m)
	if err != nil {
		return err
	}
	certs, err := loadCerts(cfg)
	if err != nil {
		return err
	}
	srcs, added, err := s.openSources(certdDirs(cfg), s.sources.Load())
	if err != nil {
		return err
	}
	next, err := s.relisten(cfg)
	if err != nil {
		closeSources(added)
		return err
	}
	if err := s.setAccessLog(cfg, snap); err != nil {
		closeSources(added)
		s.closeUnserved(next)
		return err
	}
	if cfg.Cache.MaxSize != old.Cache.MaxSize {
		s.store.SetMaxBytes(int64(cfg.Cache.MaxSize))
		tuneGC(int64(cfg.Cache.MaxSize))
	}
	prev := s.h.snap.Swap(snap)
	s.certs.Store(certs)
	oldSrcs := s.sources.Swap(srcs)
	s.cfg.Store(cfg)
	s.swapListeners(next, cfg.Shutdown.Grace.D())
	s.forgetRemoved(prev, snap)
	closeSources(oldSrcs.unlike(srcs))
	return nil
}

// certSources are the certd storage folders being read, in config order.
// A reload builds a new value, keeping the Sources of folders it still
// names; readers load the current one.
type certSources struct {
	list  []*certsource.Source
	byDir map[string]*certsource.Source
}

// certSources returns the Sources being read now.
func (s *Service) certSources() []*certsource.Source {
	if cs := s.sources.Load(); cs != nil {
		return cs.list
	}
	return nil
}

// openSources returns the Sources for dirs: cur's for the folders it
// already reads, new started ones (also returned as added) for the rest.
// On an error, the ones it started are closed again.
func (s *Service) openSources(dirs []string, cur *certSources) (next *certSources, added []*certsource.Source, err error) {
	next = &certSources{byDir: map[string]*certsource.Source{}}
	for _, dir := range dirs {
		src := cur.get(dir)
		if src == nil {
			src, err = certsource.New(certsource.Options{Dir: dir, Logger: s.log.With("component", "certsource"),
				Registerer: s.deps.Registry, Namespace: "edgestack_edged"})
			if err != nil {
				closeSources(added)
				return nil, nil, fmt.Errorf("edge: certd_dir %s: %w", dir, err)
			}
			src.Start(s.srcCtx)
			added = append(added, src)
		}
		next.list = append(next.list, src)
		next.byDir[dir] = src
	}
	return next, added, nil
}

func (cs *certSources) get(dir string) *certsource.Source {
	if cs == nil {
		return nil
	}
	return cs.byDir[dir]
}

// unlike returns cs's Sources that next does not keep.
func (cs *certSources) unlike(next *certSources) []*certsource.Source {
	if cs == nil {
		return nil
	}
	var out []*certsource.Source
	for _, src := range cs.list {
		if !slices.Contains(next.list, src) {
			out = append(out, src)
		}
	}
	return out
}

func closeSources(srcs []*certsource.Source) {
	for _, src := range srcs {
		src.Close()
	}
}

// forgetRemoved deletes metric series of removed distributions and idles
// the old origins' connection pools.
func (s *Service) forgetRemoved(prev, next *snapshot) {
	keep := map[string]bool{}
	for _, d := range next.dists {
		keep[d.name] = true
	}
	for _, d := range prev.dists {
		if !keep[d.name] {
			s.m.requests.DeletePartialMatch(prometheus.Labels{"distribution": d.name})
			s.m.bytes.DeleteLabelValues(d.name)
			s.m.originDur.DeletePartialMatch(prometheus.Labels{"distribution": d.name})
			s.m.originErr.DeletePartialMatch(prometheus.Labels{"distribution": d.name})
		}
	}
	for _, o := range prev.origins {
		if in, ok := o.(*instrumented); ok {
			o = in.Origin
		}
		if c, ok := o.(interface{ CloseIdle() }); ok {
			c.CloseIdle()
		}
	}
}

// Shutdown drains viewer connections until ctx ends, then closes.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	listeners := s.listeners
	s.mu.Unlock()
	errs := make([]error, len(listeners))
	var wg sync.WaitGroup
	for i, l := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.stop(ctx)
		}()
	}
	wg.Wait()
	waitCtx(ctx, &s.wg)
	if s.gcStop != nil {
		s.gcStop()
		<-s.gcDone
	}
	s.h.bgCancel()
	s.h.bg.Wait()
	closeSources(s.certSources())
	s.store.Close()
	s.mu.Lock()
	if s.logOut != nil {
		_ = s.logOut.Close()
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// h2Server is the HTTP/2 server of one TLS listener: handler serves every
// request; fresh hits (Handler.ServeInline) are answered on the
// connection's own goroutine.
func (s *Service) h2Server(cfg *Config, handler http.Handler) *h2.Server {
	return &h2.Server{
		Handler: handler,
		Inline: func(w http.ResponseWriter, r *http.Request) bool {
			if httpguard.Marked(r.Header) || (strings.HasPrefix(r.URL.Path, acmePrefix) && len(s.certSources()) > 0) {
				return false
			}
			return s.h.ServeInline(w, r)
		},
		MaxConcurrentStreams: cfg.HTTP2.MaxConcurrentStreams,
		MaxHeaderBytes:       int(cfg.Limits.MaxHeaderBytes),
		IdleTimeout:          cfg.Timeouts.Idle.D(),
		ReadTimeout:          cfg.Timeouts.ReadHeader.D(),
		BodyTimeout:          cfg.Timeouts.Read.D(),
		WriteTimeout:         cfg.Timeouts.Write.D(),
		ExtendedConnect:      true, // WebSockets over HTTP/2 (upgrade.go)
		Logger:               s.log.With("component", "h2"),
	}
}

// certSet holds the static certificates by name.
type certSet struct {
	byName map[string]*tls.Certificate
	first  *tls.Certificate
}

func loadCerts(cfg *Config) (*certSet, error) {
	cs := &certSet{byName: map[string]*tls.Certificate{}}
	for _, l := range cfg.Listeners {
		if l.TLS == nil {
			continue
		}
		for _, p := range l.TLS.Certificates {
			c, err := loadPair(p)
			if err != nil {
				return nil, err
			}
			leaf := c.Leaf
			if leaf == nil && len(c.Certificate) > 0 {
				leaf, _ = x509.ParseCertificate(c.Certificate[0])
			}
			cp := c
			if cs.first == nil {
				cs.first = &cp
			}
			if leaf != nil {
				for _, n := range leaf.DNSNames {
					cs.byName[strings.ToLower(n)] = &cp
				}
			}
		}
	}
	return cs, nil
}

func (s *Service) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	cs := s.certs.Load()
	if c, ok := cs.byName[name]; ok {
		return c, nil
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c, ok := cs.byName["*"+name[i:]]; ok {
			return c, nil
		}
	}
	for _, src := range s.certSources() {
		if c, err := src.GetCertificate(hello); err == nil && c != nil {
			return c, nil
		}
	}
	if cs.first != nil {
		return cs.first, nil
	}
	return nil, fmt.Errorf("edge: no certificate for %q", hello.ServerName)
}
