package edge

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
)

// call is one origin fetch that concurrent requests for the same key wait
// on; the result is handed to them directly.
type call struct {
	done chan struct{}
	res  fillResult
}

type fillResult struct {
	e      *cache.Entry // the response, shared read-only with waiters
	key    string       // e's full key
	status int          // stMiss or stRefreshHit
	err    error
	// private: e is for the leader only (not storable); waiters fetch
	// on their own.
	private bool
	pass    bool           // (waiters) fetch on your own
	stream  *http.Response // (leader) too large to cache: stream it
	grow    *growing       // e's body is still arriving (streamFill)
	have    int64          // bytes of stream's body already read (unknown lengths)
	large   bool           // (waiters) too large to cache: pass through
	stored  bool
	leader  bool

	upAddr   string
	upStatus int
	upDur    time.Duration
}

// fill makes one origin request for key2 however many requests ask at once.
func (h *Handler) fill(st *reqState, key2 string, stale *cache.Entry) fillResult {
	if stale != nil && stale.HitForMiss {
		res := h.doFill(st, key2, nil)
		res.leader = true
		return res
	}
	h.mu.Lock()
	if c, ok := h.flight[key2]; ok && !c.finishedStale(time.Now()) {
		h.mu.Unlock()
		finished := false
		select {
		case <-c.done:
			finished = true
		default:
			h.m.coalesced.Inc()
			select {
			case <-c.done:
			case <-st.r.Context().Done():
				return fillResult{err: st.r.Context().Err()}
			}
		}
		res := c.res
		res.leader = false
		if finished && res.status == stMiss {
			// The fill had ended before this request came: it is served
			// from the stored answer without waiting for the origin, a
			// hit, though the store's Set has not been applied yet.
			res.status = stHit
		}
		if res.e != nil && h.store.Banned(res.e) {
			// Invalidated after that fetch started (an unsafe method, the
			// API): this request came after the invalidation, so it must
			// not get what was fetched before. Fetch on its own.
			res := h.doFill(st, key2, nil)
			res.leader = true
			return res
		}
		if res.stream != nil {
			return fillResult{large: true}
		}
		if res.private {
			return fillResult{pass: true}
		}
		if res.e != nil && len(res.e.Vary) > 0 && varyKey(st.key, res.e.Vary, st.r) != res.key {
			// Another variant: fetch it (coalesced on its own key).
			if st.depth < 2 {
				st.depth++
				return h.fill(st, varyKey(st.key, res.e.Vary, st.r), nil)
			}
			return fillResult{pass: true}
		}
		return res
	}
	if stale == nil {
		// This request saw a miss, but it may have looked before a fill
		// that has finished since, and been forgotten once its entry was
		// stored (a request paused between its lookup and here, under
		// load): look again rather than fetch a second time.
		if e, ok := h.store.Get(key2); ok && !e.HitForMiss && !e.VaryMarker && e.Age(time.Now()) < e.Fresh {
			h.mu.Unlock()
			return fillResult{e: e, key: key2, status: stHit}
		}
	}
	c := &call{done: make(chan struct{})}
	h.flight[key2] = c
	h.mu.Unlock()

	res := h.doFill(st, key2, stale)
	res.leader = true
	c.res = res
	close(c.done)
	forget := func() {
		h.mu.Lock()
		if h.flight[key2] == c {
			delete(h.flight, key2)
		}
		h.mu.Unlock()
	}
	if res.stored || res.stream != nil {
		// Keep the finished call visible until the Set (of the entry or
		// of the too-large marker) is applied, so no request falls
		// between "no longer in flight" and "in the store". A streamed
		// fill is stored when its body is complete.
		go func() {
			if res.grow != nil {
				<-res.grow.finished
			}
			h.store.Wait()
			forget()
		}()
	} else {
		forget()
	}
	return res
}

// finishedStale reports a call that has finished with an entry that is
// no longer fresh: a new request must fetch again rather than reuse it.
func (c *call) finishedStale(now time.Time) bool {
	select {
	case <-c.done:
		if c.res.stream != nil {
			return false // too large: joiners pass through until the marker lands
		}
		if c.res.grow != nil && c.res.grow.failed() {
			// The body never came whole: fetch again, unless it was
			// too large (it fails for joiners, who then pass through).
			return !c.res.grow.tooLarge()
		}
		return c.res.e == nil || c.res.e.Age(now) >= c.res.e.Fresh
	default:
		return false
	}
}

