package edge

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/edgestack/edgestack/edge/cache"
)

// ageValues are shared Age header values for the first hour.
var ageValues = func() [3600][]string {
	var out [3600][]string
	for i := range out {
		out[i] = []string{strconv.Itoa(i)}
	}
	return out
}()

func ageValue(age time.Duration) []string {
	s := int64(age / time.Second)
	if s >= 0 && s < int64(len(ageValues)) {
		return ageValues[s]
	}
	return []string{strconv.FormatInt(s, 10)}
}

// deliver writes a (shared, read-only) entry to the viewer.
func (h *Handler) deliver(w http.ResponseWriter, st *reqState, e *cache.Entry, key2 string, age time.Duration) {
	b, r := st.b, st.r
	if e.Status >= 400 && st.depth == 0 {
		if er, ok := b.errors[e.Status]; ok && er.page != "" && h.errorPage(w, st, er) {
			return
		}
	}
	if b.compress && e.Encoding == "" && e.Status == http.StatusOK {
		if enc := negotiate(r.Header["Accept-Encoding"]); enc != "" && compressible(e.Status, e.Header) {
			if ce := h.encoded(st, key2, e, enc); ce != nil {
				e = ce
			}
		}
	}
	hdr := w.Header()
	setEntryHeader(hdr, b, e, age, st.status)
	code := e.Status
	if er, ok := b.errors[e.Status]; ok && st.depth == 0 {
		code = er.code
	}
	if code == http.StatusOK && hasConditional(r.Header) {
		cw := codeWriter{ResponseWriter: w, code: http.StatusOK}
		http.ServeContent(&cw, r, "", e.LastModified, bytes.NewReader(e.Body))
		st.code, st.bytes = cw.code, cw.n
		b.d.bytes.Add(float64(cw.n))
		return
	}
	if code != http.StatusNoContent && code != http.StatusNotModified {
		hdr["Content-Length"] = e.ContentLength
	}
	w.WriteHeader(code)
	st.code = code
	if r.Method != http.MethodHead {
		n, _ := w.Write(e.Body)
		st.bytes = int64(n)
		b.d.bytes.Add(float64(n))
	}
}

// setEntryHeader sets the fields of a response from entry e and counts
// the request under its cache status.
func setEntryHeader(hdr http.Header, b *behavior, e *cache.Entry, age time.Duration, status int) {
	for k, v := range e.Header {
		hdr[k] = v
	}
	for _, f := range b.headers {
		hdr[f.key] = f.value
	}
	hdr["Age"] = ageValue(age)
	hdr["X-Cache"] = xcache[status]
	b.d.counters[status].Inc()
}

func hasConditional(h http.Header) bool {
	if len(h) == 0 {
		return false
	}
	if _, ok := h["Range"]; ok {
		return true
	}
	return hasPrecondition(h)
}

