package edge

import (
	"context"
	"errors"
	"io"
	"math"
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
//
// An answer of unknown length that has not ended with its first bytes is
// streamed to its leader only, from those bytes on; the leader's
// goroutine reads it into parts that double in size (the first
// streamFillMin bytes long), joined once it is complete; the others wait
// for the whole. Past max_object_size the fill fails for them (they fetch
// on their own, the key is marked too large), and the leader is relayed
// the rest through a small buffer, as a pass-through would have sent it.

// streamFillMin is the smallest body streamed while it is filled from
// the start: below it the whole body comes in a read or two, and sending
// it in parts would cost more than it saves, so it is streamed only if a
// read would wait (finishFill).
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
	// body is the buffer the origin's bytes are read into, from offset
	// base on. Of a known length it is the whole body (base 0): [0, n) is
	// filled and never written again. Of an unknown length it is the last
	// of a list of parts, each twice the one before (parts holds the full
	// ones; the reader adds to it under mu), joined once the length is
	// known; past limit it holds only the part read last, bytes
	// [base, n) (relay).
	body  []byte
	parts [][]byte
	// unknown: the origin sent no Content-Length. Only the leader is
	// streamed such a body, and it reads the origin itself until it
	// leaves (lead, leave); other viewers wait for the whole.
	unknown bool
	limit   int // unknown length: the most bytes kept (cache.max_object_size)
	// faulted is how much of body is faulted in (prefault): a known
	// length's whole body at the reader's first read (after the leader's
	// first send), a new part of an unknown length when it is made; only
	// the reader uses it.
	faulted int
	// blob is the sendfile copy of an entry that will have one, made as
	// the body arrives (nil: none): the reader hands it what it has filled
	// before a read once blobBatch bytes are waiting (copyToBlob), end the
	// rest (takeBlob), so the copy is not made in one go once the body is
	// complete (1 ms for 2 MiB, while the next request waited: the first
	// byte of sequential 2 MiB misses came 1.1–1.3 ms after the request,
	// 0.7–0.8 with the copy made as they arrived). It starts in blobDir at
	// the first copyToBlob when blobWanted (after the leader's first send:
	// a file made in a directory before it took the first byte 0.1 ms
	// longer). blobMax is the most it may hold (0: no bound).
	blob       *blobFill
	blobWanted bool
	blobDir    string
	blobMax    int

	mu   sync.Mutex
	n    int
	size int           // the body's length; -1 while unknown
	err  error         // the fill failed; n stays where it stopped
	more chan struct{} // closed (and replaced) when n or err changes
	// relay: an unknown length went past limit. The fill has failed
	// (err is errTooLarge, the key is marked too large), but the leader
	// is still sent the rest: base is the offset of body[0], relayErr
	// what ended the relay early.
	relay    bool
	base     int
	relayErr error
	final    *cache.Entry // unknown length: the entry as stored
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
	claimed  bool // lead has been called

	src       io.Reader       // the origin's body
	end       func(err error) // stores the entry or logs the failure, then closes finished
	spawn     func(n int)     // starts the fill's own goroutine reading from n
	later     func(func())    // runs a function on a goroutine of its own
	overLimit func()          // marks the key too large (unknown length past limit)

	// finished is closed when the fill has ended: complete and stored,
	// or failed (err set; a relay may go on).
	finished chan struct{}
}

// errTooLarge ends a fill of unknown length that went past the most an
// object may be.
var errTooLarge = errors.New("body longer than cache.max_object_size")

// Who reads the origin.
const (
	readerNone = iota
	readerLeader
	readerOwn
	readerDone // the fill has ended
)

func newGrowing(body []byte, n int) *growing {
	return &growing{body: body, n: n, size: len(body), more: make(chan struct{}), finished: make(chan struct{})}
}

