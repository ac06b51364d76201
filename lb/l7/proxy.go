// Package l7 is lbd's HTTP data plane: a listener's handler matches the
// request against the listener's rules (a snapshot swapped atomically on
// reload), then forwards it to a target of the chosen group over pooled
// connections (X-Forwarded-*, stickiness, retries of idempotent requests
// on another target when a connection fails, passive health), redirects,
// or answers with a fixed response. WebSocket upgrades pass through.
package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgestack/edgestack/internal/connpool"
	"github.com/edgestack/edgestack/internal/h2client"
	"github.com/edgestack/edgestack/lb/rules"
	"github.com/edgestack/edgestack/lb/targetgroup"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"
)

// Kind of a route's action.
type Kind uint8

// Route kinds.
const (
	KindForward Kind = iota
	KindRedirect
	KindFixed
)

// Route is a compiled action: what a matched rule (or the default) does.
type Route struct {
	Kind Kind
	Rule string // "default" or the priority, for logs
	// Matches counts requests routed here (set by CountMatches).
	matches  prometheus.Counter
	Groups   []*GroupRef
	total    int
	Redirect *rules.Redirect
	Fixed    *rules.FixedResponse
	fixedCT  string
}

// GroupRef is a target group as a route uses it, with what was resolved
// for it when the snapshot was built.
type GroupRef struct {
	Group   *targetgroup.Group
	Weight  int
	up      *upstream
	codes   [6]prometheus.Counter // requests_total by code class (index 0: error)
	latency prometheus.Observer
}

// Routes is one listener's routing snapshot.
type Routes struct {
	Table   *rules.Table
	Actions map[*rules.Compiled]*Route
	Default *Route
	// RequestTimeout bounds the wait for a target's response headers.
	RequestTimeout time.Duration
}

// Metrics are the L7 collectors, registered once per process.
type Metrics struct {
	Requests *prometheus.CounterVec   // listener, target_group, code_class
	Duration *prometheus.HistogramVec // listener: end to end
	Latency  *prometheus.HistogramVec // target_group
	Retries  *prometheus.CounterVec   // target_group
	Rules    *prometheus.CounterVec   // listener, rule
}

// NewMetrics creates and registers the L7 metrics.
func NewMetrics(reg prometheus.Registerer, ns string) (*Metrics, error) {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
			Help: "HTTP requests by listener, target group (\"\" for redirects and fixed responses) and status class (1xx..5xx, or error when no response was sent)."},
			[]string{"listener", "target_group", "code_class"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "request_duration_seconds",
			Help:    "Time from reading a request head to the end of the response, by listener (WebSockets: the whole session).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}},
			[]string{"listener"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "upstream_latency_seconds",
			Help:    "Time from sending a request to a target until its response headers arrived, by target group.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}},
			[]string{"target_group"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "retries_total",
			Help: "Requests retried on another target after a connection failure, by target group."},
			[]string{"target_group"}),
	}
	m.Rules = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rule_matches_total",
		Help: "Requests by the rule that matched them (its priority, or \"default\"), by listener."},
		[]string{"listener", "rule"})
	for _, c := range []prometheus.Collector{m.Requests, m.Duration, m.Latency, m.Retries, m.Rules} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var codeClasses = [6]string{"error", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Proxy holds what listeners share: upstream transports (connection
// pools) and metrics.
type Proxy struct {
	log     *slog.Logger
	metrics *Metrics
	mu      sync.Mutex
	ups     map[upKey]*upstream
	bufs    sync.Pool
	pools   sync.Map // poolKey -> *connpool.Pool (fast engine)
}

type upKey struct {
	https, insecure bool
	version         string        // protocol_version: http1, http2 or grpc
	timeout         time.Duration // response head
	connect         time.Duration // TCP connect (+ TLS handshake)
}

// upstream is one transport and the reverse proxy using it.
type upstream struct {
	tr     *http.Transport // http1 groups
	h2     *h2ByTarget     // http2 and grpc groups (h2.go): HTTP/2 only
	grpc   bool
	tls    *tls.Config // https groups
	rp     *httputil.ReverseProxy
	dialer *net.Dialer
	dialFn func(addr string) (net.Conn, error) // u.dial, bound once
}

func (u *upstream) closeIdle() {
	if u.tr != nil {
		u.tr.CloseIdleConnections()
	}
	if u.h2 != nil {
		u.h2.CloseIdleConnections()
	}
}

// NewProxy returns a proxy.
func NewProxy(log *slog.Logger, m *Metrics) *Proxy {
	p := &Proxy{log: log, metrics: m, ups: map[upKey]*upstream{}}
	p.bufs.New = func() any { b := make([]byte, 32<<10); return &b }
	return p
}

// Get implements httputil.BufferPool.
func (p *Proxy) Get() []byte { return *(p.bufs.Get().(*[]byte)) }

// Put implements httputil.BufferPool.
func (p *Proxy) Put(b []byte) { p.bufs.Put(&b) }

// Close closes idle upstream connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.ups {
		u.closeIdle()
	}
	p.pools.Range(func(k, v any) bool {
		v.(*connpool.Pool).CloseIdle()
		p.pools.Delete(k)
		return true
	})
}

