package l7

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/edgestack/edgestack/internal/accesslog"
	"github.com/edgestack/edgestack/internal/connpool"
	"github.com/edgestack/edgestack/internal/httpguard"
	"github.com/edgestack/edgestack/internal/sockio"
	"github.com/edgestack/edgestack/lb/accept"
	"github.com/edgestack/edgestack/lb/rules"
	"github.com/edgestack/edgestack/lb/targetgroup"
)

// FastServer is lbd's HTTP/1.1 engine for plain-HTTP listeners: one
// goroutine per client connection parses each request head (checked by
// httpguard's classifier), routes it, and relays it over a pooled
// upstream connection without per-request goroutines or hand-offs —
// where net/http plus ReverseProxy spend most of their CPU. It does what
// Handler does (rules, forward with retries, stickiness, redirects, fixed
// responses, X-Forwarded-*, upgrades); HTTPS listeners (HTTP/2) keep the
// net/http Server.
type FastServer struct {
	h    *Handler
	opts ServerOptions

	mu    sync.Mutex
	ln    net.Listener
	conns map[*fconn]struct{}
	quit  atomic.Bool
	wg    sync.WaitGroup
}

type fconn struct {
	c    net.Conn
	idle atomic.Bool
}

// NewFastServer returns the fast engine for h.
func NewFastServer(h *Handler, opts ServerOptions) *FastServer {
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 64 << 10
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 60 * time.Second
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = 10 * time.Second
	}
	return &FastServer{h: h, opts: opts, conns: map[*fconn]struct{}{}}
}

// Serve accepts connections until Shutdown or Close (then it returns nil).
func (s *FastServer) Serve(ln net.Listener) error {
	s.h.initOnce.Do(s.h.init)
	ln = s.opts.limitAndCount(ln)
	s.mu.Lock()
	if s.quit.Load() {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		c, err := accept.Next(ln, s.quit.Load)
		if err != nil {
			return err
		}
		if c == nil {
			return nil
		}
		fc := &fconn{c: c}
		s.mu.Lock()
		if s.quit.Load() {
			s.mu.Unlock()
			_ = c.Close()
			continue
		}
		s.conns[fc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(fc)
			s.mu.Lock()
			delete(s.conns, fc)
			s.mu.Unlock()
		}()
	}
}