// doFill fetches from the origin and builds (and stores) the entry.
func (h *Handler) doFill(st *reqState, key2 string, stale *cache.Entry) fillResult {
	b := st.b
	ctx, cancel := context.WithTimeout(h.bgCtx, b.readTO)
	req := h.originRequest(ctx, st, http.MethodGet, false)
	if stale != nil && !stale.HitForMiss {
		if stale.ETag != "" {
			req.Header.Set("If-None-Match", stale.ETag)
		}
		if !stale.LastModified.IsZero() {
			req.Header.Set("If-Modified-Since", stale.LastModified.UTC().Format(http.TimeFormat))
		}
	}
	seq := h.store.Seq()
	reqTime := time.Now()
	resp, err := b.origin.RoundTrip(req)
	return h.finishFill(st, key2, stale, resp, err, reqTime, seq, cancel, true)
}

// finishFill builds (and stores) the entry from an origin's answer to a
// fill (doFill's, or the pass relay's); cancel ends the fetch's context
// once the body is no longer needed. mayStream lets a large cacheable
// body be streamed to the viewers as it is filled (streamFill).
func (h *Handler) finishFill(st *reqState, key2 string, stale *cache.Entry, resp *http.Response, err error, reqTime time.Time, seq uint64, cancel context.CancelFunc, mayStream bool) fillResult {
	b := st.b
	if err != nil {
		cancel()
		return fillResult{err: err, upAddr: b.origin.Name()}
	}
	respTime := time.Now()
	res := fillResult{upAddr: b.origin.Name(), upStatus: resp.StatusCode, upDur: respTime.Sub(reqTime), status: stMiss}
	if resp.StatusCode == http.StatusNotModified && stale != nil && !stale.HitForMiss {
		resp.Body.Close()
		cancel()
		hdr := cache.MergeHeader(stale.Header, resp.Header)
		e, ok := h.newEntry(st, stale.Status, hdr, stale.Body, reqTime, respTime, seq, stale.ID)
		res.e, res.key, res.status = e, key2, stRefreshHit
		if ok {
			res.key = h.put(st, e)
			res.stored = true
		} else {
			res.private = true
		}
		return res
	}
	limit := st.s.maxObject
	if resp.ContentLength > limit {
		h.m.streamed.Inc()
		h.markTooLarge(st, resp.Header, seq)
		resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
		res.stream = resp
		return res
	}
	if mayStream && resp.StatusCode == http.StatusOK && resp.ContentLength >= streamFillMin {
		return h.streamFill(st, key2, resp, reqTime, respTime, seq, cancel, res, nil, 0)
	}
	// fail ends the fetch with err from reading the body.
	fail := func(err error) fillResult {
		resp.Body.Close()
		cancel()
		return fillResult{err: err, upAddr: res.upAddr, upStatus: res.upStatus}
	}
	var body []byte // read whole here
	if _, tells := resp.Body.(pendingBody); tells && mayStream && resp.StatusCode == http.StatusOK && resp.ContentLength > 0 {
		// Shorter than streamFillMin: read while it keeps coming, and
		// streamed from there on if a read would wait (an origin that
		// sends the first bytes and takes its time over the rest), else
		// read whole. A body that cannot tell (a TLS origin's) is read
		// whole below: its first read ends with a TLS record.
		body = make([]byte, resp.ContentLength)
		n, err := readWhileComing(resp.Body, body, min(sniffLen, len(body)))
		switch {
		case n == len(body):
		case err == nil:
			return h.streamFill(st, key2, resp, reqTime, respTime, seq, cancel, res, body, n)
		case err == io.EOF:
			return fail(io.ErrUnexpectedEOF)
		default:
			return fail(err)
		}
	}
	if mayStream && resp.StatusCode == http.StatusOK && resp.ContentLength < 0 && limit > streamFillMin {
		// Of unknown length: read while it keeps coming (up to
		// streamFillMin), and streamed to the leader from there on once a
		// read would wait, as Varnish streams, so that a page whose head
		// the origin flushes early is not held back; a body that has ended
		// by then is delivered whole (with its length).
		head := make([]byte, streamFillMin)
		atLeast := 1
		if resp.Header.Get("Content-Type") == "" {
			atLeast = sniffLen // for newEntry's content sniffing
		}
		n, err := readWhileComing(resp.Body, head, atLeast)
		switch {
		case err == io.EOF:
			body = bytes.Clone(head[:n])
		case err != nil:
			return fail(err)
		default:
			if res, ok := h.streamUnknown(st, resp, head, n, reqTime, respTime, seq, cancel, res); ok {
				return res
			}
			// Not to be stored: read whole below.
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(head[:n]), resp.Body), resp.Body}
		}
	}
	var over bool
	if body == nil {
		body, over, err = readBody(resp.Body, resp.ContentLength, limit)
	}
	if over {
		h.m.streamed.Inc()
		h.markTooLarge(st, resp.Header, seq)
		resp.Body = &cancelBody{ReadCloser: struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}, cancel: cancel}
		res.stream, res.have = resp, int64(len(body))
		return res
	}
	if err != nil {
		return fail(err)
	}
	resp.Body.Close()
	cancel()
	e, ok := h.newEntry(st, resp.StatusCode, resp.Header, body, reqTime, respTime, seq, cache.NewID())
	res.e, res.key = e, key2
	switch {
	case ok:
		res.key = h.put(st, e)
		res.stored = true
	case resp.StatusCode >= 500 && resp.Header.Get("Set-Cookie") == "" && !strings.Contains(resp.Header.Get("Cache-Control"), "private"):
		// An origin error may be shared with the waiters.
	default:
		res.private = true
		h.renewHitForMiss(st, respTime)
	}
	return res
}

