package h2

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

var errAbortHandler any = http.ErrAbortHandler

var errShortBody = errors.New("h2: handler wrote less than its Content-Length")

// bodyBuffer is how much of a body is held before the HEADERS frame goes
// out: a handler that ends within it gets a content-length.
const bodyBuffer = 16 << 10

// responseWriter is a stream's http.ResponseWriter.
type responseWriter struct {
	st          *stream
	inline      bool // on the reading goroutine: never wait for a window
	h           http.Header
	status      int
	wroteHeader bool
	sentHeader  bool
	bodyOK      bool
	isHead      bool
	declared    int64 // the handler's Content-Length, or -1
	written     int64
	buf         []byte
	bufp        *[]byte  // buf's pooled backing, returned once the head is out
	pending     []byte   // inline: what the windows did not let out yet
	trailerKeys []string // declared in Trailer when the head went out
}

func (st *stream) newWriter(req *http.Request, inline bool) *responseWriter {
	return &responseWriter{st: st, inline: inline, declared: -1, isHead: req.Method == "HEAD"}
}

// release undoes an Inline call that declined the request.
func (w *responseWriter) release() { *w = responseWriter{} }

func (w *responseWriter) Header() http.Header {
	if w.h == nil {
		w.h = make(http.Header, 8)
	}
	return w.h
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("h2: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 {
		if code != 101 {
			w.informational(code)
		}
		return
	}
	w.wroteHeader = true
	w.status = code
	w.bodyOK = code != 204 && code != 304
	if v := w.h.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			w.h.Del("Content-Length")
		}
	}
}

// informational sends a 1xx response (103 Early Hints, ...) at once.
func (w *responseWriter) informational(code int) {
	sc := w.st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if w.st.aborted != nil || sc.closed {
		return
	}
	_ = sc.writeHeadersLocked(w.st, code, w.h, nil, false)
	if !w.inline {
		sc.flushLocked()
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyOK {
		return 0, http.ErrBodyNotAllowed
	}
	if w.isHead {
		return len(p), nil
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.sentHeader && len(w.buf)+len(p) <= bodyBuffer {
		if w.buf == nil {
			w.bufp = bodyBufs.Get().(*[]byte)
			w.buf = (*w.bufp)[:0]
		}
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	sc := w.st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if err := w.sendHeaderLocked(false, p); err != nil {
		return 0, err
	}
	if err := w.sendLocked(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *responseWriter) WriteString(s string) (int, error) {
	return w.Write([]byte(s))
}

// Flush sends the head and what is buffered.
func (w *responseWriter) Flush() { _ = w.FlushError() }

func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	sc := w.st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if err := w.sendHeaderLocked(false, nil); err != nil {
		return err
	}
	if w.inline {
		return nil // the reading goroutine flushes
	}
	return sc.flushLocked()
}

// sendHeaderLocked sends HEADERS and the buffered body unless they went
// out already; next is the body's next write, for sniffing its type.
func (w *responseWriter) sendHeaderLocked(end bool, next []byte) error {
	st := w.st
	if st.aborted != nil {
		return st.aborted
	}
	if w.sentHeader {
		return nil
	}
	w.sentHeader = true
	h := w.Header()
	if _, ok := h["Content-Type"]; !ok && w.bodyOK && !w.isHead && len(w.buf)+len(next) > 0 {
		sniff := w.buf
		if len(sniff) == 0 {
			sniff = next
		}
		h["Content-Type"] = []string{http.DetectContentType(sniff)}
	}
	w.trailerKeys = declaredTrailers(h["Trailer"], w.trailerKeys)
	buf, bufp := w.buf, w.bufp
	w.buf, w.bufp = nil, nil
	if bufp != nil {
		// sendLocked copies what it sends into the connection's buffer
		// (and what the windows hold back into w.pending).
		defer bodyBufs.Put(bufp)
	}
	if err := st.sc.writeHeadersLocked(st, w.status, h, w.trailerKeys, end && len(buf) == 0); err != nil {
		return err
	}
	if len(buf) > 0 {
		return w.sendLocked(buf, end)
	}
	return nil
}

// bodyBufs hold the first bodyBuffer bytes of responses until their
// HEADERS frame goes out: one allocation saved per response.
var bodyBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, bodyBuffer)
	return &b
}}

