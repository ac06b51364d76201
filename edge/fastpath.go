package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	"github.com/edgestack/edgestack/internal/accesslog"
	"github.com/edgestack/edgestack/internal/h2"
	"github.com/edgestack/edgestack/internal/httpguard"
	"github.com/edgestack/edgestack/internal/sockio"
	"github.com/edgestack/edgestack/internal/wbatch"
)

// fastServer serves fresh cache hits for HTTP/1.1 GET and HEAD requests
// straight from the connection: the request head is parsed in place (no
// allocations), the stored entry's pre-serialised header block and body go
// out in one write. Anything else (a miss, a conditional or range request,
// a header the hit path does not handle, an access list, an access
// log...) hands the connection, with the bytes already read, to net/http,
// which serves it and the rest of that connection through the full
// handler. Heads reach it through the httpguard connection, so refused
// requests carry the guard's marker and are handed over for the 400.
//
// With tlsConf set it terminates TLS itself (in the connection's
// goroutine): connections that negotiate HTTP/1.1 get the same hit path,
// HTTP/2 ones (and TLS-ALPN challenges) go to net/http once the handshake
// is done.
type fastServer struct {
	h          *Handler
	ln         net.Listener
	handoff    *chanListener
	idle       time.Duration
	readHeader time.Duration
	write      time.Duration // 0: none
	read       time.Duration // bounds a request body read in place; 0: none
	tlsConf    *tls.Config   // nil: plain HTTP
	guard      httpguard.Options
	// full is the handler chain net/http serves, for the requests served
	// in place (inline.go); nil hands every non-hit over.
	full http.Handler
	// h2 serves the connections that negotiate HTTP/2; nil hands them to
	// net/http with the rest.
	h2 *h2.Server

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
}

func newFastServer(h *Handler, ln net.Listener, idle, readHeader, write time.Duration) *fastServer {
	if idle <= 0 {
		idle = 120 * time.Second
	}
	if readHeader <= 0 {
		readHeader = idle
	}
	ln = sockio.Listener{Listener: ln} // raw socket reads and writes
	return &fastServer{h: h, ln: ln, handoff: newChanListener(ln.Addr()), idle: idle, readHeader: readHeader, write: write, conns: map[net.Conn]struct{}{}}
}

// serve accepts until the listener closes.
func (f *fastServer) serve() error {
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if f.closing.Load() {
				return nil
			}
			var te interface{ Temporary() bool } // EMFILE, ECONNABORTED...
			if errors.As(err, &te) && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		f.mu.Lock()
		if f.closing.Load() {
			f.mu.Unlock()
			c.Close()
			return nil
		}
		f.conns[c] = struct{}{}
		f.wg.Add(1)
		f.mu.Unlock()
		go f.serveConn(c)
	}
}

// close stops accepting and wakes idle connections so they close; those
// mid-response finish it first.
func (f *fastServer) close() {
	f.closing.Store(true)
	_ = f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		_ = c.SetReadDeadline(time.Now())
	}
	f.mu.Unlock()
}

