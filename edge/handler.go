package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	"github.com/edgestack/edgestack/internal/accesslog"
	"golang.org/x/net/http/httpguts"
)

// Handler is the edge's viewer-facing HTTP handler.
type Handler struct {
	snap  atomic.Pointer[snapshot]
	store *cache.Store
	m     *metrics
	log   *slog.Logger

	mu     sync.Mutex
	flight map[string]*call

	// sends picks how large hits with a sendfile copy are sent, from what
	// each way has cost; it outlives reloads.
	sends *sendChoice

	// bg tracks background revalidations so Shutdown can wait for them.
	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

// newHandler builds a handler over store.
func newHandler(store *cache.Store, m *metrics, log *slog.Logger) *Handler {
	h := &Handler{store: store, m: m, log: log, flight: map[string]*call{}, sends: newSendChoice(processCPU, time.Now)}
	h.bgCtx, h.bgCancel = context.WithCancel(context.Background())
	return h
}

// reqState is what one viewer request carries through the handler.
type reqState struct {
	r      *http.Request
	s      *snapshot
	b      *behavior
	client netip.Addr
	key    string
	query  string // forwarded query
	now    time.Time
	status int // cache status
	// upstream leg, for the access log
	upAddr   string
	upStatus int
	upDur    time.Duration
	upBytes  int64
	bytes    int64
	code     int
	depth    int // error-page recursion guard
	// inlineOnly: answer only what needs no origin (ServeInline);
	// declined says the request was left unanswered for that reason.
	inlineOnly, declined bool
}

// ServeHTTP serves one viewer request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.snap.Load()
	st := reqState{r: r, s: s, now: time.Now()}
	h.serve(w, &st)
	if s.log != nil {
		h.accessLog(&st)
	}
}

// ServeInline answers r when that needs no origin request — a fresh or
// stale-while-revalidate hit, a refusal, a redirect — and reports whether
// it did; otherwise it writes nothing and returns false. The HTTP/2
// server (internal/h2) offers it each body-less request on the
// connection's own goroutine before starting one for the request.
func (h *Handler) ServeInline(w http.ResponseWriter, r *http.Request) bool {
	s := h.snap.Load()
	st := reqState{r: r, s: s, now: time.Now(), inlineOnly: true}
	h.serve(w, &st)
	if st.declined {
		return false
	}
	if s.log != nil {
		h.accessLog(&st)
	}
	return true
}

func (h *Handler) serve(w http.ResponseWriter, st *reqState) {
	r, s := st.r, st.s
	if len(r.RequestURI) > s.maxURL {
		h.refuse(w, st, nil, http.StatusRequestURITooLong, "request target longer than limits.max_url_length")
		return
	}
	d := s.lookup(r.Host)
	if d == nil {
		h.refuse(w, st, nil, http.StatusNotFound, "no distribution serves host "+strconv.Quote(r.Host))
		return
	}
	if len(d.allow) > 0 || len(d.deny) > 0 || len(s.trusted) > 0 {
		st.client = s.viewerAddr(r)
		if !d.permitted(st.client) {
			h.refuse(w, st, d, http.StatusForbidden, "access denied for this client address")
			return
		}
	}
	b := d.behavior(r.URL.Path)
	st.b = b
	ws := isWebSocket(r)
	method := r.Method
	if ws {
		method = http.MethodGet // over HTTP/2 a CONNECT (RFC 8441): to behaviors, the GET it is over HTTP/1.1
	}
	if r.TLS == nil && b.viewer != vpAllow {
		if b.viewer == vpHTTPSOnly || (method != http.MethodGet && method != http.MethodHead) {
			h.refuse(w, st, d, http.StatusForbidden, "this content is only served over HTTPS")
			return
		}
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		w.Header().Set("Location", "https://"+host+r.URL.RequestURI())
		st.status, st.code = stRedirect, http.StatusMovedPermanently
		d.counters[stRedirect].Inc()
		w.WriteHeader(http.StatusMovedPermanently)
		return
	}
	if !b.allows(method) {
		w.Header().Set("Allow", b.allowHdr)
		h.refuse(w, st, d, http.StatusMethodNotAllowed, "method not allowed by this cache behavior")
		return
	}
	if b.signed {
		if !st.client.IsValid() {
			st.client = s.viewerAddr(r)
		}
		q, ok := s.verifySigned(r, st.client, st.now)
		if !ok {
			h.refuse(w, st, d, http.StatusForbidden, "missing, invalid or expired URL signature")
			return
		}
		r2 := *r
		u := *r.URL
		u.RawQuery = q
		r2.URL = &u
		st.r = &r2
		r = &r2
	}
	if ws {
		if st.inlineOnly {
			st.declined = true
			return
		}
		h.upgrade(w, st)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if st.inlineOnly {
			st.declined = true
			return
		}
		h.pass(w, st, true)
		return
	}
	st.key, st.query = b.cacheKey(r)
	h.cached(w, st)
}

