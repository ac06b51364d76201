package lb

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/certs/certsource"
	"github.com/edgestack/edgestack/internal/accesslog"
	"github.com/edgestack/edgestack/internal/app"
	"github.com/edgestack/edgestack/internal/h2"
	"github.com/edgestack/edgestack/internal/health"
	"github.com/edgestack/edgestack/internal/httpguard"
	"github.com/edgestack/edgestack/internal/sharedsock"
	"github.com/edgestack/edgestack/lb/l4"
	"github.com/edgestack/edgestack/lb/l7"
	"github.com/edgestack/edgestack/lb/rules"
	"github.com/edgestack/edgestack/lb/targetgroup"
	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "edgestack_lbd"

// Service is a running lbd.
type Service struct {
	deps   app.Deps
	log    *slog.Logger
	cfg    atomic.Pointer[Config]
	engine *health.Engine
	unsub  func()
	groups *targetgroup.Manager
	proxy  *l7.Proxy
	l4m    *l4.Metrics
	certs  *certsource.Source
	alog   *accesslog.Logger
	alogF  io.Closer

	active    *prometheus.GaugeVec
	rejected  *prometheus.CounterVec
	httpBytes *prometheus.CounterVec // listener, direction

	socks     sharedsock.Set
	mu        sync.Mutex // serialises Start, Reload, Shutdown
	listeners map[string]*listener
	wg        sync.WaitGroup
	ctx       context.Context
	cancel    context.CancelFunc
}

// listener is one running listener.
type listener struct {
	cfg    ListenerConfig
	key    string // protocol + address: a change needs a new socket
	routes atomic.Pointer[l7.Routes]
	static atomic.Pointer[[]tls.Certificate]
	http   httpServer
	l4     l4.Server
	bound  net.Listener // http(s): the socket, until served
	addr   net.Addr
	fast   bool      // http(s): HTTP/1.1 served by the fast engine
	h2     h2.Config // https: the HTTP/2 server it was built with
}

// httpServer is l7.Server (net/http, HTTP/2) or l7.FastServer.
type httpServer interface {
	Serve(net.Listener) error
	StopAccepting()
	Shutdown(context.Context) error
	Close() error
}

// NewService builds lbd from a valid config.
func NewService(deps app.Deps, cfg *Config) (app.Service[*Config], error) {
	s := &Service{deps: deps, log: deps.Logger.With("component", "lb"), listeners: map[string]*listener{}}
	s.socks.Bind = l4.ListenTCP // SO_REUSEPORT
	s.cfg.Store(cfg)
	reg := deps.Registry
	var err error
	s.engine, err = health.NewEngine(health.Options{Logger: deps.Logger.With("component", "health"), Registerer: reg, Namespace: namespace})
	if err != nil {
		return nil, fmt.Errorf("lb: %w", err)
	}
	s.groups = targetgroup.NewManager(targetgroup.Options{Health: s.engine, Logger: s.log, Namespace: namespace,
		OnDrop: func(t *targetgroup.Target) { s.proxy.DropTarget(t) }})
	if err := reg.Register(s.groups); err != nil {
		return nil, fmt.Errorf("lb: metrics: %w", err)
	}
	s.unsub = s.engine.Subscribe(s.groups)
	m, err := l7.NewMetrics(reg, namespace)
	if err != nil {
		return nil, fmt.Errorf("lb: metrics: %w", err)
	}
	s.proxy = l7.NewProxy(s.log, m)
	if s.l4m, err = l4.NewMetrics(reg, namespace); err != nil {
		return nil, fmt.Errorf("lb: metrics: %w", err)
	}
	s.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "active_connections",
		Help: "Open client connections (UDP: flows) by listener."}, []string{"listener"})
	s.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "desync_rejected_total",
		Help: "HTTP/1.1 requests refused by the desync guard, by listener and reason."}, []string{"listener", "reason"})
	s.httpBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_bytes_total",
		Help: "Bytes read from (in) and written to (out) clients of HTTP(S) listeners, TLS records included."}, []string{"listener", "direction"})
	for _, c := range []prometheus.Collector{s.active, s.rejected, s.httpBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("lb: metrics: %w", err)
		}
	}
	if cfg.CertStore.Dir != "" {
		s.certs, err = certsource.New(certsource.Options{Dir: cfg.CertStore.Dir, Poll: cfg.CertStore.Poll.D(), Logger: deps.Logger.With("component", "certsource"),
			Registerer: reg, Namespace: namespace, DefaultName: cfg.CertStore.DefaultName})
		if err != nil {
			return nil, fmt.Errorf("lb: %w", err)
		}
	}
	if cfg.AccessLog.Format != "" {
		var w io.Writer = os.Stdout
		if f := cfg.AccessLog.File; f != "" && f != "-" {
			fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return nil, fmt.Errorf("lb: access log: %w", err)
			}
			w, s.alogF = fh, fh
		}
		if s.alog, err = accesslog.New(w, cfg.AccessLog.Format); err != nil {
			return nil, fmt.Errorf("lb: access log: %w", err)
		}
	}
	deps.Admin.AddReadiness("listeners", func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ctx == nil {
			return errors.New("not started")
		}
		return nil
	})
	s.registerAPI()
	return s, nil
}

