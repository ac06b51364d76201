package edge

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
)

// Streaming misses: a cacheable answer of known length (at least
// streamFillMin bytes) is read into a body of its full length, by the
// leader's goroutine while it is the only viewer and else by a goroutine
// of the fill's own, and the viewers waiting on the fill (the leader
// among them) are sent each part as it arrives, as Varnish and
// CloudFront do, instead of waiting for the whole object. The entry is
// stored once the body is complete; until then it is shared with the
// readers but not stored, and nothing in it changes but the body's
// unfilled tail. One range is streamed too. A viewer the bytes cannot be
// streamed to as they are (several ranges, a conditional, a HEAD, an
// encoding to make) waits for the whole body and is served as before. An
// origin that ends the body early aborts the viewers' responses (their
// headers are gone) and nothing is stored.

// streamFillMin is the smallest body streamed while it is filled: below
// it the whole body comes in a read or two, and sending it in parts
// would cost more than it saves.
const streamFillMin = 64 << 10

// growChunk bounds one read into a growing body, so readers can start on
// a large object before the origin connection's buffers are drained.
const growChunk = 64 << 10

// prefaultMin is the smallest body buffer faulted in ahead of its fill
// (prefault): below it the buffer is a few pages, or comes from the
// allocator's already-used memory.
const prefaultMin = 32 << 10

// growing is a body being filled.
type growing struct {
	body []byte // full length; [0, n) is filled and never written again
	// faulted is how much of body is faulted in (prefault): the first
	// part's pages before the fill starts, the rest before the first
	// read the reader makes; only the reader uses it.
	faulted int

	mu   sync.Mutex
	n    int
	err  error         // the fill failed; n stays where it stopped
	more chan struct{} // closed (and replaced) when n or err changes
	// reader says whose goroutine reads the origin: while the leader is
	// the only viewer, its own (no hand-off between goroutines per part,
	// which cost a cold 2 MiB miss half as much CPU again); once another
	// viewer comes, or the leader cannot stream or leaves, a goroutine of
	// the fill's own, so that no viewer waits on another's sends. The
	// leader is between reads (reading false) while it sends: another
	// viewer then takes the reading over at once; during a read it asks
	// for it (handOver), and the leader hands it over before it sends.
	reader   int
	reading  bool
	handOver bool

	src   io.Reader       // the origin's body
	end   func(err error) // stores the entry or logs the failure, then closes finished
	spawn func(n int)     // starts the fill's own goroutine reading from n
	later func(func())    // runs a function on a goroutine of its own

	// finished is closed when the fill has ended: complete and stored,
	// or failed (err set).
	finished chan struct{}
}

// Who reads the origin.
const (
	readerNone = iota
	readerLeader
	readerOwn
	readerDone // the fill has ended
)

func newGrowing(body []byte, n, faulted int) *growing {
	return &growing{body: body, n: n, faulted: faulted, more: make(chan struct{}), finished: make(chan struct{})}
}

// background has the origin read by the fill's own goroutine: at once,
// unless the leader's goroutine is in a read; then it hands the reading
// over after that read.
func (g *growing) background() {
	g.mu.Lock()
	start := false
	switch {
	case g.reader == readerNone, g.reader == readerLeader && !g.reading:
		g.reader, start = readerOwn, true
	case g.reader == readerLeader:
		g.handOver = true
	}
	n := g.n
	g.mu.Unlock()
	if start {
		g.spawn(n)
	}
}

// lead claims the reading for the leader's goroutine; false when a
// reader runs already.
func (g *growing) lead() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reader != readerNone {
		return false
	}
	g.reader = readerLeader
	return true
}

// leadPart reads the next part as the leader's goroutine, unless another
// viewer has taken the reading over; it returns how much is filled, the
// fill's error, and whether the leader still reads.
func (g *growing) leadPart() (int, error, bool) {
	g.mu.Lock()
	n := g.n
	if g.reader != readerLeader {
		g.mu.Unlock()
		return n, nil, false
	}
	g.reading = true
	g.mu.Unlock()
	n, ended := g.readPart(n, true)
	g.mu.Lock()
	g.reading = false
	err, handOver := g.err, g.handOver && !ended
	if handOver {
		g.reader, g.handOver = readerOwn, false
	}
	g.mu.Unlock()
	if handOver {
		g.spawn(n)
	}
	return n, err, !ended && !handOver
}

