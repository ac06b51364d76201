package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/edgestack/edgestack/internal/httpguard"
	"github.com/edgestack/edgestack/internal/sockio"
	"golang.org/x/net/http/httpguts"
)

// Requests the hit path does not answer but that need nothing from
// net/http's server either (a GET or HEAD without a body or a protocol
// switch: misses, hit-for-miss passes, conditionals, ranges, compressed
// variants...) are served in place, through the full handler, on the same
// connection, which then stays with the fast server. Handing them over
// would cost, per request, net/http's read-ahead goroutine and its
// cancellation, a second parse of the head and its response buffering,
// about 10% of a pass-through request's CPU; and every later request on
// the connection, hits included, would stay on net/http's slower path.
// Requests with a body of a declared length (POST, PUT, PATCH, DELETE,
// OPTIONS) are served in place too, within the read timeout, and what the
// handler leaves of the body is dropped up to 256 KiB (past that the
// connection closes), as net/http does; chunked bodies, Expect:
// 100-continue, HTTP/1.0 and anything else unusual are still handed over.
// One difference remains: a request's context ends when its handler
// returns; a client that goes away meanwhile is noticed at the next write
// or body read, not at once by a read-ahead as in net/http (cache fills run
// on contexts of their own either way, and a streamed pass stops at that
// failed write).

// inlineable reports whether head (complete, from peekHead) can be served
// in place. Heads that net/http's server would refuse after parsing (no
// Host or two, a malformed Host, an invalid field) are left to it, so they
// get its answer.
func inlineable(head []byte) bool {
	eol := bytesIndex(head, "\r\n")
	if eol < 0 {
		return false
	}
	line := head[:eol]
	withBody := false // a method that may carry a body (a Content-Length)
	switch {
	case strings.HasPrefix(bstring(line), "GET /"), strings.HasPrefix(bstring(line), "HEAD /"):
	case strings.HasPrefix(bstring(line), "POST /"), strings.HasPrefix(bstring(line), "PUT /"),
		strings.HasPrefix(bstring(line), "PATCH /"), strings.HasPrefix(bstring(line), "DELETE /"),
		strings.HasPrefix(bstring(line), "OPTIONS /"):
		withBody = true
	default:
		return false
	}
	if !strings.HasSuffix(bstring(line), " HTTP/1.1") {
		return false
	}
	hosts, lengths := 0, 0
	rest := head[eol+2 : len(head)-2]
	for len(rest) > 0 {
		i := bytesIndex(rest, "\r\n")
		if i < 0 {
			return false
		}
		hl := rest[:i]
		rest = rest[i+2:]
		colon := strings.IndexByte(bstring(hl), ':')
		if colon <= 0 {
			return false
		}
		name, value := bstring(hl[:colon]), bstring(httpguard.TrimOWS(hl[colon+1:]))
		if withBody && asciiEq(hl[:colon], "content-length") {
			// One length of plain digits: the body is read in place.
			if lengths++; lengths > 1 || !allDigits(value) {
				return false
			}
			continue
		}
		if framingField(hl[:colon]) || !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return false
		}
		switch {
		case asciiEq(hl[:colon], "host"):
			hosts++
			if !httpguts.ValidHostHeader(value) {
				return false
			}
		case asciiEq(hl[:colon], "connection"):
			if !strings.EqualFold(value, "keep-alive") && !strings.EqualFold(value, "close") {
				return false
			}
		}
	}
	return hosts == 1
}

func bytesIndex(b []byte, sep string) int { return strings.Index(bstring(b), sep) }