// hasPrecondition reports whether h has a conditional field other than
// Range.
func hasPrecondition(h http.Header) bool {
	for _, k := range [...]string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"} {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

type codeWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (c *codeWriter) WriteHeader(code int) { c.code = code; c.ResponseWriter.WriteHeader(code) }
func (c *codeWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// errorPage serves a custom error page fetched through the distribution.
func (h *Handler) errorPage(w http.ResponseWriter, st *reqState, er errorResponse) bool {
	u := *st.r.URL
	u.Path, u.RawPath, u.RawQuery = er.page, "", ""
	r2 := st.r.WithContext(st.r.Context())
	r2.URL = &u
	r2.Method = http.MethodGet
	r2.Header = http.Header{}
	sub := &reqState{r: r2, s: st.s, now: st.now, depth: 1, client: st.client}
	sub.b = st.b.d.behavior(er.page)
	sub.key, sub.query = sub.b.cacheKey(r2)
	e, key2 := h.lookup(sub.key, r2)
	if e == nil || e.HitForMiss || e.Age(st.now) >= e.Fresh {
		res := h.fill(sub, key2, e)
		if res.stream != nil {
			res.stream.Body.Close() // too large for an error page
		}
		if res.err != nil || res.e == nil {
			return false
		}
		e = res.e
		if g := res.grow; g != nil {
			// The page's body is still arriving: wait for all of it.
			if res.leader {
				g.leave()
			}
			if g.wait(st.r.Context()) != nil {
				return false
			}
			e = g.entry(e)
		}
	}
	if e.Status != http.StatusOK {
		return false
	}
	hdr := w.Header()
	for k, v := range e.Header {
		hdr[k] = v
	}
	for _, f := range st.b.headers {
		hdr[f.key] = f.value
	}
	delete(hdr, "ETag")
	delete(hdr, "Last-Modified")
	hdr["Cache-Control"] = []string{"no-store"}
	hdr["X-Cache"] = xcache[stError]
	hdr["Content-Length"] = e.ContentLength
	if st.status == stHit || st.status == stMiss || st.status == stRefreshHit || st.status == stStale {
		hdr["X-Cache"] = xcache[st.status]
	} else {
		st.status = stError
	}
	st.b.d.counters[st.status].Inc()
	w.WriteHeader(er.code)
	st.code = er.code
	if st.r.Method != http.MethodHead {
		n, _ := w.Write(e.Body)
		st.bytes = int64(n)
	}
	return true
}

// pass forwards the request to the origin without caching, streaming the
// answer; invalidate drops the URL's cached objects after a successful
// unsafe method (RFC 9111 4.4).
func (h *Handler) pass(w http.ResponseWriter, st *reqState, invalidate bool) {
	r, b := st.r, st.b
	st.status = stPass
	if r.ContentLength > st.s.maxBody {
		h.refuse(w, st, b.d, http.StatusRequestEntityTooLarge, "request body larger than limits.max_body_size")
		return
	}
	resp := h.passRoundTrip(w, st, h.originRequest(r.Context(), st, r.Method, true))
	if resp == nil {
		return
	}
	if invalidate && resp.StatusCode < 400 {
		bans := []cache.Ban{{Dist: b.d.name, Path: r.URL.Path}}
		for _, f := range []string{"Location", "Content-Location"} {
			if loc := resp.Header.Get(f); strings.HasPrefix(loc, "/") {
				p, _, _ := strings.Cut(loc, "?")
				bans = append(bans, cache.Ban{Dist: b.d.name, Path: p})
			}
		}
		h.store.Invalidate(bans...)
	}
	h.stream(w, st, resp, relay(resp))
}

// passRoundTrip sends a pass-through request. When the origin gives no
// response it answers the viewer (413, 502, 504) and returns nil.
func (h *Handler) passRoundTrip(w http.ResponseWriter, st *reqState, req *http.Request) *http.Response {
	return h.sendPass(w, st, req, st.b.origin.RoundTrip)
}

// sendPass is passRoundTrip through send.
func (h *Handler) sendPass(w http.ResponseWriter, st *reqState, req *http.Request, send func(*http.Request) (*http.Response, error)) *http.Response {
	r, b := st.r, st.b
	start := time.Now()
	resp, err := send(req)
	st.upAddr, st.upDur = b.origin.Name(), time.Since(start)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.refuse(w, st, b.d, http.StatusRequestEntityTooLarge, "request body larger than limits.max_body_size")
			return nil
		}
		code := http.StatusBadGateway
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			code = http.StatusGatewayTimeout
		}
		h.log.Warn("origin request failed", "distribution", b.d.name, "method", r.Method, "path", r.URL.Path, "err", err)
		h.errorResponse(w, st, code, "origin unreachable or failed")
		return nil
	}
	st.upStatus = resp.StatusCode
	return resp
}

// passFields are the viewer fields a pass-through of a too-large object
// forwards besides the cache key's parts: the origin answers Range
// (206/416) and the conditionals (304/412) itself.
var passFields = [...]string{"Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"}