// Start applies the config and binds every listener.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.engine.Start(s.ctx)
	if s.certs != nil {
		s.certs.Start(s.ctx)
	}
	cfg := s.cfg.Load()
	if err := s.groups.Apply(cfg.TargetGroups, cfg.usedGroups()); err != nil {
		return fmt.Errorf("lb: %w", err)
	}
	next, err := s.prepare(cfg)
	if err != nil {
		return err
	}
	s.commit(next)
	return nil
}

// Reload applies a new config without closing unchanged listeners or any
// live connection; on error the old config keeps serving.
func (s *Service) Reload(ctx context.Context, cfg *Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := s.prepare(cfg)
	if err != nil {
		return err
	}
	if err := s.groups.Apply(cfg.TargetGroups, cfg.usedGroups()); err != nil {
		s.closeNew(next)
		return fmt.Errorf("lb: %w", err)
	}
	s.cfg.Store(cfg)
	s.commit(next)
	return nil
}

// prepared is a listener set ready to commit: kept listeners with their
// new settings, and new ones bound but not serving yet.
type prepared struct {
	cfg  *Config
	keep map[string]*listener // name -> running listener to update
	add  map[string]*listener // name -> new, bound
	upd  map[string]ListenerConfig
}

func listenerKey(l ListenerConfig) string {
	return l.Protocol + "/" + l.Listen + "/" + l.TLSMode
}

// prepare binds new listeners and loads certificates; nothing changes yet.
func (s *Service) prepare(cfg *Config) (*prepared, error) {
	p := &prepared{cfg: cfg, keep: map[string]*listener{}, add: map[string]*listener{}, upd: map[string]ListenerConfig{}}
	var errs []error
	groups := cfg.groupConfigs()
	for _, lc := range cfg.Listeners {
		lc = lc.withDefaults()
		certs, err := loadCerts(lc.TLS)
		if err != nil {
			errs = append(errs, fmt.Errorf("listener %q: %w", lc.Name, err))
			continue
		}
		// The engine is fixed when a server is built: a reload that
		// changes it (say a rule now forwards to an http2 group, which
		// the fast engine cannot) gets a new server on the same socket.
		fast := lc.isHTTP() && s.fastEngine(lc, http2Group(groups, lc))
		// So is the HTTP/2 server of an https listener.
		var h2cfg h2.Config
		if lc.Protocol == ProtoHTTPS {
			h2cfg = cfg.HTTP2
		}
		if old := s.listeners[lc.Name]; old != nil && old.key == listenerKey(lc) && old.cfg.MaxConnections == lc.MaxConnections && old.fast == fast && old.h2 == h2cfg {
			p.keep[lc.Name] = old
			p.upd[lc.Name] = lc
			if certs != nil {
				old.static.Store(&certs)
			}
			continue
		}
		l := &listener{cfg: lc, key: listenerKey(lc), fast: fast, h2: h2cfg}
		if certs != nil {
			l.static.Store(&certs)
		}
		if err := s.bind(l); err != nil {
			errs = append(errs, fmt.Errorf("listener %q: %w", lc.Name, err))
			continue
		}
		p.add[lc.Name] = l
	}
	if len(errs) > 0 {
		s.closeNew(p)
		return nil, fmt.Errorf("lb: %w", errors.Join(errs...))
	}
	return p, nil
}