// readWhileComing reads body into p until p is full, the body ends (its
// error, io.EOF among them), or at least atLeast bytes have come and a
// read would wait (pending).
func readWhileComing(body io.Reader, p []byte, atLeast int) (n int, err error) {
	for err == nil && n < len(p) && (n < atLeast || pending(body)) {
		var m int
		m, err = body.Read(p[n:])
		n += m
	}
	return n, err
}

// pending reports whether more of an origin's body can be read without
// waiting (origin's plain-HTTP bodies can tell); false when it cannot
// be told.
func pending(body io.Reader) bool {
	p, ok := body.(pendingBody)
	return ok && p.Pending()
}

// pendingBody is an origin's body that can tell whether a read would wait
// (origin's plain-HTTP bodies).
type pendingBody interface{ Pending() bool }

// renewHitForMiss marks the key of an answer that cannot be stored, or
// renews its marker. Only past half the marker's life: a Set per request
// would cost more than the rest of a pass-through request.
func (h *Handler) renewHitForMiss(st *reqState, respTime time.Time) {
	if m, ok := h.store.Get(st.key); !ok || !m.HitForMiss || isTooLarge(m) || m.Age(respTime) > m.Keep/2 {
		h.markHitForMiss(st)
	}
}

// errorTTL caps the heuristic lifetime of error responses.
const errorTTL = 10 * time.Second

// put stores e (under a Vary marker when it varies) and returns its key.
func (h *Handler) put(st *reqState, e *cache.Entry) string {
	k2 := storeKey(st, e)
	h.putAt(st.s, st.key, k2, e)
	return k2
}

// storeKey is the key e is stored under for st's request: its variant's
// when it varies.
func storeKey(st *reqState, e *cache.Entry) string {
	if len(e.Vary) == 0 {
		return st.key
	}
	return varyKey(st.key, e.Vary, st.r)
}

// putAt stores e under k2, with a Vary marker under key when they differ.
func (h *Handler) putAt(s *snapshot, key, k2 string, e *cache.Entry) {
	if e.Blob == nil && s.wantsBlob(int64(len(e.Body))) {
		e.Blob = cache.NewBlob(s.sendfileDir, e.Body)
	}
	if len(e.Vary) == 0 {
		h.store.Set(key, e)
		return
	}
	marker := &cache.Entry{
		VaryMarker: true, Vary: e.Vary, Seq: e.Seq, ResponseTime: e.ResponseTime,
		InitialAge: e.InitialAge, Fresh: e.Fresh, SWR: e.SWR, SIE: e.SIE, Keep: e.Keep, NoStale: e.NoStale,
		Dist: e.Dist, Host: e.Host, Path: e.Path, Tags: e.Tags,
	}
	h.store.Set(key, marker)
	h.store.Set(k2, e)
}