// Ref resolves a group for a listener's routes.
func (p *Proxy) Ref(listener string, g *targetgroup.Group, weight int, timeout time.Duration) *GroupRef {
	cfg := g.Config()
	k := upKey{https: cfg.Protocol == targetgroup.ProtoHTTPS, insecure: cfg.InsecureSkipVerify, version: cfg.ProtocolVersion,
		timeout: timeout, connect: cfg.ConnectTimeout.D()}
	if k.version == targetgroup.VersionGRPC {
		// A streaming RPC may send its response headers only after the
		// client's stream ends, and run for hours: request_timeout does
		// not apply. Deadlines are the client's (grpc-timeout, enforced
		// by the target); a dead target connection fails its streams
		// through HTTP/2 PINGs (h2.go).
		k.timeout = 0
	}
	ref := &GroupRef{Group: g, Weight: weight, up: p.upstream(k)}
	for i, c := range codeClasses {
		ref.codes[i] = p.metrics.Requests.WithLabelValues(listener, g.Name, c)
	}
	ref.latency = p.metrics.Latency.WithLabelValues(g.Name)
	return ref
}

// CountMatches makes the route count its requests in rule_matches_total.
func (p *Proxy) CountMatches(r *Route, listener string) {
	r.matches = p.metrics.Rules.WithLabelValues(listener, r.Rule)
}

func (r *Route) count() {
	if r.matches != nil {
		r.matches.Inc()
	}
}

// NewRoute compiles an action; resolve returns the GroupRef of a group.
func NewRoute(a rules.Action, rule string, resolve func(name string, weight int) *GroupRef) *Route {
	r := &Route{Rule: rule}
	switch {
	case a.Forward != nil:
		r.Kind = KindForward
		if a.Forward.TargetGroup != "" {
			r.Groups = []*GroupRef{resolve(a.Forward.TargetGroup, 1)}
		}
		for _, wg := range a.Forward.TargetGroups {
			if wg.Weight > 0 {
				r.Groups = append(r.Groups, resolve(wg.Name, wg.Weight))
			}
		}
		for _, g := range r.Groups {
			r.total += g.Weight
		}
	case a.Redirect != nil:
		r.Kind = KindRedirect
		r.Redirect = a.Redirect
	case a.FixedResponse != nil:
		r.Kind = KindFixed
		r.Fixed = a.FixedResponse
		r.fixedCT = a.FixedResponse.ContentType
		if r.fixedCT == "" {
			r.fixedCT = "text/plain; charset=utf-8"
		}
	}
	return r
}