func (f *fastServer) forget(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	f.wg.Done()
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

type outBuf struct{ b []byte }

var outPool = sync.Pool{New: func() any { return &outBuf{b: make([]byte, 0, 8192)} }}

func (f *fastServer) serveConn(raw net.Conn) {
	defer f.forget(raw)
	var c net.Conn
	var tlsState *tls.ConnectionState
	if f.tlsConf == nil {
		c = httpguard.NewConn(raw, f.guard)
	} else {
		tc, h1 := f.handshake(raw)
		switch {
		case tc == nil:
			return
		case !h1 && f.h2 != nil && tc.ConnectionState().NegotiatedProtocol == "h2":
			// Out of conns: close's deadline poke is for HTTP/1.1
			// connections; HTTP/2 ones get a GOAWAY from h2's Shutdown.
			f.mu.Lock()
			delete(f.conns, raw)
			f.mu.Unlock()
			st := tc.ConnectionState()
			f.h2.ServeConn(tc, h2.ConnOpts{TLS: &st})
			return
		case !h1:
			f.handoff.push(tc)
			return
		}
		st := tc.ConnectionState()
		tlsState = &st
		c = httpguard.NewConn(tc, f.guard)
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(c)
	handed := false
	defer func() {
		if !handed {
			br.Reset(nil)
			readerPool.Put(br)
			c.Close()
		}
	}()
	// Responses go straight to the socket (the guard only inspects
	// reads), so net.Buffers can use writev.
	wc := c
	if u, ok := c.(interface{ Unwrap() net.Conn }); ok {
		wc = u.Unwrap()
	}
	var deadline time.Time
	scratch := make([]byte, 0, 256)
	cc := connCtx{raw: raw, tls: tlsState}
	// idleDeadline refreshes the idle deadline between requests, coarsely
	// (at most once a second); false: the server is closing.
	idleDeadline := func() bool {
		if now := time.Now(); deadline.Sub(now) < f.idle-time.Second {
			deadline = now.Add(f.idle)
			_ = c.SetReadDeadline(deadline)
		}
		return !f.closing.Load() // close() may have run since the caller's check
	}
	// Plain connections wait for requests in a read loop (see loopStep).
	loop, _ := raw.(*sockio.Conn)
	guard, _ := c.(*httpguard.Conn)
	if tlsState != nil || guard == nil {
		loop = nil
	}
	for {
		if f.closing.Load() {
			return
		}
		if loop != nil {
			end := false
			step := func() bool { return f.loopStep(wc, guard, br, &scratch, &cc, idleDeadline, &end) }
			if err := loop.ReadLoop(step); err != nil || end {
				return
			}
			// The loop left the next request to this path (its head
			// still arriving, a body, or one for net/http).
		}
		if br.Buffered() == 0 && !idleDeadline() {
			return
		}
		head, err := peekHead(br, f.readHeader, c, &deadline)
		if err != nil {
			return
		}
		served, closeAfter := false, false
		if head != nil {
			served, closeAfter = f.serveHit(wc, head, br, &scratch, &cc)
			if !served && f.full != nil && inlineable(head) {
				served, closeAfter = true, f.serveInline(wc, br, cc.inline(), tlsState)
			}
		}
		if closeAfter {
			return
		}
		if !served {
			if f.closing.Load() {
				return
			}
			_ = c.SetDeadline(time.Time{}) // net/http sets its own
			handed = true
			f.handoff.push(&prefixConn{Conn: c, br: br, tls: tlsState})
			return
		}
	}
}

// loopStep is serveConn's read-loop step (sockio.ReadLoop): it answers
// the requests whose whole head is buffered and that need no more input
// (hits, and body-less requests for the inline path), and returns false
// to wait for the next. It returns true to leave any other request to
// serveConn's ordinary path, and sets end when the connection is done.
// Inside the loop a read that finds nothing returns ErrWouldBlock instead
// of waiting, which is why only requests that need no more input are
// answered here.
func (f *fastServer) loopStep(wc net.Conn, guard *httpguard.Conn, br *bufio.Reader, scratch *[]byte, cc *connCtx, idleDeadline func() bool, end *bool) bool {
	for {
		if br.Buffered() == 0 {
			if !idleDeadline() {
				*end = true
				return true
			}
			if _, err := br.Peek(1); err != nil {
				if errors.Is(err, sockio.ErrWouldBlock) {
					return false
				}
				*end = true
				return true
			}
		}
		buf, _ := br.Peek(br.Buffered())
		j := bytes.Index(buf, crlfcrlf)
		if j < 0 {
			return true
		}
		head := buf[:j+4]
		served, closeAfter := f.serveHit(wc, head, br, scratch, cc)
		if !served {
			if f.full == nil || !inlineable(head) || hasBody(head) {
				return true
			}
			closeAfter = f.serveInline(wc, br, cc.inline(), nil)
		}
		if closeAfter {
			*end = true
			return true
		}
		if br.Buffered() == 0 && guard.Buffered() == 0 {
			// Wait for the next request, unless the read of this one
			// may have left bytes in the socket (ReadLoop knows). Bytes
			// the guard holds are read at once: they raise no readiness.
			return false
		}
	}
}

// hasBody reports whether an inlineable head declares a body (a
// Content-Length other than 0).
func hasBody(head []byte) bool {
	rest := head[bytes.Index(head, crlf)+2:]
	for len(rest) > 2 {
		i := bytes.Index(rest, crlf)
		hl := rest[:i]
		rest = rest[i+2:]
		if colon := bytes.IndexByte(hl, ':'); colon > 0 && asciiEq(hl[:colon], "content-length") {
			if v := httpguard.TrimOWS(hl[colon+1:]); len(v) != 1 || v[0] != '0' {
				return true
			}
		}
	}
	return false
}

// connCtx is what serveConn keeps per connection for the requests the
// hit path does not answer.
type connCtx struct {
	raw net.Conn
	tls *tls.ConnectionState // nil: plain HTTP
	ic  *inlineConn          // made on first use
}

func (cc *connCtx) inline() *inlineConn {
	if cc.ic == nil {
		cc.ic = &inlineConn{remote: cc.raw.RemoteAddr().String()}
	}
	return cc.ic
}

// handshake terminates TLS on raw within the read_header timeout. h1 is
// true for connections that negotiated HTTP/1.1 (or nothing); HTTP/2 ones
// have their writes batched (internal/wbatch). nil: the handshake failed
// and raw is closed.
func (f *fastServer) handshake(raw net.Conn) (tc *tls.Conn, h1 bool) {
	wc := wbatch.NewConn(raw)
	wc.Disable()
	tc = tls.Server(wc, f.tlsConf)
	_ = raw.SetDeadline(time.Now().Add(f.readHeader))
	if err := tc.Handshake(); err != nil {
		_ = raw.Close()
		return nil, false
	}
	_ = raw.SetDeadline(time.Time{})
	switch tc.ConnectionState().NegotiatedProtocol {
	case "", "http/1.1":
		return tc, true
	case "h2":
		if f.h2 == nil {
			// net/http's server flushes each response on its own;
			// internal/h2 batches its writes itself.
			wbatch.Enable(wc)
		}
	}
	return tc, false
}

// peekHead returns the next request head (up to and including the blank
// line) without consuming it; nil when it does not fit the buffer.
func peekHead(br *bufio.Reader, readHeader time.Duration, c net.Conn, deadline *time.Time) ([]byte, error) {
	if _, err := br.Peek(1); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		buf, _ := br.Peek(br.Buffered())
		if j := bytes.Index(buf, crlfcrlf); j >= 0 {
			return buf[:j+4], nil
		}
		if br.Buffered() >= br.Size() {
			return nil, nil
		}
		if i == 0 {
			// A partial head: from now on it must arrive within read_header.
			*deadline = time.Now().Add(readHeader)
			_ = c.SetReadDeadline(*deadline)
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return nil, err
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// serveHit answers head from the cache when it is a plain fresh hit and
// consumes it; false leaves it for net/http. closeAfter asks the caller to
// close the connection (Connection: close, or a write error).
func (f *fastServer) serveHit(c net.Conn, head []byte, br *bufio.Reader, scratch *[]byte, cc *connCtx) (served, closeAfter bool) {
	secure := cc.tls != nil
	// Request line.
	sp1 := bytes.IndexByte(head, ' ')
	if sp1 < 0 {
		return false, false
	}
	method := head[:sp1]
	isHead := false
	switch string(method) {
	case "GET":
	case "HEAD":
		isHead = true
	default:
		return false, false
	}
	eol := bytes.Index(head, crlf)
	line := head[:eol]
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp2 <= sp1 || string(line[sp2+1:]) != "HTTP/1.1" {
		return false, false
	}
	target := line[sp1+1 : sp2]
	if len(target) == 0 || target[0] != '/' {
		return false, false
	}
	path, query := target, []byte(nil)
	for i, ch := range target {
		switch {
		case ch == '?':
			path, query = target[:i], target[i+1:]
		case ch == '%' || ch == '#' || ch <= ' ' || ch >= 0x7f:
			return false, false
		}
		if query != nil {
			break
		}
	}
	s := f.h.snap.Load()
	if len(s.trusted) > 0 || len(target) > s.maxURL {
		return false, false
	}
	// Headers.
	var host, referer, userAgent []byte
	closeConn, acceptEnc, via := false, false, false
	rest := head[eol+2 : len(head)-2]
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		if i < 0 {
			return false, false
		}
		hl := rest[:i]
		rest = rest[i+2:]
		colon := bytes.IndexByte(hl, ':')
		if colon <= 0 {
			return false, false
		}
		name, value := hl[:colon], bytes.TrimSpace(hl[colon+1:])
		switch {
		case asciiEq(name, "host"):
			if host != nil {
				return false, false
			}
			host = value
		case asciiEq(name, "connection"):
			switch {
			case asciiEq(value, "keep-alive"):
			case asciiEq(value, "close"):
				closeConn = true
			default:
				return false, false
			}
		case asciiEq(name, "accept-encoding"):
			acceptEnc = len(value) > 0
		case asciiEq(name, "referer"):
			referer = value
		case asciiEq(name, "user-agent"):
			userAgent = value
		case asciiEq(name, "via"):
			via = true
		case handledElsewhere(name):
			return false, false
		}
	}
	if host == nil {
		return false, false
	}
	d := s.lookupBytes(host)
	if d == nil || len(d.allow) > 0 || len(d.deny) > 0 {
		return false, false
	}
	// The head buffer is not touched until Discard below, so a string
	// view of it is safe for the lookups (nothing retains it).
	b := d.behavior(bstring(path))
	if (b.viewer != vpAllow && !secure) || b.signed || len(b.keyHeaders) > 0 || len(b.keyCookies) > 0 ||
		(b.qsMode != 0 && len(query) > 0) || (b.compress && acceptEnc) || !b.allows(string(method)) {
		return false, false
	}
	*scratch = append(append((*scratch)[:0], b.keyPrefix...), path...)
	e, ok := f.h.store.Get(bstring(*scratch))
	if ok && e.HitForMiss && !via && f.full != nil {
		// An uncacheable object: relayed (relay.go) when it can be.
		now := time.Now()
		if ins, _ := relayOrigin(b); ins != nil && relayable(s, b, e, path, now) && inlineable(head) {
			m := http.MethodGet
			if isHead {
				m = http.MethodHead
			}
			return true, f.relayPass(c, br, head, cc.inline(), cc.tls, s, b, e, string(*scratch), m, host, path, target, referer, userAgent, closeConn, now)
		}
		return false, false
	}
	if !ok || e.VaryMarker || e.HitForMiss || e.Wire == nil {
		return false, false
	}
	now := time.Now()
	age := e.Age(now)
	if age >= e.Fresh {
		return false, false
	}
	if _, ok := b.errors[e.Status]; ok {
		return false, false
	}
	for _, hf := range b.headers {
		if _, dup := e.Header[hf.key]; dup {
			return false, false
		}
	}
	ob := outPool.Get().(*outBuf)
	out := ob.b[:0]
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(e.Status), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(e.Status)...)
	out = append(out, "\r\n"...)
	out = append(out, e.Wire...)
	for _, hf := range b.headers {
		out = append(out, hf.key...)
		out = append(out, ": "...)
		out = append(out, hf.value[0]...)
		out = append(out, "\r\n"...)
	}
	out = append(out, "Age: "...)
	out = strconv.AppendInt(out, int64(age/time.Second), 10)
	out = append(out, "\r\nX-Cache: Hit from edged\r\n"...)
	if _, ok := e.Header["Date"]; !ok {
		out = append(out, "Date: "...)
		out = now.UTC().AppendFormat(out, http.TimeFormat)
		out = append(out, "\r\n"...)
	}
	if f.closing.Load() {
		closeConn = true // shutting down: this connection ends after this response
	}
	if closeConn {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "\r\n"...)
	_, _ = br.Discard(len(head))
	if f.write > 0 {
		_ = c.SetWriteDeadline(now.Add(f.write))
	}
	var err error
	switch {
	case isHead:
		_, err = c.Write(out)
	case len(e.Body) <= 16<<10:
		out = append(out, e.Body...)
		_, err = c.Write(out)
	default:
		sent := false
		if e.Blob != nil {
			sent, err = f.sendLarge(c, out, e, s.sendAuto)
		}
		if !sent {
			// writev; a large copy runs as an ordinary (blocking-marked)
			// system call so the scheduler can run other connections on
			// another thread meanwhile (sockio issues small ones raw).
			_, err = sockio.WriteBuffers(c, [][]byte{out, e.Body})
		}
	}
	runtime.KeepAlive(e)
	if cap(out) <= 64<<10 {
		ob.b = out[:0]
		outPool.Put(ob)
	}
	b.d.counters[stHit].Inc()
	sent := 0
	if !isHead {
		sent = len(e.Body)
		b.d.bytes.Add(float64(sent))
	}
	if s.log != nil {
		le := accesslog.Entry{Time: now, Method: string(method), URI: string(target), Proto: "HTTP/1.1", Host: string(host),
			Status: e.Status, Bytes: int64(sent), Duration: time.Since(now), Referer: string(referer), UserAgent: string(userAgent),
			Cache: statusNames[stHit], Route: b.name}
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			le.Remote = ap.Addr().Unmap().String()
		}
		s.log.Log(&le)
	}
	return true, err != nil || closeConn
}

var crlf = []byte("\r\n")

// handledElsewhere lists request fields the fast path leaves to the full
// handler: conditionals and ranges (answered from the cache there),
// message framing and protocol switches, and the guard's refusal marker.
func handledElsewhere(name []byte) bool {
	if len(name) >= 3 && (name[0] == 'i' || name[0] == 'I') && (name[1] == 'f' || name[1] == 'F') && name[2] == '-' {
		return true
	}
	return asciiEq(name, "range") || framingField(name)
}

// framingField lists the request fields that keep a request away from the
// fast server altogether (to net/http): message framing, protocol
// switches, and the guard's refusal marker.
func framingField(name []byte) bool {
	for _, n := range [...]string{"content-length", "transfer-encoding", "expect", "upgrade", "te",
		"trailer", "x-edgestack-httpguard", "proxy-connection", "http2-settings"} {
		if asciiEq(name, n) {
			return true
		}
	}
	return false
}

func asciiEq(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// prefixConn is a handed-over connection: reads drain what the fast path
// had buffered, then the socket.
type prefixConn struct {
	net.Conn
	br  *bufio.Reader
	tls *tls.ConnectionState // nil: plain HTTP
}

// tlsStateKey holds, in a request's context, the TLS state of a
// connection the fast path terminated: net/http sets Request.TLS only for
// a *tls.Conn, and a handed-over one is a prefixConn.
type tlsStateKey struct{}

// connContext is the http.Server's ConnContext for handed-over
// connections.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*prefixConn); ok && pc.tls != nil {
		return context.WithValue(ctx, tlsStateKey{}, pc.tls)
	}
	return ctx
}