// tooLargeStatus (413 Content Too Large) in a hit-for-miss marker says
// the response was too large to cache, not merely unshareable: requests
// for the key then pass to the origin with their Range and conditionals
// (passLarge) instead of fetching whole objects.
const tooLargeStatus = http.StatusRequestEntityTooLarge

// tooLargeTTL is how long a too-large marker lives; pass-through answers
// that still show a large object renew it (noteLength).
const tooLargeTTL = 2 * time.Minute

func isTooLarge(e *cache.Entry) bool { return e.HitForMiss && e.Status == tooLargeStatus }

// markTooLarge leaves a too-large marker under the request's key; seq is
// taken when the origin request started. The marker is an ordinary small
// entry: bounded by the cache budget, removed by invalidations of the
// path, host or the response's tags.
func (h *Handler) markTooLarge(st *reqState, hdr http.Header, seq uint64) {
	h.store.Set(st.key, tooLargeMarker(seq, st.b.d.name, strings.ToLower(st.r.Host), st.r.URL.Path, cache.ParseTags(hdr)))
}

// tooLargeMarker is a too-large marker for an object of distribution
// dist (host, path and tags for invalidations).
func tooLargeMarker(seq uint64, dist, host, path string, tags []string) *cache.Entry {
	return &cache.Entry{
		HitForMiss: true, Status: tooLargeStatus, ResponseTime: time.Now(), Keep: tooLargeTTL, NoStale: true,
		Seq: seq, Dist: dist, Host: host, Path: path, Tags: tags,
	}
}

func (h *Handler) markHitForMiss(st *reqState) {
	h.store.Set(st.key, &cache.Entry{
		HitForMiss: true, ResponseTime: time.Now(), Keep: 2 * time.Minute, NoStale: true,
		Seq: h.store.Seq(), Dist: st.b.d.name, Path: st.r.URL.Path,
	})
}

// newEntry builds an entry; ok tells whether it may be stored.
func (h *Handler) newEntry(st *reqState, status int, hdr http.Header, body []byte, reqTime, respTime time.Time, seq, id uint64) (*cache.Entry, bool) {
	b := st.b
	pol := b.policy
	if er, ok := b.errors[status]; ok {
		pol.DefaultTTL, pol.MaxTTL, pol.MinTTL = er.ttl, er.ttl, 0
	} else if status >= 400 {
		// Errors without freshness information are cached briefly (as
		// CloudFront's 10 s error caching TTL), not for the default TTL.
		pol.DefaultTTL = min(pol.DefaultTTL, errorTTL)
	}
	hasAuth := slices.Contains(b.keyHeaders, "Authorization") && st.r.Header.Get("Authorization") != ""
	dec := cache.Decide(status, hdr, hasAuth, pol, respTime)
	stored := cache.StoredHeader(hdr)
	tags := cache.ParseTags(hdr)
	delete(stored, "Surrogate-Key")
	delete(stored, "Surrogate-Control")
	delete(stored, "Content-Length")
	vary := cache.VaryFields(hdr)
	vary = slices.DeleteFunc(vary, func(f string) bool { return f == "Accept-Encoding" })
	if _, ok := stored["Content-Type"]; !ok && len(body) > 0 && status != http.StatusNoContent {
		// What net/http would add when serving it; stored once instead.
		stored["Content-Type"] = []string{http.DetectContentType(body)}
	}
	if b.compress && compressible(status, stored) && !slices.Contains(cache.VaryFields(stored), "Accept-Encoding") {
		stored["Vary"] = append(slices.Clip(stored["Vary"]), "Accept-Encoding")
	}
	e := &cache.Entry{
		Status: status, Header: stored, Body: body, Seq: seq, ID: id,
		ResponseTime: respTime, InitialAge: cache.CorrectedInitialAge(hdr, reqTime, respTime),
		Fresh: dec.Fresh, SWR: dec.SWR, SIE: dec.SIE, NoStale: dec.NoStale, Keep: pol.Keep,
		ETag: hdr.Get("ETag"), Vary: vary, Tags: tags, Encoding: hdr.Get("Content-Encoding"),
		Dist: b.d.name, Host: strings.ToLower(st.r.Host), Path: st.r.URL.Path,
		ContentLength: []string{strconv.Itoa(len(body))},
	}
	if dec.Store && status != http.StatusNoContent && status != http.StatusNotModified {
		// The fast path's pre-serialised header block: only stored
		// entries are served by it.
		e.Wire = cache.WireHeader(stored, e.ContentLength[0])
	}
	if lm, ok := cache.ParseHTTPDate(hdr.Get("Last-Modified")); ok {
		e.LastModified = lm
	}
	if e.ETag == "" && e.LastModified.IsZero() {
		e.Keep = 0 // nothing to revalidate with
	}
	return e, dec.Store
}