func (p *Proxy) upstream(k upKey) *upstream {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u := p.ups[k]; u != nil {
		return u
	}
	if k.connect <= 0 {
		k.connect = 3 * time.Second
	}
	d := &net.Dialer{Timeout: k.connect, KeepAlive: 30 * time.Second}
	u := &upstream{dialer: d}
	u.dialFn = u.dial
	if k.https {
		u.tls = &tls.Config{InsecureSkipVerify: k.insecure, MinVersion: tls.VersionTLS12}
	}
	var base http.RoundTripper
	if k.version == targetgroup.VersionHTTP2 || k.version == targetgroup.VersionGRPC {
		u.h2 = &h2ByTarget{new: func() *http.Transport { return newH2Transport(d, u.tls, k.connect) }}
		u.grpc = k.version == targetgroup.VersionGRPC
		base = u.h2
		if k.timeout > 0 {
			base = &headerTimeout{rt: u.h2, d: k.timeout}
		}
	} else {
		u.tr = p.h1Transport(k, d, u.tls)
		base = u.tr
	}
	u.rp = &httputil.ReverseProxy{
		Rewrite:        rewrite,
		Transport:      &retrier{base: base, metrics: p.metrics},
		BufferPool:     p,
		ModifyResponse: modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	if u.grpc {
		// Every message as soon as it arrives: streaming RPCs must not
		// wait in a buffer.
		u.rp.FlushInterval = -1
	}
	p.ups[k] = u
	return u
}

// Prune forgets the upstreams that none of routes (every listener's
// current snapshot) uses any more — a reload changed the settings they
// were built for — and closes their idle connections. Requests still in
// flight on them finish normally.
func (p *Proxy) Prune(routes ...*Routes) {
	used := map[*upstream]bool{}
	mark := func(r *Route) {
		for _, g := range r.Groups {
			used[g.up] = true
		}
	}
	for _, rs := range routes {
		if rs == nil {
			continue
		}
		for _, r := range rs.Actions {
			mark(r)
		}
		if rs.Default != nil {
			mark(rs.Default)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, u := range p.ups {
		if !used[u] {
			u.closeIdle()
			delete(p.ups, k)
		}
	}
}

// h1Transport is the HTTP/1.1 transport of http1 groups.
func (p *Proxy) h1Transport(k upKey, d *net.Dialer, tlsConf *tls.Config) *http.Transport {
	return &http.Transport{
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   k.connect,
		MaxIdleConns:          8192,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: k.timeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		WriteBufferSize:       16 << 10,
		ReadBufferSize:        16 << 10,
		TLSClientConfig:       tlsConf.Clone(), // nil for http groups
	}
}

// reqState travels with a forwarded request through the reverse proxy.
type reqState struct {
	ref       *GroupRef
	target    *targetgroup.Target
	tried     []*targetgroup.Target
	scheme    string
	port      string
	code      int
	setCookie bool
	retries   int
	upDur     time.Duration
}

type stateKey struct{}

// LogInfo collects what an access log needs from the net/http engine's
// proxying (the fast engine logs by itself).
type LogInfo struct {
	Route            string
	Target           string
	UpstreamStatus   int
	UpstreamDuration time.Duration
}

type logKey struct{}

// WithLogInfo returns r carrying li for the handler to fill.
func WithLogInfo(r *http.Request, li *LogInfo) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), logKey{}, li))
}

func stateOf(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	return st
}

func rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In.Context())
	if st.ref.up.tls != nil {
		pr.Out.URL.Scheme = "https"
	} else {
		pr.Out.URL.Scheme = "http"
	}
	pr.Out.URL.Host = st.target.Addr
	pr.Out.Host = pr.In.Host
	// Append to the client's X-Forwarded-For (ALB's default "append"
	// mode); Proto, Port and Host are always ours.
	if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
		pr.Out.Header["X-Forwarded-For"] = prior
	}
	pr.SetXForwarded()
	pr.Out.Header["X-Forwarded-Port"] = []string{st.port}
	if st.scheme != "" {
		pr.Out.Header["X-Forwarded-Proto"] = []string{st.scheme}
	}
}

func modifyResponse(resp *http.Response) error {
	st := stateOf(resp.Request.Context())
	st.code = resp.StatusCode
	if st.ref.up.h2 != nil && len(resp.Trailer) > 0 {
		// An HTTP/2 target may send a length and trailers (Go's server
		// does for short answers); HTTP/1.1 clients get trailers only in
		// a chunked body, so the length goes.
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
	}
	if st.setCookie {
		s := st.ref.Group.Sticky()
		c := &http.Cookie{Name: s.Cookie, Value: st.target.ID, Path: "/", MaxAge: int(s.Duration.D() / time.Second), HttpOnly: true}
		resp.Header.Add("Set-Cookie", c.String())
	}
	return nil
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st := stateOf(r.Context())
	code := http.StatusBadGateway
	reason := "target connection failed"
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nothing to answer.
		st.code = 0
		return
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		code, reason = http.StatusGatewayTimeout, "target did not answer in time"
	case errors.Is(err, h2client.ErrNoH2):
		reason = "target did not negotiate HTTP/2 (ALPN h2), which the target group's protocol_version needs"
	}
	st.code = code
	p.log.Debug("forward failed", "target_group", st.ref.Group.Name, "target", st.target.Addr, "err", err)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, strconv.Itoa(code)+" "+http.StatusText(code)+": "+reason+"\n")
}