// serveExternal serves a connection accepted elsewhere (HTTP/1.1 after a
// TLS handshake) until it ends.
func (s *FastServer) serveExternal(c net.Conn) {
	fc := &fconn{c: c}
	s.mu.Lock()
	if s.quit.Load() {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	s.conns[fc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.serveConn(fc)
	s.mu.Lock()
	delete(s.conns, fc)
	s.mu.Unlock()
}

// Shutdown stops accepting, closes idle connections, lets requests in
// flight finish until ctx ends, then closes the rest.
func (s *FastServer) Shutdown(ctx context.Context) error {
	s.stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	for {
		s.closeConns(true)
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			s.closeConns(false)
			<-done
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close closes everything at once.
func (s *FastServer) Close() error {
	s.stop()
	s.closeConns(false)
	s.wg.Wait()
	return nil
}

// StopAccepting stops taking new connections at once (the ones open are
// left to Shutdown or Close).
func (s *FastServer) StopAccepting() { s.stop() }

func (s *FastServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quit.Swap(true) {
		return
	}
	if s.ln != nil {
		_ = s.ln.Close()
	}
}

func (s *FastServer) closeConns(idleOnly bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for fc := range s.conns {
		if !idleOnly || fc.idle.Load() {
			_ = fc.c.Close()
		}
	}
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

// exchange is the per-connection state reused across its requests.
type exchange struct {
	s        *FastServer
	fc       *fconn
	br       *bufio.Reader
	bw       *bufio.Writer
	head     []byte
	clientIP string
	src      netip.Addr
	deadline time.Time // current deadline of the client connection
	lg       logState
	tried    []*targetgroup.Target
	req      reqHead
	hdr      map[string][]string // built only when rules look at headers
}

// reqHead is a parsed request head (slices into exchange.head or the
// classifier's normalised copy).
type reqHead struct {
	raw                  []byte
	method, uri, version []byte
	host                 []byte
	path, query          []byte
	lines                [][2]int // header lines: [start, end) in raw, CRLF excluded
	xff                  []byte
	connClose            bool
	upgrade              []byte
	te                   []byte // Transfer-Encoding values, joined
	expect100            bool
	absForm              bool      // the URI was absolute-form (proxy style)
	connHdrs             [8][]byte // headers named in Connection
	nConnHdrs            int
	cookie               [][]byte
	chunked              bool
	contentLength        int64
	http10               bool
}

func (s *FastServer) serveConn(fc *fconn) {
	defer fc.c.Close()
	x := &exchange{s: s, fc: fc}
	x.br = readerPool.Get().(*bufio.Reader)
	x.br.Reset(fc.c)
	x.bw = writerPool.Get().(*bufio.Writer)
	x.bw.Reset(fc.c)
	defer func() {
		x.br.Reset(nil)
		readerPool.Put(x.br)
		x.bw.Reset(nil)
		writerPool.Put(x.bw)
	}()
	if ap, err := netip.ParseAddrPort(fc.c.RemoteAddr().String()); err == nil {
		x.src = ap.Addr()
		x.clientIP = x.src.Unmap().String()
	}
	var loop *sockio.Conn // plain connections: requests are waited for in a read loop
	switch c := fc.c.(type) {
	case *countedConn:
		loop = c.raw
	case *sockio.Conn:
		loop = c
	}
	for !s.quit.Load() {
		fc.idle.Store(true)
		x.ensureDeadline()
		if loop != nil {
			end := false
			if err := loop.ReadLoop(func() bool { return x.loopStep(&end) }); err != nil || end {
				return
			}
			// A request the loop leaves to the ordinary path (its head
			// still arriving, a body, an upgrade) is in the buffer now.
		}
		if _, err := x.br.Peek(1); err != nil {
			return
		}
		fc.idle.Store(false)
		if s.quit.Load() {
			return
		}
		if b, _ := x.br.Peek(x.br.Buffered()); !bytes.Contains(b, headEnd) {
			// The head is still arriving: bound how long it may take.
			x.deadline = time.Now().Add(s.opts.ReadHeaderTimeout)
			_ = fc.c.SetReadDeadline(x.deadline)
		}
		if !x.serveOne() {
			return
		}
	}
}

var headEnd = []byte("\r\n\r\n")

// loopStep is serveConn's read-loop step (sockio.ReadLoop): it serves
// the requests whose whole head is buffered and that have no body, and
// returns false to wait for the next. It returns true to leave any other
// request to the ordinary path, and sets end when the connection is done.
// Inside the loop a read that finds nothing returns ErrWouldBlock instead
// of waiting, which is why only requests that need no more input are
// served here.
func (x *exchange) loopStep(end *bool) bool {
	s := x.s
	for {
		if s.quit.Load() {
			*end = true
			return true
		}
		if x.br.Buffered() == 0 {
			if _, err := x.br.Peek(1); err != nil {
				if errors.Is(err, sockio.ErrWouldBlock) {
					return false
				}
				*end = true
				return true
			}
		}
		if b, _ := x.br.Peek(x.br.Buffered()); !wholeBodyless(b) {
			return true
		}
		x.fc.idle.Store(false)
		if s.quit.Load() || !x.serveOne() {
			*end = true
			return true
		}
		x.fc.idle.Store(true)
		x.ensureDeadline()
		if x.br.Buffered() == 0 {
			// Wait for the next request, unless the read of this one
			// may have left bytes in the socket (ReadLoop knows).
			return false
		}
	}
}

// wholeBodyless reports whether b starts with a whole request head
// (after any empty lines, which readHead skips) of a request that has no
// body and is no upgrade or CONNECT: one served without reading more.
// One pass over the head's lines; a bare LF (lines as readHead sees them
// differ) or a tunnel is left to the ordinary path.
func wholeBodyless(b []byte) bool {
	for len(b) >= 2 && b[0] == '\r' && b[1] == '\n' {
		b = b[2:]
	}
	if bytes.HasPrefix(b, []byte("CONNECT ")) {
		return false
	}
	for first := true; ; first = false {
		eol := bytes.IndexByte(b, '\n')
		if eol < 1 || b[eol-1] != '\r' {
			return false // still arriving, or a bare LF
		}
		line := b[:eol-1]
		b = b[eol+1:]
		if len(line) == 0 {
			return !first
		}
		c := bytes.IndexByte(line, ':')
		if first || c <= 0 {
			continue
		}
		switch name := line[:c]; {
		case eqFold(name, "content-length"):
			if v := bytes.TrimSpace(line[c+1:]); len(v) != 1 || v[0] != '0' {
				return false
			}
		case eqFold(name, "transfer-encoding"), eqFold(name, "upgrade"), eqFold(name, "expect"):
			return false
		}
	}
}

// ensureDeadline keeps the client connection's read and write deadline
// at least three quarters of the idle timeout away. Setting a deadline
// costs a runtime timer update, so it is refreshed coarsely rather than
// per request.
func (x *exchange) ensureDeadline() {
	idle := x.s.opts.IdleTimeout
	now := time.Now()
	if rem := x.deadline.Sub(now); rem < idle*3/4 || rem > idle {
		x.deadline = now.Add(idle)
		_ = x.fc.c.SetDeadline(x.deadline)
	}
}

// readHead reads a head (up to and including the empty line) into dst.
func readHead(br *bufio.Reader, dst []byte, max int) ([]byte, error) {
	dst = dst[:0]
	lineStart := 0
	for {
		line, err := br.ReadSlice('\n')
		dst = append(dst, line...)
		if len(dst) > max {
			return dst, errHeadTooLarge
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				continue // a line longer than the buffer: keep reading it
			}
			return dst, err
		}
		full := dst[lineStart:]
		lineStart = len(dst)
		if len(full) <= 2 && (len(full) == 1 || full[0] == '\r') {
			if len(dst) == len(full) {
				dst, lineStart = dst[:0], 0 // tolerate empty lines before a request
				continue
			}
			return dst, nil
		}
	}
}

var errHeadTooLarge = errors.New("head too large")

// serveOne handles one request and logs it; false ends the connection.
func (x *exchange) serveOne() bool {
	log := x.s.opts.AccessLog
	start := time.Now()
	if log == nil {
		ok := x.serveRequest()
		x.s.h.duration.Observe(time.Since(start).Seconds())
		return ok
	}
	x.lg = logState{start: start}
	ok := x.serveRequest()
	x.s.h.duration.Observe(time.Since(start).Seconds())
	r := &x.req
	e := accesslog.Entry{Time: x.lg.start, Remote: x.clientIP, Method: string(r.method), URI: string(r.uri), Proto: string(r.version),
		Host: string(r.host), Status: x.lg.status, Bytes: x.lg.bytes, Duration: time.Since(x.lg.start),
		UpstreamAddr: x.lg.target, UpstreamStatus: x.lg.upStatus, UpstreamDuration: x.lg.upDur, Route: x.lg.route}
	for _, l := range r.lines {
		hl := r.raw[l[0]:l[1]]
		colon := bytes.IndexByte(hl, ':')
		switch {
		case eqFold(hl[:colon], "user-agent"):
			e.UserAgent = string(bytes.TrimSpace(hl[colon+1:]))
		case eqFold(hl[:colon], "referer"):
			e.Referer = string(bytes.TrimSpace(hl[colon+1:]))
		}
	}
	if e.Status != 0 {
		log.Log(&e)
	}
	return ok
}

// logState is what the access log needs from one request.
type logState struct {
	start    time.Time
	status   int
	bytes    int64
	target   string
	upStatus int
	upDur    time.Duration
	route    string
}

// serveRequest handles one request; false ends the connection.
func (x *exchange) serveRequest() bool {
	s := x.s
	var err error
	x.head, err = readHead(x.br, x.head, s.opts.MaxHeaderBytes)
	if err != nil {
		if errors.Is(err, errHeadTooLarge) {
			x.refuse(431, "HeadTooLarge: request head larger than "+strconv.Itoa(s.opts.MaxHeaderBytes)+" bytes")
		} else if len(x.head) > 0 && !errors.Is(err, io.EOF) {
			x.refuse(400, "malformed request head")
		}
		return false
	}
	res := httpguard.ClassifyWith(x.head, httpguard.Limits{})
	if res.Tier >= httpguard.Ambiguous {
		if s.opts.OnReject != nil {
			s.opts.OnReject(res)
		}
		x.refuse(400, res.Reason+": "+res.Message)
		return false
	}
	raw := x.head
	if res.Normalized != nil {
		raw = res.Normalized
	}
	if !x.parse(raw, &res) {
		x.refuse(400, "malformed request head")
		return false
	}
	r := &x.req
	if len(r.host) == 0 && !r.http10 {
		x.refuse(400, "missing Host header")
		return false
	}
	routes := s.h.Routes()
	if routes == nil {
		x.simple(503, "text/plain; charset=utf-8", "503 Service Unavailable: listener not configured\n", nil)
		return false
	}
	host := r.host
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && !bytes.HasSuffix(host, []byte("]")) {
		host = host[:i]
	}
	// Zero-copy strings: Match does not keep them, and the head is not
	// touched until it returns.
	rq := rules.Request{Host: bstr(host), Path: bstr(r.path), Method: bstr(r.method), RawQuery: bstr(r.query), Source: x.src}
	if routes.Table.NeedsHeaders() {
		rq.Header = x.headerMap()
	}
	route := routes.Default
	if m := routes.Table.Match(&rq); m != nil {
		route = routes.Actions[m]
	}
	x.lg.route = route.Rule
	route.count()
	keep := !r.connClose && !r.http10
	switch route.Kind {
	case KindFixed:
		if !x.discardBody() {
			return false
		}
		x.simple(route.Fixed.StatusCode, route.fixedCT, route.Fixed.Body, nil)
		s.h.noGroup[classOf(route.Fixed.StatusCode)].Inc()
		return x.flush() && keep
	case KindRedirect:
		if !x.discardBody() {
			return false
		}
		code := route.Redirect.StatusCode
		if code == 0 {
			code = 301
		}
		loc := redirectTo(route.Redirect, s.h.Scheme, s.h.Port, string(host), string(r.path), string(r.query))
		x.simple(code, "text/html; charset=utf-8", "<a href=\""+htmlEscape(loc)+"\">Moved</a>.\n", []string{"Location", loc})
		s.h.noGroup[classOf(code)].Inc()
		return x.flush() && keep
	}
	return x.forward(route, keep, routes.RequestTimeout)
}

// parse fills x.req from a classified head.
func (x *exchange) parse(raw []byte, res *httpguard.Result) bool {
	r := &x.req
	*r = reqHead{raw: raw, lines: r.lines[:0], cookie: r.cookie[:0], chunked: res.Chunked, contentLength: res.ContentLength}
	eol := bytes.Index(raw, crlf)
	if eol < 0 {
		return false
	}
	line := raw[:eol]
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1 {
		return false
	}
	r.method, r.uri, r.version = line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	r.http10 = string(r.version) == "HTTP/1.0"
	uri := r.uri
	if len(uri) > 0 && uri[0] != '/' && uri[0] != '*' {
		// absolute-form: scheme://host/path
		if i := bytes.Index(uri, []byte("://")); i >= 0 {
			r.absForm = true
			rest := uri[i+3:]
			j := bytes.IndexByte(rest, '/')
			if j < 0 {
				r.host, uri = rest, []byte("/")
			} else {
				r.host, uri = rest[:j], rest[j:]
			}
		}
	}
	if q := bytes.IndexByte(uri, '?'); q >= 0 {
		r.path, r.query = uri[:q], uri[q+1:]
	} else {
		r.path = uri
	}
	off := eol + 2
	hosts := 0
	for off < len(raw)-2 {
		e := bytes.Index(raw[off:], crlf)
		if e <= 0 {
			break
		}
		start, end := off, off+e
		off = end + 2
		hl := raw[start:end]
		colon := bytes.IndexByte(hl, ':')
		if colon <= 0 {
			return false
		}
		name, value := hl[:colon], httpguard.TrimOWS(hl[colon+1:])
		switch {
		case eqFold(name, "host"):
			hosts++
			if hosts > 1 {
				return false // RFC 9112 3.2: more than one Host is a 400
			}
			if !r.absForm {
				r.host = value
			}
		case eqFold(name, "connection"):
			for v := value; len(v) > 0; {
				var tok []byte
				if i := bytes.IndexByte(v, ','); i >= 0 {
					tok, v = bytes.TrimSpace(v[:i]), v[i+1:]
				} else {
					tok, v = bytes.TrimSpace(v), nil
				}
				switch {
				case eqFold(tok, "close"):
					r.connClose = true
				case len(tok) == 0, eqFold(tok, "keep-alive"), eqFold(tok, "upgrade"):
				case r.nConnHdrs < len(r.connHdrs):
					// A header named here concerns this hop only.
					r.connHdrs[r.nConnHdrs] = tok
					r.nConnHdrs++
				}
			}
		case eqFold(name, "upgrade"):
			r.upgrade = value
		case eqFold(name, "expect"):
			if eqFold(value, "100-continue") {
				r.expect100 = true
				continue // answered by lbd itself, not forwarded
			}
		case eqFold(name, "cookie"):
			r.cookie = append(r.cookie, value)
		case eqFold(name, "transfer-encoding"):
			if len(r.te) == 0 {
				r.te = value
			} else {
				r.te = append(append(append([]byte{}, r.te...), ", "...), value...)
			}
		case eqFold(name, "x-forwarded-for"):
			if len(r.xff) == 0 {
				r.xff = value
			} else {
				r.xff = append(append(append([]byte{}, r.xff...), ", "...), value...)
			}
		}
		r.lines = append(r.lines, [2]int{start, end})
	}
	return true
}

func (x *exchange) headerMap() map[string][]string {
	if x.hdr == nil {
		x.hdr = map[string][]string{}
	}
	clear(x.hdr)
	r := &x.req
	for _, l := range r.lines {
		hl := r.raw[l[0]:l[1]]
		colon := bytes.IndexByte(hl, ':')
		k := canonicalKey(hl[:colon])
		x.hdr[k] = append(x.hdr[k], string(httpguard.TrimOWS(hl[colon+1:])))
	}
	return x.hdr
}

// connListed reports whether the Connection header named name.
func (r *reqHead) connListed(name []byte) bool {
	for _, h := range r.connHdrs[:r.nConnHdrs] {
		if bytes.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// hopByHop lists headers that concern one connection only (lower case);
// lbd sets framing and forwarding headers itself.
var hopByHop = map[string]bool{
	"connection": true, "proxy-connection": true, "keep-alive": true, "proxy-authenticate": true,
	"proxy-authorization": true, "te": true, "trailer": true, "transfer-encoding": true, "upgrade": true,
	"content-length": true, "x-forwarded-for": true, "x-forwarded-proto": true, "x-forwarded-port": true,
	"x-forwarded-host": true,
}

func isHop(name []byte) bool {
	if len(name) > 24 {
		return false
	}
	var buf [24]byte
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return hopByHop[string(buf[:len(name)])]
}

// forward relays the request to a target of the route's group.
func (x *exchange) forward(route *Route, keep bool, timeout time.Duration) bool {
	s := x.s
	r := &x.req
	ref := route.Groups[0]
	if len(route.Groups) > 1 {
		n := rand.IntN(route.total)
		for _, g := range route.Groups {
			if n -= g.Weight; n < 0 {
				ref = g
				break
			}
		}
	}
	g := ref.Group
	if ref.up.h2 != nil {
		// Not reached: listeners forwarding to http2 and grpc groups get
		// the net/http engine (lb.Service). Never relay HTTP/1.1 to them.
		_ = x.discardBody()
		x.simple(502, "text/plain; charset=utf-8", "502 Bad Gateway: target group "+g.Name+" speaks HTTP/2, which this listener's engine cannot\n", nil)
		ref.codes[5].Inc()
		return false
	}
	var target *targetgroup.Target
	setCookie := false
	if sticky := g.Sticky(); sticky.Enabled {
		if id := cookieValue(r.cookie, sticky.Cookie); id != "" {
			if t := g.ByID(id); t != nil && t.State() == targetgroup.Healthy {
				target = t
			}
		}
		setCookie = target == nil
	}
	if target == nil {
		target = g.Pick(nil)
	}
	if target == nil {
		_ = x.discardBody()
		x.simple(503, "text/plain; charset=utf-8", "503 Service Unavailable: target group "+g.Name+" has no registered targets\n", nil)
		ref.codes[5].Inc()
		return x.flush() && keep
	}
	replayable := r.contentLength == 0 && !r.chunked && len(r.upgrade) == 0 && isIdempotent(r.method)
	x.tried = x.tried[:0]
	retries := 0
	for {
		release := target.Acquire()
		code, outcome := x.roundTrip(ref, target, setCookie, timeout, &keep)
		release()
		switch outcome {
		case outDone:
			target.Report(code < 500)
			ref.codes[classOf(code)].Inc()
			return keep
		case outClientGone:
			ref.codes[0].Inc()
			return false
		case outTimeout:
			target.Report(false)
			x.simple(504, "text/plain; charset=utf-8", "504 Gateway Timeout: target did not answer in time\n", nil)
			ref.codes[5].Inc()
			return false
		}
		// outConnFailed: nothing reached the client yet.
		target.Report(false)
		if replayable && retries < maxRetries {
			x.tried = append(x.tried, target)
			if next := g.Pick(x.tried); next != nil {
				retries++
				s.h.Proxy.metrics.Retries.WithLabelValues(g.Name).Inc()
				target = next
				setCookie = setCookie || g.Sticky().Enabled
				continue
			}
		}
		x.simple(502, "text/plain; charset=utf-8", "502 Bad Gateway: target connection failed\n", nil)
		ref.codes[5].Inc()
		return false
	}
}

type outcome uint8

const (
	outDone outcome = iota
	outConnFailed
	outTimeout
	outClientGone
)

func isIdempotent(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

// roundTrip sends the request to t and relays the response. A connection
// failure before any response byte is outConnFailed (retryable); a stale
// pooled connection is retried once on a fresh one here.
func (x *exchange) roundTrip(ref *GroupRef, t *targetgroup.Target, setCookie bool, timeout time.Duration, keep *bool) (int, outcome) {
	s := x.s
	r := &x.req
	pool := s.h.Proxy.pool(t, ref)
	// Idempotent and body-less: safe to send again on a fresh connection
	// when a pooled one turns out stale.
	replayOK := r.contentLength == 0 && !r.chunked && isIdempotent(r.method)
	for attempt := 0; ; attempt++ {
		uc, reused, err := pool.Acquire(ref.up.dialFn, attempt, replayOK)
		if err != nil {
			return 0, outConnFailed
		}
		if timeout <= 0 {
			timeout = 60 * time.Second
		}
		start := time.Now()
		// Write, and response head; up to deadlineSlack late.
		_ = uc.SetDeadlineWithin(start.Add(timeout), deadlineSlack)
		if err := x.writeRequest(uc, start); err != nil {
			if errors.Is(err, errClient) {
				uc.Close()
				return 0, outClientGone
			}
			// The target may have answered early (and closed without
			// reading the whole body): relay that answer if it is there.
			_ = uc.SetReadDeadline(time.Now().Add(time.Second))
			*keep = false
			if code, rerr := x.relayResponse(uc, ref, t, setCookie, keep, start); rerr == nil {
				return code, outDone
			} else if code != 0 {
				uc.Close()
				return code, outClientGone
			}
			uc.Close()
			if reused && attempt == 0 && replayOK {
				*keep = !r.connClose && !r.http10
				continue
			}
			return 0, outConnFailed
		}
		code, err := x.relayResponse(uc, ref, t, setCookie, keep, start)
		if err == nil {
			return code, outDone
		}
		uc.Close()
		var ne net.Error
		switch {
		case code != 0:
			// Part of the response reached the client: nothing to retry.
			return code, outClientGone
		case errors.As(err, &ne) && ne.Timeout():
			return 0, outTimeout
		case reused && attempt == 0 && replayOK:
			continue // a stale keep-alive connection: once more, fresh
		}
		return 0, outConnFailed
	}
}

var (
	errClient = errors.New("client connection failed")
	errWrite  = errors.New("write failed")
)

// writeRequest writes the request head and body to the target.
func (x *exchange) writeRequest(uc *upConn, now time.Time) error {
	r := &x.req
	s := x.s
	w := uc.W
	w.Write(r.method)
	w.WriteByte(' ')
	if r.absForm {
		// Targets get origin-form; the host travels in Host.
		w.Write(r.path)
		if len(r.query) > 0 {
			w.WriteByte('?')
			w.Write(r.query)
		}
	} else {
		w.Write(r.uri)
	}
	w.WriteString(" HTTP/1.1\r\n")
	hasHost := false
	for _, l := range r.lines {
		hl := r.raw[l[0]:l[1]]
		colon := bytes.IndexByte(hl, ':')
		if isHop(hl[:colon]) || r.connListed(hl[:colon]) {
			continue
		}
		if eqFold(hl[:colon], "host") {
			if r.absForm {
				continue // replaced by the URI's host below
			}
			hasHost = true
		}
		w.Write(hl)
		w.WriteString("\r\n")
	}
	switch {
	case r.absForm:
		w.WriteString("Host: ")
		w.Write(r.host)
		w.WriteString("\r\n")
	case !hasHost:
		w.WriteString("Host: ")
		w.WriteString(uc.Addr)
		w.WriteString("\r\n")
	}
	w.WriteString("X-Forwarded-For: ")
	if len(r.xff) > 0 {
		w.Write(r.xff)
		w.WriteString(", ")
	}
	w.WriteString(x.clientIP)
	w.WriteString("\r\nX-Forwarded-Proto: ")
	w.WriteString(s.h.Scheme)
	w.WriteString("\r\nX-Forwarded-Port: ")
	w.WriteString(s.h.Port)
	if len(r.host) > 0 {
		w.WriteString("\r\nX-Forwarded-Host: ")
		w.Write(r.host)
	}
	w.WriteString("\r\n")
	if len(r.upgrade) > 0 {
		w.WriteString("Connection: Upgrade\r\nUpgrade: ")
		w.Write(r.upgrade)
		w.WriteString("\r\n")
	}
	if r.expect100 && (r.chunked || r.contentLength > 0) {
		// Tell the client to send the body (as nginx and HAProxy do); the
		// target never sees the Expect header.
		if err := w.Flush(); err != nil {
			return err
		}
		x.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if x.bw.Flush() != nil {
			return errClient
		}
	}
	switch {
	case r.chunked:
		// The codings as the client sent them (chunked is last).
		w.WriteString("Transfer-Encoding: ")
		w.Write(r.te)
		w.WriteString("\r\n\r\n")
		if err := copyChunked(w, x.br, nil); err != nil {
			if errors.Is(err, errWrite) {
				return err
			}
			return errClient
		}
	case r.contentLength > 0:
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(r.contentLength, 10))
		w.WriteString("\r\n\r\n")
		if _, err := copyN(w, x.br, r.contentLength); err != nil {
			if errors.Is(err, errWrite) {
				return err
			}
			return errClient
		}
	default:
		w.WriteString("\r\n")
	}
	return sendRequest(uc, w, !r.chunked && r.contentLength <= 0, now)
}

// sendRequest sends the request buffered in w, a writer to uc, whose
// answer is read next. A body-less request on a connection busy until now
// goes out with that read (sockio.FlushBeforeRead). A request with a body
// goes out now: a write error is looked into (an early answer); so does a
// request on a connection that sat idle (its read must look for a close
// first).
func sendRequest(uc *upConn, w *bufio.Writer, bodyless bool, now time.Time) error {
	if !bodyless || !uc.ReleasedWithin(now, connpool.QuietReuse) {
		return w.Flush()
	}
	return sockio.FlushBeforeRead(uc.Conn, w)
}

// relayResponse reads the target's response and writes it to the client.
// It returns the status once any of it was written to the client.
func (x *exchange) relayResponse(uc *upConn, ref *GroupRef, t *targetgroup.Target, setCookie bool, keep *bool, start time.Time) (int, error) {
	r := &x.req
	for {
		var err error
		uc.Head, err = readHead(uc.R, uc.Head, 64<<10)
		if err != nil {
			return 0, err
		}
		ref.latency.Observe(time.Since(start).Seconds())
		resp, ok := parseResponseHead(uc.Head, uc.Lines[:0])
		uc.Lines = resp.lines
		if !ok {
			return 0, errors.New("malformed response head")
		}
		if resp.code >= 100 && resp.code < 200 && resp.code != 101 {
			// Interim responses (100 Continue, 103) are relayed as they are.
			x.bw.Write(uc.Head)
			if x.bw.Flush() != nil {
				return resp.code, errClient
			}
			continue
		}
		if resp.code == 101 {
			if len(r.upgrade) == 0 {
				return 0, errors.New("101 without an upgrade request")
			}
			x.bw.Write(uc.Head)
			if x.bw.Flush() != nil {
				return 101, errClient
			}
			x.tunnel(uc)
			*keep = false
			return 101, nil
		}
		x.lg.status, x.lg.upStatus, x.lg.target, x.lg.upDur = resp.code, resp.code, t.Addr, time.Since(start)
		if resp.contentLength > 0 {
			x.lg.bytes = resp.contentLength
		}
		noBody := string(r.method) == "HEAD" || resp.code == 204 || resp.code == 304
		closeDelimited := !noBody && !resp.chunked && resp.contentLength < 0
		clientChunked := resp.chunked && !noBody && !r.http10
		if closeDelimited || (resp.chunked && r.http10) || x.s.quit.Load() {
			*keep = false
		}
		w := x.bw
		w.WriteString("HTTP/1.1 ")
		w.Write(resp.statusRest)
		w.WriteString("\r\n")
		for _, l := range resp.lines {
			hl := uc.Head[l[0]:l[1]]
			colon := bytes.IndexByte(hl, ':')
			name := hl[:colon]
			if isHop(name) && !eqFold(name, "content-length") {
				continue
			}
			if eqFold(name, "content-length") && (resp.chunked || resp.contentLength < 0) {
				continue
			}
			w.Write(hl)
			w.WriteString("\r\n")
		}
		if clientChunked {
			w.WriteString("Transfer-Encoding: chunked\r\n")
		}
		if setCookie {
			s := t.Group().Sticky()
			w.WriteString("Set-Cookie: ")
			w.WriteString(s.Cookie)
			w.WriteString("=")
			w.WriteString(t.ID)
			w.WriteString("; Path=/; Max-Age=")
			w.WriteString(strconv.Itoa(int(s.Duration.D() / time.Second)))
			w.WriteString("; HttpOnly\r\n")
		}
		if !*keep {
			w.WriteString("Connection: close\r\n")
		}
		w.WriteString("\r\n")
		if !noBody && (resp.chunked || resp.contentLength < 0 || resp.contentLength > int64(uc.R.Buffered())) {
			// A body still to arrive: idle timeout from now on.
			_ = uc.SetDeadline(time.Now().Add(x.s.opts.IdleTimeout))
		}
		x.ensureDeadline()
		reusable := !resp.connClose
		switch {
		case noBody:
		case resp.chunked && clientChunked:
			if err := copyChunked(w, uc.R, nil); err != nil {
				return resp.code, err
			}
		case resp.chunked:
			if err := copyChunked(nil, uc.R, w); err != nil {
				return resp.code, err
			}
		case resp.contentLength > 0:
			if _, err := copyN(w, uc.R, resp.contentLength); err != nil {
				return resp.code, err
			}
		case closeDelimited:
			reusable = false
			if _, err := io.Copy(w, uc.R); err != nil {
				return resp.code, err
			}
		}
		if err := w.Flush(); err != nil {
			uc.Close()
			return resp.code, errClient
		}
		if reusable {
			uc.Release()
		} else {
			uc.Close()
		}
		return resp.code, nil
	}
}

// tunnel copies both ways after a 101 until either side closes.
func (x *exchange) tunnel(uc *upConn) {
	_ = x.fc.c.SetDeadline(time.Time{})
	_ = uc.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		// Client to target, starting with what the client already sent.
		if n := x.br.Buffered(); n > 0 {
			b, _ := x.br.Peek(n)
			_, _ = uc.Write(b)
			_, _ = x.br.Discard(n)
		}
		_, _ = io.Copy(uc.Conn, x.fc.c)
		if cw, ok := uc.Conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		close(done)
	}()
	if n := uc.R.Buffered(); n > 0 {
		b, _ := uc.R.Peek(n)
		_, _ = x.fc.c.Write(b)
		_, _ = uc.R.Discard(n)
	}
	_, _ = io.Copy(x.fc.c, uc.Conn)
	_ = x.fc.c.Close()
	<-done
	uc.Close()
}

type respHead struct {
	code          int
	statusRest    []byte // "200 OK"
	lines         [][2]int
	chunked       bool
	contentLength int64
	connClose     bool
}

func parseResponseHead(h []byte, lines [][2]int) (respHead, bool) {
	var r respHead
	r.contentLength = -1
	r.lines = lines
	eol := bytes.Index(h, crlf)
	if eol < 12 || !bytes.HasPrefix(h, []byte("HTTP/1.")) || h[8] != ' ' {
		return r, false
	}
	r.statusRest = h[9:eol]
	code, err := strconv.Atoi(string(h[9:12]))
	if err != nil || code < 100 || code > 999 {
		return r, false
	}
	r.code = code
	off := eol + 2
	for off < len(h)-2 {
		e := bytes.Index(h[off:], crlf)
		if e < 0 {
			return r, false
		}
		start, end := off, off+e
		off = end + 2
		if e == 0 {
			break
		}
		hl := h[start:end]
		colon := bytes.IndexByte(hl, ':')
		if colon <= 0 {
			return r, false
		}
		name, value := hl[:colon], httpguard.TrimOWS(hl[colon+1:])
		switch {
		case eqFold(name, "content-length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (r.contentLength >= 0 && r.contentLength != n) {
				return r, false
			}
			r.contentLength = n
		case eqFold(name, "transfer-encoding"):
			r.chunked = bytes.HasSuffix(bytes.ToLower(value), []byte("chunked"))
			if !r.chunked {
				return r, false
			}
		case eqFold(name, "connection"):
			for v := value; len(v) > 0; {
				var tok []byte
				if i := bytes.IndexByte(v, ','); i >= 0 {
					tok, v = v[:i], v[i+1:]
				} else {
					tok, v = v, nil
				}
				if eqFold(bytes.TrimSpace(tok), "close") {
					r.connClose = true
				}
			}
		}
		r.lines = append(r.lines, [2]int{start, end})
	}
	if r.chunked {
		r.contentLength = -1
	}
	return r, true
}

// copyChunked copies a chunked body from src; with dst it is copied as
// is (framing checked), with plain it is de-chunked into plain.
func copyChunked(dst *bufio.Writer, src *bufio.Reader, plain *bufio.Writer) error {
	return copyChunkedTrailer(dst, src, plain, nil)
}

// copyChunkedTrailer is copyChunked that also hands each trailer field
// line (CRLF included) to trailer, when set; an error from trailer ends
// the copy.
func copyChunkedTrailer(dst *bufio.Writer, src *bufio.Reader, plain *bufio.Writer, trailer func(line []byte) error) error {
	for {
		line, err := src.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, ok := chunkSize(line)
		if !ok {
			return httpguard.ErrBadChunk
		}
		if dst != nil {
			dst.Write(line)
		}
		if size == 0 {
			// Trailers up to the empty line.
			for {
				tl, err := src.ReadSlice('\n')
				if err != nil {
					return err
				}
				if dst != nil {
					dst.Write(tl)
				}
				// The empty line ends the section (a lone LF tolerated, as
				// by Go targets); "X\n" is a field line, not the end.
				if len(tl) == 1 || len(tl) == 2 && tl[0] == '\r' {
					return nil
				}
				if trailer != nil {
					if err := trailer(tl); err != nil {
						return err
					}
				}
			}
		}
		out := dst
		if out == nil {
			out = plain
		}
		if _, err := copyN(out, src, size); err != nil {
			return err
		}
		crlf2, err := src.ReadSlice('\n')
		if err != nil || len(crlf2) != 2 || crlf2[0] != '\r' {
			return httpguard.ErrBadChunk
		}
		if dst != nil {
			dst.Write(crlf2)
		}
	}
}

func chunkSize(line []byte) (int64, bool) {
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return 0, false
	}
	return httpguard.ParseChunkSize(line[:len(line)-2])
}

// discardBody reads and drops the request body (before answering without
// forwarding); false when that failed.
func (x *exchange) discardBody() bool {
	r := &x.req
	switch {
	case r.chunked:
		return copyChunked(nil, x.br, bufio.NewWriter(io.Discard)) == nil
	case r.contentLength > 0:
		_, err := x.br.Discard(int(min(r.contentLength, 1<<62)))
		return err == nil
	}
	return true
}

// simple writes a small response (not flushed).
func (x *exchange) simple(code int, ctype, body string, extra []string) {
	x.lg.status, x.lg.bytes = code, int64(len(body))
	w := x.bw
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(code))
	w.WriteByte(' ')
	w.WriteString(http.StatusText(code))
	w.WriteString("\r\nContent-Type: ")
	w.WriteString(ctype)
	w.WriteString("\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	w.WriteString("\r\n")
	for i := 0; i+1 < len(extra); i += 2 {
		w.WriteString(extra[i])
		w.WriteString(": ")
		w.WriteString(extra[i+1])
		w.WriteString("\r\n")
	}
	if code >= 400 && code != 404 && code != 403 {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	if string(x.req.method) != "HEAD" {
		w.WriteString(body)
	}
	if code >= 500 || code == 400 || code == 431 {
		_ = w.Flush()
	}
}

func (x *exchange) flush() bool { return x.bw.Flush() == nil }

func (x *exchange) refuse(code int, msg string) {
	x.req.method = nil
	x.simple(code, "text/plain; charset=utf-8", strconv.Itoa(code)+" "+http.StatusText(code)+": request refused by httpguard ("+msg+")\n", nil)
	_ = x.bw.Flush()
}

// upConn is a pooled connection to a target.
type upConn = connpool.Conn

// deadlineSlack is how late a request timeout may fire: a connection
// busy with request after request keeps its deadline for this long
// instead of moving it (a runtime timer update) for each one.
const deadlineSlack = 10 * time.Millisecond

// Pool limits per target.
const (
	maxIdlePerTarget = 512
	idleConnTimeout  = 60 * time.Second
)

// poolKey separates plain and TLS connections to one target (a group's
// protocol may change on reload).
type poolKey struct {
	t   *targetgroup.Target
	tls bool
}

func (p *Proxy) pool(t *targetgroup.Target, ref *GroupRef) *connpool.Pool {
	k := poolKey{t, ref.up.tls != nil}
	if v, ok := p.pools.Load(k); ok {
		return v.(*connpool.Pool)
	}
	v, _ := p.pools.LoadOrStore(k, &connpool.Pool{Addr: t.Addr, MaxIdle: maxIdlePerTarget, IdleTimeout: idleConnTimeout})
	return v.(*connpool.Pool)
}

// DropTarget closes the idle connections to a target that left its group:
// the fast engine's pools and the HTTP/2 transports (the net/http
// engine's HTTP/1.1 transports close them after their idle timeout).
func (p *Proxy) DropTarget(t *targetgroup.Target) {
	for _, tls := range []bool{false, true} {
		if v, ok := p.pools.LoadAndDelete(poolKey{t, tls}); ok {
			v.(*connpool.Pool).CloseIdle()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.ups {
		if u.h2 != nil {
			u.h2.drop(t.Addr)
		}
	}
}

// dial connects to a target for the pooled HTTP/1.1 paths (TLS for https
// groups, verified against the target's host unless insecure).
func (u *upstream) dial(addr string) (net.Conn, error) {
	c, err := u.dialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c = sockio.Wrap(c)
	if u.tls == nil {
		return c, nil
	}
	cfg := u.tls.Clone()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		cfg.ServerName = host
	}
	tlsc := tls.Client(c, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), u.dialer.Timeout)
	err = tlsc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		c.Close()
		return nil, err
	}
	return tlsc, nil
}

var crlf = []byte("\r\n")

func eqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func canonicalKey(b []byte) string {
	return string(httpguard.AppendCanonicalKey(make([]byte, 0, len(b)), b))
}

func cookieValue(headers [][]byte, name string) string {
	for _, h := range headers {
		for _, part := range bytes.Split(h, []byte(";")) {
			part = bytes.TrimSpace(part)
			if len(part) > len(name) && string(part[:len(name)]) == name && part[len(name)] == '=' {
				return string(part[len(name)+1:])
			}
		}
	}
	return ""
}

func htmlEscape(s string) string {
	var b bytes.Buffer
	for _, c := range []byte(s) {
		switch c {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&#34;")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// copyN copies n bytes from r to w through r's buffer (io.CopyN would
// allocate a LimitReader per call).
func copyN(w *bufio.Writer, r *bufio.Reader, n int64) (int64, error) {
	var done int64
	for done < n {
		if r.Buffered() == 0 {
			if _, err := r.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return done, err
			}
		}
		k := min(int64(r.Buffered()), n-done)
		b, _ := r.Peek(int(k))
		if _, err := w.Write(b); err != nil {
			return done, errWrite
		}
		_, _ = r.Discard(int(k))
		done += k
	}
	return done, nil
}

// bstr views b as a string without copying; b must not change while the
// string is used.
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