// readBody reads up to limit bytes; over reports that the body is longer
// (body then holds what was read so far).
func readBody(r io.Reader, length, limit int64) (body []byte, over bool, err error) {
	if length >= 0 {
		body = make([]byte, length)
		if length >= prefaultMin {
			_ = prefault(body)
		}
		_, err = io.ReadFull(r, body)
		if err != nil {
			return nil, false, err
		}
		return body, false, nil
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, false, err
	}
	if n > limit {
		return buf.Bytes(), true, nil
	}
	return bytes.Clone(buf.Bytes()), false, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelBody) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// originRequest builds the request sent to the origin. Cache fills carry
// only what is in the cache key (so nothing outside the key can change a
// cached response); passes (unsafe methods) carry every end-to-end field
// and the body.
func (h *Handler) originRequest(ctx context.Context, st *reqState, method string, all bool) *http.Request {
	r, b := st.r, st.b
	u := &url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: st.query}
	if all {
		u.RawQuery = r.URL.RawQuery
	}
	req := (&http.Request{Method: method, URL: u, Header: http.Header{}, Host: r.Host, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
	if all {
		for k, vs := range cache.StoredHeader(r.Header) {
			req.Header[k] = vs
		}
		req.Header.Del("Accept-Encoding")
		if r.Body != nil && r.Body != http.NoBody {
			req.Body = http.MaxBytesReader(nil, r.Body, st.s.maxBody)
			req.ContentLength = r.ContentLength
			if r.ContentLength == 0 {
				req.ContentLength = -1
			}
		}
	} else {
		for _, k := range b.keyHeaders {
			if vs, ok := r.Header[k]; ok {
				req.Header[k] = vs
			}
		}
		if len(b.keyCookies) > 0 {
			var parts []string
			for _, name := range b.keyCookies {
				if c, err := r.Cookie(name); err == nil {
					parts = append(parts, c.Name+"="+c.Value)
				}
			}
			if len(parts) > 0 {
				req.Header.Set("Cookie", strings.Join(parts, "; "))
			}
		}
	}
	xff := peerAddr(r).String()
	if prior := r.Header.Values("X-Forwarded-For"); len(prior) > 0 && len(st.s.trusted) > 0 {
		xff = strings.Join(prior, ", ") + ", " + xff
	}
	req.Header.Set("X-Forwarded-For", xff)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	req.Header.Set("X-Forwarded-Proto", proto)
	req.Header.Set("X-Forwarded-Host", r.Host)
	via := strconv.Itoa(r.ProtoMajor) + "." + strconv.Itoa(r.ProtoMinor) + " edged"
	if prior := r.Header.Values("Via"); len(prior) > 0 {
		via = strings.Join(prior, ", ") + ", " + via
	}
	req.Header.Set("Via", via)
	return req
}

// revalidateAsync refreshes a stale entry in the background (RFC 5861
// stale-while-revalidate); at most one per key.
func (h *Handler) revalidateAsync(st *reqState, key2 string, e *cache.Entry) {
	h.mu.Lock()
	_, busy := h.flight[key2]
	h.mu.Unlock()
	if busy || h.bgCtx.Err() != nil {
		return
	}
	sub := *st
	sub.r = st.r.WithContext(h.bgCtx)
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		switch res := h.fill(&sub, key2, e); {
		case res.stream != nil:
			res.stream.Body.Close() // grew too large: nobody to stream it to
		case res.grow != nil && res.leader:
			res.grow.leave() // nobody to stream it to: the fill reads on its own
		}
	}()
}