// retrier sends a request to the chosen target and, when the connection
// fails before a response, retries an idempotent request on another
// target of the group. It also keeps the target's in-flight count and
// passive health.
type retrier struct {
	base    http.RoundTripper
	metrics *Metrics
}

const maxRetries = 2

func (t *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateOf(req.Context())
	for {
		release := st.target.Acquire()
		start := time.Now()
		resp, err := t.base.RoundTrip(req)
		if err == nil {
			st.upDur = time.Since(start)
			st.ref.latency.Observe(st.upDur.Seconds())
			st.target.Report(resp.StatusCode < 500)
			if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
				resp.Body = &releaseRWC{ReadWriteCloser: rwc, release: release}
			} else {
				resp.Body = &releaseBody{ReadCloser: resp.Body, release: release}
			}
			return resp, nil
		}
		release()
		if req.Context().Err() != nil {
			return nil, err
		}
		st.target.Report(false)
		if st.retries >= maxRetries || !retryable(req, err) {
			return nil, err
		}
		st.tried = append(st.tried, st.target)
		next := st.ref.Group.Pick(st.tried)
		if next == nil {
			return nil, err
		}
		st.retries++
		t.metrics.Retries.WithLabelValues(st.ref.Group.Name).Inc()
		st.target = next
		st.setCookie = st.setCookie || st.ref.Group.Sticky().Enabled
		req.URL.Host = next.Addr
		if req.Body != nil && req.Body != http.NoBody && req.GetBody != nil {
			b, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req.Body = b
		}
	}
}

// retryable: an idempotent request without a body that cannot be replayed,
// and a failure that happened before the target could have acted on it.
func retryable(req *http.Request, err error) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
	default:
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	if req.Header.Get("Upgrade") != "" {
		return false
	}
	// A failed or timed-out connect never reached the target.
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.EPIPE)
}

type releaseBody struct {
	io.ReadCloser
	release func()
	done    atomic.Bool
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	if !b.done.Swap(true) {
		b.release()
	}
	return err
}

type releaseRWC struct {
	io.ReadWriteCloser
	release func()
	done    atomic.Bool
}

func (b *releaseRWC) Close() error {
	err := b.ReadWriteCloser.Close()
	if !b.done.Swap(true) {
		b.release()
	}
	return err
}

// Handler serves one listener: routes returns its current snapshot.
type Handler struct {
	Proxy    *Proxy
	Listener string
	Scheme   string // "http" or "https"
	Port     string
	Routes   func() *Routes
	noGroup  [6]prometheus.Counter
	duration prometheus.Observer
	initOnce sync.Once
}

func (h *Handler) init() {
	h.duration = h.Proxy.metrics.Duration.WithLabelValues(h.Listener)
	for i, c := range codeClasses {
		h.noGroup[i] = h.Proxy.metrics.Requests.WithLabelValues(h.Listener, "", c)
	}
}

func classOf(code int) int {
	if code < 100 || code > 599 {
		return 0
	}
	return code / 100
}