// passLarge forwards a GET or HEAD for an object too large to cache
// straight to the origin (no coalescing: each viewer wants its own
// range), with the cache key's parts plus passFields, and relays the
// answer uncached. marker is the too-large marker that sent it here (nil
// for requests that joined the fill which found the object too large).
func (h *Handler) passLarge(w http.ResponseWriter, st *reqState, marker *cache.Entry) {
	r := st.r
	st.status = stPass
	req := h.originRequest(r.Context(), st, r.Method, false)
	for _, k := range passFields {
		if vs, ok := r.Header[k]; ok {
			req.Header[k] = vs
		}
	}
	seq := h.store.Seq()
	resp := h.passRoundTrip(w, st, req)
	if resp == nil {
		return
	}
	h.m.streamed.Inc()
	if marker != nil {
		h.noteLength(st, marker, resp, seq)
	}
	h.stream(w, st, resp, relay(resp))
}

// noteLength renews the too-large marker (past half its life) while
// pass-through answers still show a large object, so busy objects are
// not fetched whole again, and drops it once an answer shows the object
// now fits, so the next request fills the cache.
func (h *Handler) noteLength(st *reqState, marker *cache.Entry, resp *http.Response, seq uint64) {
	size := int64(-1)
	switch resp.StatusCode {
	case http.StatusOK:
		size = resp.ContentLength
	case http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
		size = contentRangeLength(resp.Header.Get("Content-Range"))
	}
	switch {
	case size < 0:
	case size > st.s.maxObject:
		if marker.Age(time.Now()) > tooLargeTTL/2 {
			h.markTooLarge(st, resp.Header, seq)
		}
	default:
		if cur, ok := h.store.Get(st.key); ok && cur == marker {
			h.store.Del(st.key)
		}
	}
}

// stream copies an origin response to the viewer unbuffered, answering
// as a says (relay(resp): as it is).
func (h *Handler) stream(w http.ResponseWriter, st *reqState, resp *http.Response, a answer) {
	defer resp.Body.Close() // also ends the origin request early after a range
	b := st.b
	if st.status != stPass {
		st.status = stMiss
	}
	st.upStatus = resp.StatusCode
	if a.start > 0 {
		// Skip before the headers go out, so an origin failure can still
		// be answered; stop if the viewer leaves (fills run on the edge's
		// context, not the viewer's).
		n, err := io.CopyN(io.Discard, ctxReader{st.r.Context(), resp.Body}, a.start)
		st.upBytes = n
		if err != nil {
			if st.r.Context().Err() == nil {
				h.log.Warn("origin body failed before the requested range", "distribution", b.d.name, "path", st.r.URL.Path, "err", err)
			}
			h.errorResponse(w, st, http.StatusBadGateway, "origin body ended before the requested range")
			return
		}
	}
	hdr := w.Header()
	for k, vs := range cache.StoredHeader(resp.Header) {
		hdr[k] = vs
	}
	delete(hdr, "Surrogate-Key")
	delete(hdr, "Surrogate-Control")
	switch a.code {
	case http.StatusPartialContent:
		if a.contentRange != "" {
			hdr["Content-Range"] = []string{a.contentRange}
			hdr["Content-Length"] = []string{strconv.FormatInt(a.n, 10)}
		}
	case http.StatusNotModified:
		delete(hdr, "Content-Length")
		delete(hdr, "Content-Type")
		delete(hdr, "Content-Encoding")
	case http.StatusRequestedRangeNotSatisfiable:
		if a.contentRange != "" {
			hdr["Content-Range"] = []string{a.contentRange}
			hdr["Content-Length"] = []string{"0"}
			delete(hdr, "Content-Type")
			delete(hdr, "Content-Encoding")
		}
	}
	for _, f := range b.headers {
		hdr[f.key] = f.value
	}
	hdr["X-Cache"] = xcache[st.status]
	b.d.counters[st.status].Inc()
	w.WriteHeader(a.code)
	st.code = a.code
	if st.r.Method == http.MethodHead || (a.code != resp.StatusCode && a.code != http.StatusPartialContent) {
		return // HEAD, or a 304/416 made here: no body
	}
	var n int64
	var err error
	if a.n >= 0 {
		n, err = io.CopyN(w, resp.Body, a.n)
	} else {
		n, err = io.Copy(w, resp.Body)
	}
	st.bytes = n
	st.upBytes += n
	b.d.bytes.Add(float64(n))
	if err != nil {
		// Headers are gone: abort so the viewer sees a truncated
		// response rather than a clean end.
		panic(http.ErrAbortHandler)
	}
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// negotiate picks br or gzip from Accept-Encoding ("" for identity).
func negotiate(values []string) string {
	if len(values) == 0 {
		return ""
	}
	var br, gz bool
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
				if f, err := strconv.ParseFloat(q, 64); err != nil || f == 0 {
					continue
				}
			}
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "br":
				br = true
			case "gzip", "x-gzip":
				gz = true
			}
		}
	}
	switch {
	case br:
		return "br"
	case gz:
		return "gzip"
	}
	return ""
}