// newGrowingUnknown starts a body of unknown length with its first n
// bytes in body; the leader reads the rest (lead).
func newGrowingUnknown(body []byte, n, limit int) *growing {
	return &growing{
		body: body, n: n, size: -1, unknown: true, limit: limit, faulted: len(body),
		reader: readerLeader, more: make(chan struct{}), finished: make(chan struct{}),
	}
}

// background has the origin read by the fill's own goroutine: at once,
// unless the leader's goroutine is in a read; then it hands the reading
// over after that read.
func (g *growing) background() {
	g.mu.Lock()
	start := false
	switch {
	case g.unknown && g.reader == readerLeader:
		// The leader reads it until it leaves: nobody else is streamed
		// an unknown length, and it may have to relay the rest.
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

// lead claims the reading for the leader's goroutine, once; false when
// another viewer's reader runs already. An unknown length is the
// leader's from the start (newGrowingUnknown).
func (g *growing) lead() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.claimed:
		return false
	case g.reader == readerNone:
		g.reader = readerLeader
	case g.reader != readerLeader:
		return false // another viewer's goroutine reads
	}
	g.claimed = true
	return true
}

// leave is the leader's giving up the reading, between its reads: the
// fill's own goroutine reads on (a relay past the limit just ends).
func (g *growing) leave() {
	g.mu.Lock()
	start := g.reader == readerNone || g.reader == readerLeader
	if start {
		g.reader = readerOwn
	}
	n := g.n
	g.mu.Unlock()
	if start {
		g.spawn(n)
	}
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
	if g.relay {
		err = g.relayErr // the fill's errTooLarge is for the others
	}
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
// Of an unknown length, the leader (async) reads on past the limit as
// a relay; the fill's own goroutine ends the fill there.
func (g *growing) readPart(n int, async bool) (int, bool) {
	if g.blobWanted || (g.blob != nil && n-g.blob.queued >= blobBatch) {
		g.copyToBlob(n)
	}
	if g.faulted < len(g.body) {
		_ = prefault(g.body[g.faulted:])
		g.faulted = len(g.body)
	}
	if g.unknown {
		if !g.room(n, async) {
			g.finish(n, errTooLarge, async)
			return n, true
		}
	}
	// Only the reader changes body and base: no lock to read them here.
	buf, base := g.body, g.base
	m, err := g.src.Read(buf[n-base : min(n-base+growChunk, len(buf))])
	n += m
	complete := false
	switch {
	case g.unknown:
		complete = err == io.EOF
		if complete {
			err = nil
		}
	case n == len(buf):
		complete, err = true, nil // a final io.EOF with the last bytes
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	if m > 0 || err != nil {
		g.advance(n, err)
	}
	if err != nil || complete {
		g.finish(n, err, async)
		return n, true
	}
	return n, false
}

// room makes room in an unknown length's buffer for the part from n on:
// a larger copy, or, past the limit, the switch to a relay (the leader's
// read) and then the relay's buffer emptied. False: the fill's own
// goroutine has reached the limit, or reads a relay nobody is sent.
func (g *growing) room(n int, leader bool) bool {
	// Only the reader changes relay, base and body; it writes them under
	// mu for bytes, and reads them here without.
	relay, base, have := g.relay, g.base, len(g.body)
	switch {
	case relay && !leader:
		return false // the leader left its relay
	case relay:
		g.mu.Lock()
		g.base = n // the leader has sent [base, n): reuse the buffer
		g.mu.Unlock()
		return true
	case n-base < have:
		return true
	case n > g.limit && !leader:
		g.overLimit()
		return false
	case n > g.limit:
		g.overLimit()
		g.mu.Lock()
		g.relay, g.base = true, n
		g.body, g.parts = make([]byte, growChunk), nil
		if g.err == nil {
			g.err = errTooLarge
		}
		ch := g.renewMoreLocked()
		g.mu.Unlock()
		close(ch)
		close(g.finished) // the others fetch on their own now
		return true
	}
	// A new part twice as large, up to one byte past the limit in all
	// (which tells it is past). Parts, not a buffer doubled by copying:
	// that copied a 2 MiB body once more while it filled. The sendfile
	// copy takes the part left first.
	g.copyToBlob(n)
	part := make([]byte, min(2*have, g.limit+1-n))
	_ = prefault(part)
	g.faulted = len(part)
	g.mu.Lock()
	g.parts = append(g.parts, g.body)
	g.body, g.base = part, n
	g.mu.Unlock()
	return true
}

// blobBatch is how much of the body the reader lets arrive before it
// hands it to the sendfile copy (copyToBlob). Written by the reader
// itself, every part as it came cost a 2 MiB miss 5,800–6,700 µs of CPU
// against 4,700–4,800 in one go at the end (each write is a system call
// long enough for the runtime to hand the goroutine's P to another
// thread); 256 KiB 5,500–5,700; 512 KiB 4,700–5,200.
const blobBatch = 512 << 10

// copyToBlob hands the bytes filled since its last call, up to n, to
// the sendfile copy; it gives the copy up once the body is longer than
// the copy may be, or is relayed. Of an unknown length it is called
// before the part the bytes are in is left (room).
func (g *growing) copyToBlob(n int) {
	if g.blobWanted {
		g.blob, g.blobWanted = startBlobFill(g.blobDir, g.later), false
	}
	if g.blob == nil {
		return
	}
	from := g.blob.queued
	if g.relay || (g.blobMax > 0 && n > g.blobMax) || from < g.base {
		g.dropBlob()
	} else if n > from && !g.blob.add(g.body[from-g.base:n-g.base]) {
		g.blob = nil
	}
}

// takeBlob ends the sendfile copy of a complete body of n bytes: the
// blob, or nil when there is none or a body of n bytes gets none (an
// unknown length).
func (g *growing) takeBlob(n int, want bool) *cache.Blob {
	if !want {
		g.dropBlob()
		return nil
	}
	g.copyToBlob(n)
	if g.blob == nil {
		return nil
	}
	b := g.blob.finish(n) // nil if short: never sent short
	g.blob = nil
	return b
}

// dropBlob gives the sendfile copy up.
func (g *growing) dropBlob() {
	if g.blob != nil {
		g.blob.drop()
	}
	g.blob, g.blobWanted = nil, false
}

// finish ends the fill at n with err (nil: complete), on a goroutine of
// its own when the leader reads (async).
func (g *growing) finish(n int, err error, async bool) {
	g.mu.Lock()
	g.reader = readerDone
	if err == nil {
		g.size = n
	} else if g.err == nil {
		g.err = err
	}
	if g.relay && err != nil && err != errTooLarge {
		g.relayErr = err
	}
	ch := g.renewMoreLocked()
	g.mu.Unlock()
	close(ch)
	if async {
		g.later(func() { g.end(err) })
	} else {
		g.end(err)
	}
}

// advance publishes n filled bytes, or the error that ended the fill.
func (g *growing) advance(n int, err error) {
	g.mu.Lock()
	g.n = n
	if err != nil && g.err == nil {
		g.err = err
	}
	ch := g.renewMoreLocked()
	g.mu.Unlock()
	close(ch)
}

// renewMoreLocked replaces more and returns the old channel, for the
// caller to close once it has unlocked mu: waiters then see the change.
func (g *growing) renewMoreLocked() chan struct{} {
	ch := g.more
	g.more = make(chan struct{})
	return ch
}

// bytes is the filled part [from, to): the caller has seen to filled.
// Of an unknown length, the only viewer streamed it is the leader, which
// reads each part itself once it has sent everything before: from is
// never in a part before the last, nor before a relay's buffer.
func (g *growing) bytes(from, to int) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.body[from-g.base : to-g.base]
}

// total is the body's length, -1 while unknown.
func (g *growing) total() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.size
}