// withTLSState sets Request.TLS from connContext's value, first thing,
// so the handler sees HTTPS requests as such whichever server read them.
func withTLSState(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
				r.TLS = st // the server's own request, before anyone else reads it
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if p.br != nil {
		if p.br.Buffered() > 0 {
			return p.br.Read(b)
		}
		p.br.Reset(nil)
		readerPool.Put(p.br)
		p.br = nil
	}
	return p.Conn.Read(b)
}

// chanListener feeds handed-over connections to an http.Server.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

var _ io.Reader = (*prefixConn)(nil)

// sendLarge sends a large hit that has a sendfile copy with sendfile from
// the copy, unless (auto, from sendChoiceMin) the handler's sendChoice
// has it written from memory on this machine. sent is false when nothing
// was sent and the caller is to write from memory: the choice is a write,
// the connection is not a TCP socket, or the copy is gone.
func (f *fastServer) sendLarge(c net.Conn, out []byte, e *cache.Entry, auto bool) (sent bool, err error) {
	if auto && len(e.Body) >= sendChoiceMin {
		useSF, note := f.h.sends.pick(int64(len(e.Body)))
		f.h.logSendSwitch(note)
		if !useSF {
			f.h.m.largeSends[0].Inc()
			return false, nil
		}
	}
	if !e.Blob.Acquire() {
		return false, nil
	}
	defer e.Blob.Release()
	sent, err = sendHeadAndBlob(c, out, e.Blob)
	if sent {
		f.h.m.largeSends[1].Inc()
	}
	return sent, err
}