func allDigits(s string) bool {
	if s == "" || len(s) > 18 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// bstring views b as a string without a copy, for lookups that do not
// keep it.
func bstring(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// inlineConn is what a connection keeps for its in-place and relayed
// requests.
type inlineConn struct {
	remote string
	w      inlineWriter
	relay  relayConn
}

// serveInline reads the request whose head is buffered in br and serves
// it through the full handler; closeAfter asks the caller to close the
// connection.
func (f *fastServer) serveInline(wc net.Conn, br *bufio.Reader, ic *inlineConn, tlsState *tls.ConnectionState) (closeAfter bool) {
	req, err := http.ReadRequest(br)
	if err != nil {
		writeInlineError(wc, http.StatusBadRequest, "malformed request")
		return true
	}
	req.RemoteAddr = ic.remote
	req.TLS = tlsState
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req = req.WithContext(ctx)
	w := &ic.w
	w.reset(wc, req)
	w.closing = &f.closing
	if f.write > 0 {
		_ = wc.SetWriteDeadline(time.Now().Add(f.write))
	}
	var body *inlineBody
	if req.Body != http.NoBody {
		body = &inlineBody{r: req.Body}
		req.Body = body
		if f.read > 0 {
			// The body must arrive within the read timeout, as net/http
			// bounds a whole request.
			_ = wc.SetReadDeadline(time.Now().Add(f.read))
		}
	}
	closeAfter = !f.runHandler(w, req) || w.finish() != nil || w.closeAfter
	if body != nil {
		// After the response, what the handler left of the body is read
		// and dropped, up to net/http's 256 KiB; past that the connection
		// closes. Either way nobody reads the connection through the body
		// from here on (an origin transport may still hold it). The read
		// deadline goes back to the idle timeout (never shorter than what
		// serveConn last set).
		if !body.finish(!closeAfter) {
			closeAfter = true
		}
		_ = wc.SetReadDeadline(time.Now().Add(f.idle))
	}
	return closeAfter
}

// maxDrain is how much of an unread request body is read to keep the
// connection (net/http's maxPostHandlerReadBytes).
const maxDrain = 256 << 10

// inlineBody is a request body read in place. Close by the handler or an
// origin transport is a no-op: the server finishes the body itself, and
// after that reads fail without touching the connection, which by then
// serves the next request (net/http's server body behaves so too).
type inlineBody struct {
	mu       sync.Mutex
	r        io.Reader // http.ReadRequest's body, over the connection
	eof      bool
	finished bool
}

func (b *inlineBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return n, err
}

func (b *inlineBody) Close() error { return nil }

// finish ends the body, first reading what is left up to maxDrain when
// drain is set; false when the body was not read to its end (the
// connection must close).
func (b *inlineBody) finish(drain bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = true
	if b.eof || !drain {
		return b.eof
	}
	_, err := io.CopyN(io.Discard, b.r, maxDrain)
	if err == nil {
		var one [1]byte
		_, err = io.ReadFull(b.r, one[:])
	}
	return errors.Is(err, io.EOF)
}

// runHandler calls the full handler; false after a panic, when the
// connection must close.
func (f *fastServer) runHandler(w http.ResponseWriter, req *http.Request) bool {
	return f.recovering(req.RequestURI, func() { f.full.ServeHTTP(w, req) })
}

// recovering runs serve (a request's handling); false after a panic
// (logged unless it is http.ErrAbortHandler, as net/http does).
func (f *fastServer) recovering(uri string, serve func()) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			ok = false
			if p != http.ErrAbortHandler { //nolint:errorlint // the sentinel itself, as net/http compares it
				f.h.log.Error("panic serving request", "uri", uri, "panic", fmt.Sprint(p))
			}
		}
	}()
	serve()
	return true
}

func writeInlineError(c net.Conn, code int, msg string) {
	body := strconv.Itoa(code) + " " + http.StatusText(code) + ": " + msg + "\n"
	_, _ = c.Write([]byte("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) +
		"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body))
}

// inlineWriter is the http.ResponseWriter for in-place requests: the head
// is built when the status is set; a body with a declared length goes
// out as it is written (the head with the first part), one without is
// buffered up to inlineBuffer and sent with a Content-Length, or in
// chunks past that. Like net/http's, it adds Date and sniffs a missing
// Content-Type.
type inlineWriter struct {
	c    net.Conn
	req  *http.Request
	hdr  http.Header
	keys []string // scratch for sorting header names

	code       int
	head       []byte // status line and fields, without framing and the blank line
	body       []byte // buffered body
	declared   int64  // Content-Length set by the handler; -1: none
	written    int64
	noBody     bool // HEAD, 204, 304
	committed  bool // head sent
	chunked    bool
	hasCT      bool
	closeAfter bool
	closing    *atomic.Bool // the server is shutting down: close after this response
	err        error
}

// inlineBuffer is how much of a body without a declared length is held
// to send it with a Content-Length.
const inlineBuffer = 64 << 10

func (w *inlineWriter) reset(c net.Conn, req *http.Request) {
	if w.hdr == nil {
		w.hdr = http.Header{}
	}
	clear(w.hdr)
	*w = inlineWriter{c: c, req: req, hdr: w.hdr, keys: w.keys[:0], head: w.head[:0], body: w.body[:0], declared: -1, closeAfter: req.Close}
	if cap(w.body) > inlineBuffer {
		w.body = nil // do not keep a large buffer for every idle connection
	}
}

func (w *inlineWriter) Header() http.Header { return w.hdr }

func (w *inlineWriter) WriteHeader(code int) {
	if w.code != 0 || code < 200 {
		// A second call is ignored (net/http logs it); interim responses
		// are not sent (the handler sends none).
		return
	}
	w.code = code
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if v := w.hdr["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			w.declared = n
		}
	}
	if v, ok := w.hdr["Connection"]; ok && len(v) > 0 && strings.EqualFold(v[0], "close") {
		w.closeAfter = true
	}
	_, w.hasCT = w.hdr["Content-Type"]
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	h := append(w.head[:0], "HTTP/1.1 "...)
	h = strconv.AppendInt(h, int64(code), 10)
	h = append(h, ' ')
	h = append(h, text...)
	h = append(h, "\r\n"...)
	w.keys = w.keys[:0]
	for k := range w.hdr {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection":
			continue // framing: written by commit
		}
		w.keys = append(w.keys, k)
	}
	slices.Sort(w.keys)
	for _, k := range w.keys {
		for _, v := range w.hdr[k] {
			h = appendField(h, k, v)
		}
	}
	if _, ok := w.hdr["Date"]; !ok {
		h = appendDate(h, time.Now())
	}
	w.head = h
}