// readPart reads the part of the body from n on from the origin and
// publishes it; it returns the new n and whether the fill has ended
// (complete or failed). Then end runs: on a goroutine of its own when
// the leader reads (async), so that storing the entry (a copy of the
// body for sendfile, 1 ms for 2 MiB) does not hold back its last send.
func (g *growing) readPart(n int, async bool) (int, bool) {
	if g.faulted < len(g.body) {
		_ = prefault(g.body[g.faulted:])
		g.faulted = len(g.body)
	}
	m, err := g.src.Read(g.body[n:min(n+growChunk, len(g.body))])
	n += m
	if n == len(g.body) {
		err = nil // a final io.EOF with the last bytes
	} else if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if m > 0 || err != nil {
		g.advance(n, err)
	}
	if err != nil || n == len(g.body) {
		g.mu.Lock()
		g.reader = readerDone
		g.mu.Unlock()
		if async {
			g.later(func() { g.end(err) })
		} else {
			g.end(err)
		}
		return n, true
	}
	return n, false
}

// advance publishes n filled bytes, or the error that ended the fill.
func (g *growing) advance(n int, err error) {
	g.mu.Lock()
	g.n = n
	if err != nil && g.err == nil {
		g.err = err
	}
	ch := g.more
	g.more = make(chan struct{})
	g.mu.Unlock()
	close(ch)
}

// next waits until more than have bytes are filled and returns how many
// are, or the fill's error, or ctx's. A viewer other than a reading
// leader calls it: the origin is then read by the fill's own goroutine.
func (g *growing) next(ctx context.Context, have int) (int, error) {
	g.background()
	for {
		g.mu.Lock()
		n, err, ch := g.n, g.err, g.more
		g.mu.Unlock()
		if err != nil {
			return n, err
		}
		if n > have || n == len(g.body) {
			return n, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return have, ctx.Err()
		}
	}
}

// filled is how much of the body has arrived.
func (g *growing) filled() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// failed reports whether the fill ended without a complete body.
func (g *growing) failed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err != nil
}