// compressible tells whether a response is worth compressing.
func compressible(status int, h http.Header) bool {
	return compressibleFields(status, h.Get("Content-Encoding"), h.Get("Cache-Control"), h.Get("Content-Type"))
}

// compressibleFields is compressible for the first values of the fields
// it reads.
func compressibleFields(status int, contentEncoding, cacheControl, contentType string) bool {
	if status != http.StatusOK || contentEncoding != "" || strings.Contains(cacheControl, "no-transform") {
		return false
	}
	ct, _, _ := mime.ParseMediaType(contentType)
	switch {
	case strings.HasPrefix(ct, "text/"):
		return true
	case strings.HasSuffix(ct, "+json"), strings.HasSuffix(ct, "+xml"):
		return true
	}
	switch ct {
	case "application/json", "application/javascript", "application/xml", "application/wasm",
		"image/svg+xml", "application/x-javascript", "application/manifest+json", "font/ttf", "font/otf":
		return true
	}
	return false
}

const minCompressSize = 256

// encoded returns the entry compressed with enc, from the cache or made
// now (coalesced) and stored beside the identity entry.
func (h *Handler) encoded(st *reqState, key2 string, e *cache.Entry, enc string) *cache.Entry {
	if len(e.Body) < minCompressSize {
		return nil
	}
	ek := key2 + "\x00e:" + enc
	if ce, ok := h.store.Get(ek); ok && ce.ID == e.ID {
		return ce
	}
	h.mu.Lock()
	if c, ok := h.flight[ek]; ok {
		h.mu.Unlock()
		<-c.done
		if c.res.e != nil && c.res.e.ID == e.ID {
			return c.res.e
		}
		return nil
	}
	c := &call{done: make(chan struct{})}
	h.flight[ek] = c
	h.mu.Unlock()
	ce := compressEntry(e, enc)
	c.res.e = ce
	close(c.done)
	stored := ce != nil && h.store.Set(ek, ce)
	finish := func() {
		h.mu.Lock()
		if h.flight[ek] == c {
			delete(h.flight, ek)
		}
		h.mu.Unlock()
	}
	if stored {
		go func() { h.store.Wait(); finish() }()
	} else {
		finish()
	}
	return ce
}

func compressEntry(e *cache.Entry, enc string) *cache.Entry {
	var buf bytes.Buffer
	buf.Grow(len(e.Body) / 3)
	var zw io.WriteCloser
	if enc == "br" {
		zw = brotli.NewWriterLevel(&buf, 5)
	} else {
		zw, _ = gzip.NewWriterLevel(&buf, 6)
	}
	if _, err := zw.Write(e.Body); err != nil {
		return nil
	}
	if err := zw.Close(); err != nil || buf.Len() >= len(e.Body) {
		return nil
	}
	hdr := make(http.Header, len(e.Header)+1)
	for k, v := range e.Header {
		hdr[k] = v
	}
	hdr["Content-Encoding"] = []string{enc}
	if et := e.ETag; et != "" && strings.HasSuffix(et, `"`) {
		hdr["Etag"] = nil
		delete(hdr, "Etag")
		hdr["ETag"] = []string{strings.TrimSuffix(et, `"`) + "-" + enc + `"`}
	}
	body := bytes.Clone(buf.Bytes())
	ce := *e
	ce.Header, ce.Body, ce.Encoding, ce.Blob = hdr, body, enc, nil
	ce.ContentLength = []string{strconv.Itoa(len(body))}
	ce.Wire = cache.WireHeader(hdr, ce.ContentLength[0])
	return &ce
}