// entry is the entry to serve once the fill has finished: of an unknown
// length, the one stored with its length; else e.
func (g *growing) entry(e *cache.Entry) *cache.Entry {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.final != nil {
		return g.final
	}
	return e
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

// tooLarge reports whether the fill failed for going past the limit.
func (g *growing) tooLarge() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err == errTooLarge
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

// streamFill sets up the filling of a cacheable answer's body (of which
// the first n bytes may have been read into body already; nil: none) and returns
// the fill's result with the entry (its body still arriving) and grow
// set; the leader's goroutine reads the body, or the fill's own once
// anyone else wants it (growing.background). An answer that may not be
// stored is read whole here, as finishFill reads others.
func (h *Handler) streamFill(st *reqState, key2 string, resp *http.Response, reqTime, respTime time.Time, seq uint64, cancel context.CancelFunc, res fillResult, body []byte, n int) fillResult {
	var err error
	if body == nil {
		// Its pages are faulted in at the reader's first read, after the
		// leader has sent the first bytes (readPart): all 2 MiB before it
		// took the first byte from 1.3 ms to 3.6, and even the first 64
		// KiB added 0.05 ms; part by part cost more CPU than in one go (a
		// 2 MiB miss 10–12 ms against 8.5–10.5). The first read faults
		// its own few pages.
		body = make([]byte, resp.ContentLength)
		// The first bytes, for newEntry's content sniffing when the
		// origin names no Content-Type.
		n, err = io.ReadAtLeast(resp.Body, body, min(sniffLen, len(body)))
	}
	if err == nil {
		e, ok := h.newEntry(st, resp.StatusCode, resp.Header, body, reqTime, respTime, seq, cache.NewID())
		if ok {
			return h.startGrowing(st, resp, cancel, res, e, newGrowing(body, n))
		}
		res.e, res.key, res.private = e, key2, true
		_ = prefault(body[n:])
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

// streamUnknown sets up the filling of a cacheable answer of unknown
// length whose first n bytes have come into head (streamFillMin long):
// only the leader is streamed it (newGrowingUnknown). False when the answer may not be stored (the
// caller then reads it whole).
func (h *Handler) streamUnknown(st *reqState, resp *http.Response, head []byte, n int, reqTime, respTime time.Time, seq uint64, cancel context.CancelFunc, res fillResult) (fillResult, bool) {
	e, ok := h.newEntry(st, resp.StatusCode, resp.Header, head[:n], reqTime, respTime, seq, cache.NewID())
	if !ok {
		return res, false
	}
	limit := int(min(st.s.maxObject, math.MaxInt/2)) // an int, and room for limit+1, on 32-bit builds too
	return h.startGrowing(st, resp, cancel, res, e, newGrowingUnknown(head, n, limit)), true
}

// startGrowing wires g (the fill of e's body from resp) to the handler.
func (h *Handler) startGrowing(st *reqState, resp *http.Response, cancel context.CancelFunc, res fillResult, e *cache.Entry, g *growing) fillResult {
	res.e, res.key, res.grow, res.stored = e, storeKey(st, e), g, true
	s, key := st.s, st.key // st and its request are the leader's: not used once it returns
	wire := e.Wire != nil
	if g.unknown {
		// Its length, and the header block with it, come at the end.
		e.ContentLength, e.Wire = nil, nil
	}
	g.src = resp.Body
	g.overLimit = func() {
		h.m.streamed.Inc()
		h.store.Set(key, tooLargeMarker(e.Seq, e.Dist, e.Host, e.Path, e.Tags))
	}
	if s.sendfile > 0 && (g.unknown || s.wantsBlob(int64(len(g.body)))) {
		g.blobWanted, g.blobDir, g.blobMax = true, s.sendfileDir, int(s.sendfileMax)
	}
	g.end = func(err error) {
		resp.Body.Close()
		cancel()
		g.mu.Lock()
		relay, n := g.relay, g.n
		g.mu.Unlock()
		switch {
		case relay:
			g.dropBlob()
			return // finished was closed when it went past the limit
		case err == nil && g.unknown:
			h.putAt(s, key, res.key, g.complete(e, n, wire, g.takeBlob(n, s.wantsBlob(int64(n)))))
		case err == nil:
			e.Blob = g.takeBlob(n, true)
			h.putAt(s, key, res.key, e)
		case err == errTooLarge:
			g.dropBlob()
		default:
			g.dropBlob()
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

// complete makes the entry of an unknown length filled to n: e with its
// body, length, header block and sendfile copy (blob, or nil), stored
// (final) for the others.
func (g *growing) complete(e *cache.Entry, n int, wire bool, blob *cache.Blob) *cache.Entry {
	var body []byte
	if len(g.parts) == 0 && len(g.body)-n <= n/8 {
		body = g.body[:n:n] // little room to spare
	} else {
		body = make([]byte, n)
		_ = prefault(body)
		off := 0
		for _, p := range g.parts {
			off += copy(body[off:], p)
		}
		copy(body[off:], g.body[:n-g.base])
	}
	f := *e
	f.Body, f.ContentLength, f.Blob = body, []string{strconv.Itoa(n)}, blob
	if wire {
		f.Wire = cache.WireHeader(f.Header, f.ContentLength[0])
	}
	g.mu.Lock()
	g.final = &f
	g.mu.Unlock()
	return &f
}

// sniffLen is how much of a body http.DetectContentType looks at.
const sniffLen = 512

// streamWindow reports whether e, its body still arriving (size bytes,
// -1 while unknown), can be sent to st's viewer as the bytes come, and
// which bytes: the whole identity body to a plain GET (code 200), or one
// satisfiable range of a known length (code 206, rangeField its
// Content-Range). Anything else (a conditional, several
// ranges, a HEAD, an encoding to make) is answered from the whole object.
func streamWindow(st *reqState, e *cache.Entry, size int) (from, to int, code int, rangeField string, ok bool) {
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
	if _, ranged := r.Header["Range"]; !ranged {
		return 0, size, http.StatusOK, "", true // size -1: to the end, when it comes
	}
	if size < 0 {
		return 0, 0, 0, "", false
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
	from, to, code, rangeField, ok := streamWindow(st, e, g.total())
	if ok && g.unknown && !res.leader {
		ok = false // an unknown length is streamed to its leader only
	}
	if !ok {
		if res.leader {
			g.leave()
		}
		switch err := g.wait(ctx); {
		case err == errTooLarge:
			h.passLarge(w, st, nil)
		case err != nil:
			if ctx.Err() == nil {
				h.errorResponse(w, st, http.StatusBadGateway, "origin body ended early")
			}
		default:
			e = g.entry(e)
			h.deliver(w, st, e, res.key, e.Age(time.Now()))
		}
		return
	}
	b := st.b
	hdr := w.Header()
	setEntryHeader(hdr, b, e, e.Age(time.Now()), st.status)
	if code == http.StatusPartialContent {
		hdr["Content-Range"] = []string{rangeField}
		hdr["Content-Length"] = []string{strconv.Itoa(to - from)}
	} else if to >= 0 {
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
			g.leave()
		}
	}()
	for {
		if to < 0 {
			to = g.total() // an unknown length, known once complete
		}
		if to >= 0 && pos >= to {
			break
		}
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
		upto := n
		if to >= 0 {
			upto = min(n, to)
		}
		m, werr := w.Write(g.bytes(pos, upto))
		st.bytes += int64(m)
		b.d.bytes.Add(float64(m))
		if werr != nil {
			return
		}
		pos = upto
		if pos != to && flusher != nil {
			flusher.Flush()
		}
	}
	if res.leader && g.unknown {
		st.upBytes = int64(pos)
	}
}