// wait waits for the fill to end; it returns the fill's error, or ctx's.
func (g *growing) wait(ctx context.Context) error {
	g.background()
	select {
	case <-g.finished:
	case <-ctx.Done():
		return ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// streamFill sets up the filling of a cacheable answer's body and returns
// the fill's result with the entry (its body still arriving) and grow
// set; the leader's goroutine reads the body, or the fill's own once
// anyone else wants it (growing.background). An answer that may not be stored is read whole here, as
// finishFill reads others.
func (h *Handler) streamFill(st *reqState, key2 string, resp *http.Response, reqTime, respTime time.Time, seq uint64, cancel context.CancelFunc, res fillResult) fillResult {
	body := make([]byte, resp.ContentLength)
	// The first part's pages now, the rest after the leader has sent it
	// (readPart): all at once, 2 MiB took the first byte from 1.3 ms to
	// 3.6. Part by part cost more CPU than in one go (a 2 MiB miss 10–12
	// ms against 8.5–10.5).
	faulted := min(growChunk, len(body))
	_ = prefault(body[:faulted])
	// The first bytes, for newEntry's content sniffing when the origin
	// names no Content-Type.
	n, err := io.ReadAtLeast(resp.Body, body, min(sniffLen, len(body)))
	if err == nil {
		e, ok := h.newEntry(st, resp.StatusCode, resp.Header, body, reqTime, respTime, seq, cache.NewID())
		if ok {
			g := newGrowing(body, n, faulted)
			res.e, res.key, res.grow, res.stored = e, storeKey(st, e), g, true
			s, key := st.s, st.key // st and its request are the leader's: not used once it returns
			g.src = resp.Body
			g.end = func(err error) {
				resp.Body.Close()
				cancel()
				if err == nil {
					h.putAt(s, key, res.key, e)
				} else {
					h.log.Warn("origin body ended early; the viewers streamed it are cut off", "distribution", e.Dist, "path", e.Path, "err", err)
				}
				close(g.finished)
			}
			g.later = func(f func()) {
				h.bg.Add(1)
				go func() {
					defer h.bg.Done()
					f()
				}()
			}
			g.spawn = func(n int) {
				g.later(func() {
					for ended := false; !ended; {
						n, ended = g.readPart(n, false)
					}
				})
			}
			return res
		}
		res.e, res.key, res.private = e, key2, true
		_ = prefault(body[faulted:])
		_, err = io.ReadFull(resp.Body, body[n:])
		if err == nil {
			h.renewHitForMiss(st, respTime)
		}
	}
	resp.Body.Close()
	cancel()
	if err != nil {
		return fillResult{err: err, upAddr: res.upAddr, upStatus: res.upStatus}
	}
	return res
}

// sniffLen is how much of a body http.DetectContentType looks at.
const sniffLen = 512

// streamWindow reports whether e, its body still arriving, can be sent
// to st's viewer as the bytes come, and which bytes: the whole identity
// body to a plain GET (code 200), or one satisfiable range (code 206,
// rangeField its Content-Range). Anything else (a conditional, several
// ranges, a HEAD, an encoding to make) is answered from the whole object.
func streamWindow(st *reqState, e *cache.Entry) (from, to int, code int, rangeField string, ok bool) {
	r, b := st.r, st.b
	if r.Method != http.MethodGet || e.Status != http.StatusOK {
		return 0, 0, 0, "", false
	}
	if _, ok := b.errors[e.Status]; ok {
		return 0, 0, 0, "", false
	}
	if b.compress && e.Encoding == "" && negotiate(r.Header["Accept-Encoding"]) != "" && compressible(e.Status, e.Header) {
		return 0, 0, 0, "", false
	}
	if hasPrecondition(r.Header) {
		return 0, 0, 0, "", false
	}
	size := len(e.Body)
	if _, ranged := r.Header["Range"]; !ranged {
		return 0, size, http.StatusOK, "", true
	}
	spec, ok := singleRange(r, e.Header)
	if !ok {
		return 0, 0, 0, "", false
	}
	start, end, ok := spec.resolve(int64(size))
	if !ok {
		return 0, 0, 0, "", false // a 416, made from the whole object
	}
	return int(start), int(end) + 1, http.StatusPartialContent, contentRange(start, end, int64(size)), true
}

// serveGrowing serves a fill whose body is still arriving: streamed as it
// comes when it can be, otherwise once complete, as any other entry.
func (h *Handler) serveGrowing(w http.ResponseWriter, st *reqState, res fillResult) {
	e, g := res.e, res.grow
	st.status = res.status
	if res.leader {
		st.upAddr, st.upStatus, st.upDur, st.upBytes = res.upAddr, res.upStatus, res.upDur, int64(len(e.Body))
	}
	ctx := st.r.Context()
	from, to, code, rangeField, ok := streamWindow(st, e)
	if !ok {
		if err := g.wait(ctx); err != nil {
			if ctx.Err() == nil {
				h.errorResponse(w, st, http.StatusBadGateway, "origin body ended early")
			}
			return
		}
		h.deliver(w, st, e, res.key, e.Age(time.Now()))
		return
	}
	b := st.b
	hdr := w.Header()
	setEntryHeader(hdr, b, e, e.Age(time.Now()), st.status)
	if code == http.StatusPartialContent {
		hdr["Content-Range"] = []string{rangeField}
		hdr["Content-Length"] = []string{strconv.Itoa(to - from)}
	} else {
		hdr["Content-Length"] = e.ContentLength
	}
	w.WriteHeader(code)
	st.code = code
	flusher, _ := w.(http.Flusher)
	if flusher != nil && g.filled() <= from {
		flusher.Flush() // the head now: the range's bytes have yet to come
	}
	pos := from // the next byte to send
	leading := res.leader && g.lead()
	defer func() {
		if leading {
			// The viewer left, or has its range, or a panic unwinds: the
			// fill's own goroutine reads on.
			g.background()
		}
	}()
	for pos < to {
		var n int
		var err error
		if leading {
			// Send what has arrived before reading on (the first bytes, a
			// range within them).
			if n = g.filled(); n <= pos {
				n, err, leading = g.leadPart()
			}
		} else {
			n, err = g.next(ctx, pos)
		}
		if err != nil {
			if ctx.Err() != nil {
				return // the viewer left
			}
			// Headers are gone: abort so the viewer sees a truncated
			// response rather than a clean end.
			panic(http.ErrAbortHandler)
		}
		if n <= pos {
			continue // not yet up to the range, nothing read, or the reading handed over
		}
		upto := min(n, to)
		m, werr := w.Write(e.Body[pos:upto])
		st.bytes += int64(m)
		b.d.bytes.Add(float64(m))
		if werr != nil {
			return
		}
		pos = upto
		if pos < to && flusher != nil {
			flusher.Flush()
		}
	}
}