// sendLocked sends body bytes as DATA frames within the send windows,
// waiting for WINDOW_UPDATEs on a handler's goroutine and leaving the
// rest pending on the reading goroutine.
func (w *responseWriter) sendLocked(p []byte, end bool) error {
	st, sc := w.st, w.st.sc
	if w.pending != nil {
		w.pending = append(w.pending, p...)
		return nil
	}
	for {
		if st.aborted != nil {
			return st.aborted
		}
		if sc.werr != nil {
			return sc.werr
		}
		if len(p) == 0 {
			if end {
				st.endSent = true
				return sc.fr.WriteData(st.id, true, nil)
			}
			return nil
		}
		n := min(int64(len(p)), st.send, sc.connSend, int64(sc.peerFrame))
		if n <= 0 {
			if w.inline {
				w.pending = append([]byte{}, p...)
				return nil
			}
			if len(sc.out) > 0 && !sc.flushing {
				// Let the client see what it has; flushLocked releases mu,
				// so look at the windows again before waiting.
				if err := sc.flushLocked(); err != nil {
					return err
				}
				continue
			}
			sc.windowCond.Wait()
			continue
		}
		if err := sc.roomLocked(); err != nil {
			return err
		}
		if st.aborted != nil {
			return st.aborted
		}
		n = min(n, st.send, sc.connSend) // the room wait may have let others send
		if n <= 0 {
			continue
		}
		last := n == int64(len(p))
		if end && last {
			st.endSent = true
		}
		if err := sc.fr.WriteData(st.id, end && last, p[:n]); err != nil {
			return err
		}
		st.send -= n
		sc.connSend -= n
		p = p[n:]
		if last {
			return nil
		}
	}
}

// finish completes the response once the handler has returned.
func (w *responseWriter) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	st, sc := w.st, w.st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	trailers := w.trailers()
	if !w.sentHeader && len(trailers) == 0 && w.bodyOK && !w.isHead && w.declared < 0 {
		w.Header()["Content-Length"] = []string{strconv.Itoa(len(w.buf))}
	}
	// A body shorter than the Content-Length the handler declared is not
	// ended as if whole: the stream is reset (RFC 9113 8.1.1), as
	// net/http's server does.
	short := w.bodyOK && !w.isHead && w.declared >= 0 && w.written < w.declared
	err := w.sendHeaderLocked(!short && len(trailers) == 0 && len(w.h["Trailer"]) == 0, nil)
	if err == nil && short {
		err = errShortBody
	}
	if err == nil && w.pending != nil {
		// Inline, windows exhausted: a goroutine finishes the body.
		go w.drain(trailers)
		return
	}
	if err == nil {
		err = w.endLocked(trailers)
	}
	st.handlerDone = true
	if err != nil && st.aborted == nil {
		sc.resetLocked(st, http2.ErrCodeInternal)
	}
	sc.endLocked(st)
	if !w.inline {
		sc.flushSoonLocked() // the reading goroutine flushes inline answers
	}
}

// endLocked ends the stream after the body: trailers, or an empty DATA
// frame with END_STREAM when the HEADERS frame did not carry it.
func (w *responseWriter) endLocked(trailers http.Header) error {
	st := w.st
	if st.aborted != nil {
		return nil
	}
	if len(trailers) > 0 {
		return st.sc.writeTrailersLocked(st, trailers)
	}
	if st.endSent {
		return nil // on the HEADERS frame or the last DATA frame
	}
	return w.sendLocked(nil, true)
}