func (s *Service) closeNew(p *prepared) {
	for _, l := range p.add {
		if l.http != nil {
			_ = l.http.Close()
		}
		if l.l4 != nil {
			_ = l.l4.Close()
		}
	}
}

func loadCerts(t TLSConfig) ([]tls.Certificate, error) {
	if len(t.Certificates) == 0 {
		return nil, nil
	}
	out := make([]tls.Certificate, 0, len(t.Certificates))
	for _, cp := range t.Certificates {
		c, err := tls.LoadX509KeyPair(cp.CertFile, cp.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", cp.CertFile, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// commit swaps routes in, starts new listeners and retires old ones.
func (s *Service) commit(p *prepared) {
	for name, l := range p.keep {
		l.cfg = p.upd[name]
		s.publish(l)
	}
	for name, l := range p.add {
		s.publish(l)
		s.serve(l)
		if old := s.listeners[name]; old != nil {
			s.retire(old)
		}
		s.listeners[name] = l
	}
	for name, l := range s.listeners {
		if _, ok := p.keep[name]; ok {
			continue
		}
		if _, ok := p.add[name]; ok {
			continue
		}
		s.retire(l)
		delete(s.listeners, name)
	}
	// Upstreams built for settings no route uses any more (a group's
	// protocol, protocol_version or timeouts changed) lose their idle
	// connections.
	var routes []*l7.Routes
	for _, l := range s.listeners {
		if l.cfg.isHTTP() {
			routes = append(routes, l.routes.Load())
		}
	}
	s.proxy.Prune(routes...)
}

// publish builds the listener's routing snapshot from the current groups.
func (s *Service) publish(l *listener) {
	lc := l.cfg
	if lc.isHTTP() {
		timeout := lc.RequestTimeout.D()
		resolve := func(name string, w int) *l7.GroupRef {
			return s.proxy.Ref(lc.Name, s.groups.Group(name), w, timeout)
		}
		tab := rules.Compile(lc.Rules)
		r := &l7.Routes{Table: tab, Actions: map[*rules.Compiled]*l7.Route{}, RequestTimeout: timeout}
		for _, c := range tab.Rules {
			r.Actions[c] = l7.NewRoute(c.Rule.Action, strconv.Itoa(c.Rule.Priority), resolve)
			s.proxy.CountMatches(r.Actions[c], lc.Name)
		}
		r.Default = l7.NewRoute(*lc.DefaultAction, "default", resolve)
		s.proxy.CountMatches(r.Default, lc.Name)
		l.routes.Store(r)
		return
	}
	if l.l4 != nil {
		l.l4.SetRoutes(s.l4Routes(lc))
	}
}

func (s *Service) l4Routes(lc ListenerConfig) *l4.Routes {
	r := &l4.Routes{Default: s.groups.Group(lc.TargetGroup), ProxyProtocol: lc.ProxyProtocol, IdleTimeout: lc.IdleTimeout.D()}
	for _, sn := range lc.SNI {
		r.SNI = append(r.SNI, l4.SNIRoute{Pattern: sn.Host, Group: s.groups.Group(sn.TargetGroup)})
	}
	return r
}

func (s *Service) tlsConfig(l *listener) *tls.Config {
	var base *tls.Config
	if s.certs != nil {
		base = s.certs.TLSConfig()
	} else {
		base = &tls.Config{NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	}
	useCertd := l.cfg.TLS.Certd && s.certs != nil
	certd := s.certs
	base.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		var static []tls.Certificate
		if p := l.static.Load(); p != nil {
			static = *p
		}
		for i := range static {
			if hello.SupportsCertificate(&static[i]) == nil {
				return &static[i], nil
			}
		}
		if useCertd {
			c, err := certd.GetCertificate(hello)
			if err == nil || len(static) == 0 {
				return c, err
			}
		}
		if len(static) > 0 {
			return &static[0], nil
		}
		return nil, fmt.Errorf("lb: no certificate for %q", hello.ServerName)
	}
	if l.cfg.Protocol != ProtoHTTPS {
		base.NextProtos = nil
	}
	return base
}

// bind opens a listener's socket and builds its server.
func (s *Service) bind(l *listener) error {
	lc := l.cfg
	active := s.active.WithLabelValues(lc.Name)
	switch lc.Protocol {
	case ProtoHTTP, ProtoHTTPS:
		ln, err := s.socks.Listen(lc.Listen)
		if err != nil {
			return err
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		scheme := "http"
		var tcfg *tls.Config
		if lc.Protocol == ProtoHTTPS {
			scheme, tcfg = "https", s.tlsConfig(l)
		}
		lh := &l7.Handler{Proxy: s.proxy, Listener: lc.Name, Scheme: scheme, Port: port, Routes: l.routes.Load}
		var h http.Handler = lh
		if lc.ACMEHTTP01 && s.certs != nil {
			next, certs := h, s.certs
			h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if certs.HTTPChallenge(w, r) {
					return
				}
				next.ServeHTTP(w, r)
			})
		}
		if s.alog != nil {
			h = accessLogged(h, s.alog)
		}
		name := lc.Name
		sopts := l7.ServerOptions{
			IdleTimeout: lc.IdleTimeout.D(), ReadHeaderTimeout: lc.ReadHeaderTimeout.D(), MaxHeaderBytes: lc.MaxHeaderBytes,
			MaxConnections: lc.MaxConnections, TLS: tcfg, Active: active, Logger: s.log.With("listener", name),
			BytesIn: s.httpBytes.WithLabelValues(name, "in"), BytesOut: s.httpBytes.WithLabelValues(name, "out"),
			OnReject:  func(r httpguard.Result) { s.rejected.WithLabelValues(name, r.Reason).Inc() },
			AccessLog: s.alog,
			HTTP2:     l.h2,
		}
		switch {
		case lc.Protocol == ProtoHTTPS && l.fast:
			sopts.Fast = lh // HTTP/1.1 over TLS by the fast engine
			l.http = l7.NewServer(h, sopts)
		case l.fast:
			l.http = l7.NewFastServer(lh, sopts)
		default:
			l.http = l7.NewServer(h, sopts)
		}
		l.addr = ln.Addr()
		l.l4 = nil
		l.bound = ln
		return nil
	case ProtoTCP, ProtoTLS, ProtoUDP:
		var ln net.Listener
		if lc.Protocol != ProtoUDP {
			var err error
			if ln, err = s.socks.Listen(lc.Listen); err != nil {
				return err
			}
		}
		opts := l4.Options{Listener: ln, Name: lc.Name, Protocol: lc.Protocol, Listen: lc.Listen, Passthrough: lc.TLSMode == "passthrough",
			MaxConnections: lc.MaxConnections, Active: active, Metrics: s.l4m, Logger: s.log.With("listener", lc.Name), AccessLog: s.alog}
		if lc.Protocol == ProtoTLS && lc.TLSMode == "terminate" {
			opts.TLS = s.tlsConfig(l)
		}
		srv, err := l4.Listen(opts)
		if err != nil {
			return err
		}
		l.l4 = srv
		l.addr = srv.Addr()
		return nil
	}
	return fmt.Errorf("unknown protocol %q", lc.Protocol)
}

// fastEngine reports whether a listener's HTTP/1.1 connections use the
// fast engine (plain http, and HTTP/1.1 over TLS on https listeners): by
// default, unless the listener answers ACME HTTP-01 challenges (an
// http.Handler from certsource) or forwards to h2Group, a group speaking
// HTTP/2 to its targets (""; the fast engine only relays HTTP/1.1, and
// Validate rejects engine: fast with such a group). HTTP/2 always uses
// net/http's server.
func (s *Service) fastEngine(lc ListenerConfig, h2Group string) bool {
	switch lc.Engine {
	case "std":
		return false
	case "fast":
		return true
	}
	if h2Group != "" {
		return false
	}
	if lc.Engine == "" && testEngine != "" {
		return testEngine == "fast"
	}
	return !lc.ACMEHTTP01
}

// testEngine overrides the default engine in tests ("" in production).
var testEngine string

// serve starts serving a bound listener.
func (s *Service) serve(l *listener) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var err error
		if l.http != nil {
			err = l.http.Serve(l.bound)
		} else {
			err = l.l4.Serve()
		}
		if err != nil {
			s.deps.Fail(fmt.Errorf("lb: listener %q: %w", l.cfg.Name, err))
		}
	}()
	s.log.Info("listening", "listener", l.cfg.Name, "protocol", l.cfg.Protocol, "addr", l.addr.String())
}