// appendField appends a field line.
func appendField(h []byte, name, value string) []byte {
	h = append(h, name...)
	h = append(h, ": "...)
	h = appendFieldValue(h, value)
	return append(h, "\r\n"...)
}

// appendDate appends the Date line net/http adds when a response has none.
func appendDate(h []byte, now time.Time) []byte {
	h = append(h, "Date: "...)
	h = now.UTC().AppendFormat(h, http.TimeFormat)
	return append(h, "\r\n"...)
}

// appendFieldValue appends v with any CR or LF turned into a space, as
// net/http does, so no value can split the head.
func appendFieldValue(h []byte, v string) []byte {
	if strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0 { // ContainsAny builds a set per call
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	return append(h, v...)
}

func (w *inlineWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	switch {
	case w.req.Method == http.MethodHead:
		w.written += int64(len(p))
		return len(p), nil // counted for the Content-Length, not sent
	case w.noBody:
		return 0, http.ErrBodyNotAllowed
	case w.declared >= 0 && w.written+int64(len(p)) > w.declared:
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.committed && len(w.body)+len(p) <= inlineBuffer {
		w.body = append(w.body, p...)
		return len(p), nil
	}
	if !w.committed {
		w.commit(false)
	}
	if w.chunked {
		var size [20]byte
		_, w.err = w.send(net.Buffers{append(strconv.AppendInt(size[:0], int64(len(p)), 16), "\r\n"...), p, crlf})
	} else {
		_, w.err = w.send(net.Buffers{p})
	}
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// Flush sends the head and what is buffered (http.Flusher).
func (w *inlineWriter) Flush() {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed && w.err == nil {
		w.commit(false)
	}
}

// commit sends the head, with its framing, and the buffered body. final:
// the handler is done, so a body without a declared length is complete.
func (w *inlineWriter) commit(final bool) {
	w.committed = true
	h := w.head
	if !w.hasCT && len(w.body) > 0 && !w.noBody {
		h = append(h, "Content-Type: "...)
		h = append(h, http.DetectContentType(w.body)...)
		h = append(h, "\r\n"...)
	}
	switch {
	case w.declared >= 0:
		if w.code != http.StatusNoContent && w.code != http.StatusNotModified {
			h = append(h, "Content-Length: "...)
			h = strconv.AppendInt(h, w.declared, 10)
			h = append(h, "\r\n"...)
		}
	case w.code == http.StatusNoContent || w.code == http.StatusNotModified:
	case final && (w.req.Method != http.MethodHead || w.written > 0):
		h = append(h, "Content-Length: "...)
		h = strconv.AppendInt(h, w.written, 10)
		h = append(h, "\r\n"...)
	case w.req.Method == http.MethodHead:
		// Nothing written, or flushed before the handler was done: the
		// length is unknown.
	default:
		w.chunked = true
		h = append(h, "Transfer-Encoding: chunked\r\n"...)
	}
	if w.closing != nil && w.closing.Load() {
		w.closeAfter = true // tell the client, as net/http does during Shutdown
	}
	if w.closeAfter {
		h = append(h, "Connection: close\r\n"...)
	}
	h = append(h, "\r\n"...)
	w.head = h
	bufs := net.Buffers{h}
	if len(w.body) > 0 {
		if w.chunked {
			var size [20]byte
			bufs = append(bufs, append(strconv.AppendInt(size[:0], int64(len(w.body)), 16), "\r\n"...), w.body, crlf)
		} else {
			bufs = append(bufs, w.body)
		}
	}
	_, w.err = w.send(bufs)
	w.body = w.body[:0]
}

func (w *inlineWriter) send(bufs net.Buffers) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	return sockio.WriteBuffers(w.c, bufs)
}

// finish completes the response after the handler returned; an error (or
// a body shorter than declared) means the connection must close.
func (w *inlineWriter) finish() error {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(true)
	}
	if w.err != nil {
		return w.err
	}
	if w.chunked {
		_, w.err = w.send(net.Buffers{[]byte("0\r\n\r\n")})
		return w.err
	}
	if !w.noBody && w.declared >= 0 && w.written < w.declared {
		return errors.New("handler wrote less than the declared Content-Length")
	}
	return nil
}