func (w *responseWriter) drain(trailers http.Header) {
	st, sc := w.st, w.st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	p := w.pending
	w.pending, w.inline = nil, false
	err := w.sendLocked(p, len(trailers) == 0)
	if err == nil && len(trailers) > 0 {
		err = sc.writeTrailersLocked(st, trailers)
	}
	st.handlerDone = true
	if err != nil && st.aborted == nil {
		sc.resetLocked(st, http2.ErrCodeInternal)
	}
	sc.endLocked(st)
	sc.flushSoonLocked()
}

// trailers collects the response trailers: keys declared in Trailer
// before the head went out, and keys set with http.TrailerPrefix.
func (w *responseWriter) trailers() http.Header {
	var t http.Header
	for k, vv := range w.h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if t == nil {
				t = http.Header{}
			}
			t[http.CanonicalHeaderKey(strings.TrimPrefix(k, http.TrailerPrefix))] = vv
		}
	}
	keys := w.trailerKeys
	if !w.sentHeader {
		keys = declaredTrailers(w.h["Trailer"], nil)
	}
	for _, k := range keys {
		if vv, ok := w.h[k]; ok {
			if t == nil {
				t = http.Header{}
			}
			t[k] = vv
		}
	}
	return t
}

// writeHeadersLocked encodes and sends a HEADERS frame (and CONTINUATION
// frames past the client's frame size).
func (sc *conn) writeHeadersLocked(st *stream, status int, h http.Header, trailerKeys []string, end bool) error {
	if sc.closed {
		return errStreamClosed
	}
	sc.hbuf.Reset()
	_ = sc.henc.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(status)})
	sawDate := false
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || slices.Contains(trailerKeys, k) {
			continue
		}
		lk := lowerKey(k)
		switch lk {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade", "te":
			continue
		case "date":
			sawDate = true
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				_ = sc.henc.WriteField(hpack.HeaderField{Name: lk, Value: v})
			}
		}
	}
	if !sawDate && status >= 200 {
		_ = sc.henc.WriteField(hpack.HeaderField{Name: "date", Value: httpDate()})
	}
	if end {
		st.endSent = true
	}
	if status >= 200 {
		st.needsContinue = false
	}
	return sc.writeBlockLocked(st.id, end)
}

func (sc *conn) writeTrailersLocked(st *stream, t http.Header) error {
	if sc.closed {
		return errStreamClosed
	}
	sc.hbuf.Reset()
	for k, vv := range t {
		lk := strings.ToLower(k)
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				_ = sc.henc.WriteField(hpack.HeaderField{Name: lk, Value: v})
			}
		}
	}
	st.endSent = true
	return sc.writeBlockLocked(st.id, true)
}

func (sc *conn) writeBlockLocked(id uint32, end bool) error {
	block := sc.hbuf.Bytes()
	max := int(sc.peerFrame)
	n := min(len(block), max)
	if err := sc.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: block[:n], EndStream: end, EndHeaders: n == len(block),
	}); err != nil {
		return err
	}
	for block = block[n:]; len(block) > 0; block = block[n:] {
		n = min(len(block), max)
		if err := sc.fr.WriteContinuation(id, n == len(block), block[:n]); err != nil {
			return err
		}
	}
	return nil
}

var statusTexts = func() map[int]string {
	m := map[int]string{}
	for c := 100; c < 600; c++ {
		if http.StatusText(c) != "" {
			m[c] = strconv.Itoa(c)
		}
	}
	return m
}()

func statusText(code int) string {
	if s, ok := statusTexts[code]; ok {
		return s
	}
	return strconv.Itoa(code)
}

// httpDate is the Date field's value, formatted once a second.
func httpDate() string {
	now := time.Now()
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d.text
	}
	d := &cachedDate{sec: sec, text: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}

type cachedDate struct {
	sec  int64
	text string
}

var dateCache atomic.Pointer[cachedDate]