// ServeHTTP routes one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.initOnce.Do(h.init)
	start := time.Now()
	defer func() { h.duration.Observe(time.Since(start).Seconds()) }()
	routes := h.Routes()
	if routes == nil {
		http.Error(w, "503 Service Unavailable: listener not configured", http.StatusServiceUnavailable)
		return
	}
	if !httpguts.ValidHeaderFieldName(r.Method) {
		// A method is a token; net/http's HTTP/2 server lets
		// ":method: GET /admin HTTP/1.1" through, which the target's
		// request line must never get.
		http.Error(w, "400 Bad Request: method is not a token", http.StatusBadRequest)
		h.noGroup[classOf(http.StatusBadRequest)].Inc()
		return
	}
	host := r.Host
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	src, _ := netip.ParseAddrPort(r.RemoteAddr)
	req := rules.Request{Host: host, Path: r.URL.Path, Method: r.Method, RawQuery: r.URL.RawQuery, Header: r.Header, Source: src.Addr()}
	route := routes.Default
	if m := routes.Table.Match(&req); m != nil {
		route = routes.Actions[m]
	}
	route.count()
	li, _ := r.Context().Value(logKey{}).(*LogInfo)
	if li != nil {
		li.Route = route.Rule
	}
	switch route.Kind {
	case KindFixed:
		w.Header().Set("Content-Type", route.fixedCT)
		w.Header().Set("Content-Length", strconv.Itoa(len(route.Fixed.Body)))
		w.WriteHeader(route.Fixed.StatusCode)
		_, _ = io.WriteString(w, route.Fixed.Body)
		h.noGroup[classOf(route.Fixed.StatusCode)].Inc()
		return
	case KindRedirect:
		code := route.Redirect.StatusCode
		if code == 0 {
			code = http.StatusMovedPermanently
		}
		http.Redirect(w, r, redirectURL(route.Redirect, r, h.Scheme, h.Port, host), code)
		h.noGroup[classOf(code)].Inc()
		return
	}
	ref := route.Groups[0]
	if len(route.Groups) > 1 {
		x := rand.IntN(route.total)
		for _, g := range route.Groups {
			if x -= g.Weight; x < 0 {
				ref = g
				break
			}
		}
	}
	if ref.up.h2 != nil {
		if why := ref.up.incompatible(r); why != "" {
			// ALB's answer to a request the group's protocol version
			// cannot carry.
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(StatusIncompatibleProtocol)
			_, _ = io.WriteString(w, "464 Incompatible Protocol: "+why+" (target group "+ref.Group.Name+")\n")
			ref.codes[4].Inc()
			return
		}
	}
	st := &reqState{ref: ref, scheme: h.Scheme, port: h.Port}
	g := ref.Group
	if sticky := g.Sticky(); sticky.Enabled {
		if c, err := r.Cookie(sticky.Cookie); err == nil {
			if t := g.ByID(c.Value); t != nil && t.State() == targetgroup.Healthy {
				st.target = t
			}
		}
		if st.target == nil {
			st.setCookie = true
		}
	}
	if st.target == nil {
		st.target = g.Pick(nil)
	}
	if st.target == nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "503 Service Unavailable: target group "+g.Name+" has no registered targets\n")
		ref.codes[5].Inc()
		return
	}
	if r.ProtoMajor == 2 && ref.up.h2 == nil {
		h.forwardPooled(w, r, ref, st, routes.RequestTimeout)
	} else {
		// HTTP/1.x requests, and everything to http2 and grpc groups
		// (HTTP/2 end to end, trailers and streams relayed as they come).
		ref.up.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
	}
	ref.codes[classOf(st.code)].Inc()
	if li != nil {
		li.Target, li.UpstreamStatus, li.UpstreamDuration = st.target.Addr, st.code, st.upDur
	}
}

// redirectURL builds a redirect's Location from its template.
func redirectURL(rd *rules.Redirect, r *http.Request, scheme, port, host string) string {
	return redirectTo(rd, scheme, port, host, r.URL.Path, r.URL.RawQuery)
}

func redirectTo(rd *rules.Redirect, scheme, port, host, reqPath, rawQuery string) string {
	path := strings.TrimPrefix(reqPath, "/")
	repl := strings.NewReplacer("#{protocol}", scheme, "#{host}", host, "#{port}", port, "#{path}", path, "#{query}", rawQuery)
	or := func(v, def string) string {
		if v == "" {
			v = def
		}
		return repl.Replace(v)
	}
	proto := or(rd.Protocol, "#{protocol}")
	h := or(rd.Host, "#{host}")
	p := or(rd.Port, "#{port}")
	if rd.Port == "" && proto != scheme {
		p = "" // a scheme change without a port goes to the scheme's default port
	}
	pa := or(rd.Path, "/#{path}")
	q := or(rd.Query, "#{query}")
	u := proto + "://" + h
	if !(proto == "http" && p == "80") && !(proto == "https" && p == "443") && p != "" {
		u += ":" + p
	}
	u += pa
	if q != "" {
		u += "?" + q
	}
	return u
}