// retire stops a listener that left the config, letting its connections
// finish within the shutdown grace period.
func (s *Service) retire(l *listener) {
	grace := s.cfg.Load().Shutdown.Grace.D()
	if l.http != nil {
		// Now, not in the goroutine: once the reload returns, new
		// connections must reach the server built for the new config.
		l.http.StopAccepting()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if l.http != nil {
			_ = l.http.Shutdown(ctx)
		} else {
			_ = l.l4.Shutdown(ctx)
		}
		s.log.Info("listener stopped", "listener", l.cfg.Name)
	}()
}

// Shutdown stops every listener, letting in-flight work finish until ctx
// ends.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	var wg sync.WaitGroup
	for _, l := range s.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l.http != nil {
				_ = l.http.Shutdown(ctx)
			} else if l.l4 != nil {
				_ = l.l4.Shutdown(ctx)
			}
		}()
	}
	s.mu.Unlock()
	wg.Wait()
	s.wg.Wait()
	s.unsub()
	s.groups.Close()
	s.engine.Close()
	if s.certs != nil {
		s.certs.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.proxy.Close()
	if s.alogF != nil {
		_ = s.alogF.Close()
	}
	return nil
}

// Addr returns the bound address of a listener (tests use port 0).
func (s *Service) Addr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.listeners[name]; l != nil {
		return l.addr
	}
	return nil
}

// Groups exposes the target groups (tests, API).
func (s *Service) Groups() *targetgroup.Manager { return s.groups }

// accessLogged writes an access-log entry per request.
func accessLogged(next http.Handler, log *accesslog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		li := &l7.LogInfo{}
		next.ServeHTTP(rec, l7.WithLogInfo(r, li))
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		log.Log(&accesslog.Entry{Time: start, Remote: host, Method: r.Method, URI: r.RequestURI, Proto: r.Proto, Host: r.Host,
			Status: rec.status, Bytes: rec.bytes, Duration: time.Since(start), Referer: r.Referer(), UserAgent: r.UserAgent(),
			UpstreamAddr: li.Target, UpstreamStatus: li.UpstreamStatus, UpstreamDuration: li.UpstreamDuration, Route: li.Route})
	})
}

// recorder captures the status and size of a response; it keeps
// Flusher and Hijacker (WebSockets) working.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