// refuse answers with a short text reason.
func (h *Handler) refuse(w http.ResponseWriter, st *reqState, d *dist, code int, reason string) {
	st.status, st.code = stDenied, code
	if code >= 500 || code == http.StatusRequestURITooLong || code == http.StatusNotFound {
		st.status = stError
	}
	if d != nil {
		d.counters[st.status].Inc()
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header()["X-Cache"] = xcache[st.status]
	w.WriteHeader(code)
	n, _ := fmt.Fprintf(w, "%d %s: %s\n", code, http.StatusText(code), reason)
	st.bytes = int64(n)
}

func (h *Handler) accessLog(st *reqState) {
	e := h.logEntry(st)
	st.s.log.Log(&e)
}

// logEntry is st's access log entry.
func (h *Handler) logEntry(st *reqState) accesslog.Entry {
	r := st.r
	e := accesslog.Entry{
		Time: st.now, Method: r.Method, URI: r.RequestURI, Proto: r.Proto, Host: r.Host,
		Status: st.code, Bytes: st.bytes, Duration: time.Since(st.now),
		Referer: r.Referer(), UserAgent: r.UserAgent(),
		UpstreamAddr: st.upAddr, UpstreamStatus: st.upStatus, UpstreamBytes: st.upBytes, UpstreamDuration: st.upDur,
		Cache: statusNames[st.status],
	}
	if st.client.IsValid() {
		e.Remote = st.client.String()
	} else {
		e.Remote = peerAddr(r).String()
	}
	if st.b != nil {
		e.Route = st.b.name
	}
	return e
}

// cached serves a GET or HEAD through the cache.
func (h *Handler) cached(w http.ResponseWriter, st *reqState) {
	e, key2 := h.lookup(st.key, st.r)
	if st.inlineOnly && !h.deliverable(st, e) {
		st.declined = true
		return
	}
	if e != nil && !e.HitForMiss {
		switch age, use := usable(e, st.now); use {
		case useFresh:
			st.status = stHit
			h.deliver(w, st, e, key2, age)
		case useStale:
			st.status = stStale
			h.revalidateAsync(st, key2, e)
			h.deliver(w, st, e, key2, age)
		default:
			h.fetchAndServe(w, st, e, key2)
		}
		return
	}
	if e != nil && isTooLarge(e) {
		h.passLarge(w, st, e)
		return
	}
	// A miss, or a hit-for-miss marker (fetched without coalescing).
	h.fetchAndServe(w, st, e, key2)
}

// deliverable says whether cached serves e without an origin request: a
// fresh hit, or a stale one within stale-while-revalidate (revalidated in
// the background), with no custom error page to fetch.
func (h *Handler) deliverable(st *reqState, e *cache.Entry) bool {
	if e == nil || e.HitForMiss {
		return false
	}
	if er, ok := st.b.errors[e.Status]; ok && er.page != "" && e.Status >= 400 {
		return false
	}
	_, use := usable(e, st.now)
	return use != useOrigin
}

// use is how a stored response may answer a request.
type use int

const (
	useOrigin use = iota // stale: revalidate or fetch first
	useFresh             // fresh
	useStale             // stale within stale-while-revalidate (RFC 5861)
)

// usable is e's age at now and how it may be used.
func usable(e *cache.Entry, now time.Time) (time.Duration, use) {
	age := e.Age(now)
	switch {
	case age < e.Fresh:
		return age, useFresh
	case !e.NoStale && age < e.Fresh+e.SWR:
		return age, useStale
	}
	return age, useOrigin
}

// lookup finds the entry for key, resolving a Vary marker to the variant
// for r; it returns the entry and its full key.
func (h *Handler) lookup(key string, r *http.Request) (*cache.Entry, string) {
	e, ok := h.store.Get(key)
	if !ok {
		return nil, key
	}
	if !e.VaryMarker {
		return e, key
	}
	k2 := varyKey(key, e.Vary, r)
	e2, ok := h.store.Get(k2)
	if !ok {
		return nil, k2
	}
	return e2, k2
}

// varyKey appends the request's values of the Vary fields to key.
// Accept-Encoding is left out: the edge never forwards it and keys
// encodings itself.
func varyKey(key string, fields []string, r *http.Request) string {
	var sb strings.Builder
	sb.WriteString(key)
	sb.WriteString("\x00v")
	for _, f := range fields {
		if f == "Accept-Encoding" {
			continue
		}
		sb.WriteByte(0)
		sb.WriteString(f)
		sb.WriteByte('=')
		sb.WriteString(strings.Join(r.Header.Values(f), ","))
	}
	return sb.String()
}

// fetchAndServe fetches (coalesced) and serves the outcome, falling back
// to stale when the origin fails and the entry allows it.
func (h *Handler) fetchAndServe(w http.ResponseWriter, st *reqState, stale *cache.Entry, key2 string) {
	h.serveFill(w, st, stale, key2, h.fill(st, key2, stale))
}

// serveFill serves the outcome of a fill.
func (h *Handler) serveFill(w http.ResponseWriter, st *reqState, stale *cache.Entry, key2 string, res fillResult) {
	switch {
	case res.err != nil:
		if stale != nil && canServeStaleOnError(stale, st.now) {
			st.status = stStale
			h.deliver(w, st, stale, key2, stale.Age(st.now))
			return
		}
		code := http.StatusBadGateway
		var ne net.Error
		if errors.Is(res.err, context.DeadlineExceeded) || (errors.As(res.err, &ne) && ne.Timeout()) {
			code = http.StatusGatewayTimeout
		}
		h.log.Warn("origin fetch failed", "distribution", st.b.d.name, "path", st.r.URL.Path, "err", res.err)
		h.errorResponse(w, st, code, "origin unreachable or failed: "+http.StatusText(code))
		return
	case res.pass:
		h.pass(w, st, false)
		return
	case res.large:
		h.passLarge(w, st, nil)
		return
	case res.grow != nil:
		h.serveGrowing(w, st, res)
		return
	case res.stream != nil:
		// Too large to cache: the origin sent the whole object, so the
		// viewer's Range and conditionals are applied here...
		st.upAddr, st.upDur = res.upAddr, res.upDur
		a := localAnswer(st.r, res.stream, res.have)
		if a.code == http.StatusPartialContent && a.start-res.have > farRange && httpguts.HeaderValuesContainsToken(res.stream.Header["Accept-Ranges"], "bytes") {
			// ...unless the range starts far in and the origin serves
			// ranges: then ask it for the range instead of reading
			// (and dropping) everything before it.
			_ = res.stream.Body.Close()
			h.passLarge(w, st, nil)
			return
		}
		h.stream(w, st, res.stream, a)
		return
	}
	e := res.e
	if e.Status >= 500 && stale != nil && canServeStaleOnError(stale, st.now) {
		st.status = stStale
		h.deliver(w, st, stale, key2, stale.Age(st.now))
		return
	}
	st.status = res.status
	if res.leader {
		st.upAddr, st.upStatus, st.upDur, st.upBytes = res.upAddr, res.upStatus, res.upDur, int64(len(e.Body))
	}
	h.deliver(w, st, e, res.key, e.Age(time.Now()))
}

// farRange is how far into a too-large object a first request's range
// may start before the edge asks the origin for the range rather than
// reading up to it.
const farRange = 1 << 20

func canServeStaleOnError(e *cache.Entry, now time.Time) bool {
	return !e.NoStale && e.Age(now) < e.Fresh+e.SIE
}

// errorResponse sends an edge-generated error, through a custom error
// page when configured.
func (h *Handler) errorResponse(w http.ResponseWriter, st *reqState, code int, reason string) {
	if st.b != nil {
		if er, ok := st.b.errors[code]; ok && er.page != "" && h.errorPage(w, st, er) {
			return
		}
	}
	h.refuse(w, st, st.b.d, code, reason)
	st.status = stError
}
