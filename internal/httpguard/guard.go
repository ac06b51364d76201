package httpguard

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
)

// Options tune the guard. The zero value is usable.
type Options struct {
	// MaxHeaderBytes bounds a request head (request line and headers).
	// Default 64 KiB; larger heads get 431.
	MaxHeaderBytes int
	// MaxHeaders bounds the number of header lines. Default 100.
	MaxHeaders int
	// OnReject, when set, is called for every refused request (for
	// metrics and logs) with its classification. It must be quick.
	OnReject func(Result)
}

func (o Options) maxHead() int {
	if o.MaxHeaderBytes <= 0 {
		return 64 << 10
	}
	return o.MaxHeaderBytes
}

// markerHeader carries a refusal from a guarded connection to Wrap. Its
// value starts with a per-process secret, so a client cannot forge one;
// client headers of that name are refused anyway.
const markerHeader = "X-Edgestack-Httpguard"

var secret = func() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// ErrBadChunk is returned from a guarded connection's Read when a chunked
// body is malformed; net/http then fails the request and closes.
var ErrBadChunk = errors.New("httpguard: malformed chunked body")

// NewListener wraps ln so that every accepted connection's request heads
// are classified before net/http reads them. Serve the result with a
// handler wrapped by Wrap.
func NewListener(ln net.Listener, opts Options) net.Listener {
	return &listener{Listener: ln, opts: opts}
}

type listener struct {
	net.Listener
	opts Options
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c, l.opts), nil
}

// NewConn guards one connection (for servers that accept connections
// themselves, e.g. after a TLS handshake).
func NewConn(c net.Conn, opts Options) net.Conn {
	return &Conn{Conn: c, opts: opts}
}

type state uint8

const (
	stHead state = iota
	stBody
	stChunkSize
	stChunkData
	stChunkCRLF
	stTrailer
	stPassthrough
	stDone
)

// Conn is a guarded connection.
type Conn struct {
	net.Conn
	opts Options

	st        state
	remaining int64  // body bytes left (stBody, stChunkData)
	in        []byte // raw bytes read, not yet processed
	inBuf     []byte // in's backing array, reused once in is drained
	out       []byte // processed bytes for the reader
	outOff    int
	err       error
	rejected  atomic.Bool
	scratch   [4096]byte
}

// Buffered is how many bytes the guard holds that it has read from the
// connection and not yet returned: a reader whose own buffer is empty
// must read again before it waits for the connection.
func (c *Conn) Buffered() int { return len(c.in) + len(c.out) - c.outOff }

// Unwrap returns the underlying connection.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// Read returns request bytes that passed the guard.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.outOff < len(c.out) {
			n := copy(p, c.out[c.outOff:])
			c.outOff += n
			if c.outOff == len(c.out) {
				c.out, c.outOff = c.out[:0], 0
			}
			return n, nil
		}
		if c.err != nil {
			return 0, c.err
		}
		// Fast paths with nothing buffered: stream bodies straight into p.
		if len(c.in) == 0 {
			switch c.st {
			case stPassthrough:
				return c.Conn.Read(p)
			case stBody, stChunkData:
				if int64(len(p)) > c.remaining {
					p = p[:c.remaining]
				}
				n, err := c.Conn.Read(p)
				c.remaining -= int64(n)
				if c.remaining == 0 {
					if c.st == stBody {
						c.st = stHead
					} else {
						c.st = stChunkCRLF
					}
				}
				if n > 0 {
					return n, nil
				}
				return n, err
			}
		}
		if len(c.in) > 0 {
			c.process()
			if c.outOff < len(c.out) || c.err != nil {
				continue
			}
		}
		if c.st == stHead && len(c.in) >= c.opts.maxHead() {
			c.reject(Result{Tier: Severe, Reason: ReasonHeadTooLarge, Message: "request head larger than " + strconv.Itoa(c.opts.maxHead()) + " bytes"}, http.StatusRequestHeaderFieldsTooLarge)
			continue
		}
		n, err := c.Conn.Read(c.scratch[:])
		if n > 0 {
			if len(c.in) == 0 {
				// Drained: start over at the front of the array rather
				// than append past the consumed heads (a new array
				// every request, garbage on every keep-alive request).
				c.in = c.inBuf[:0]
			}
			c.in = append(c.in, c.scratch[:n]...)
			if cap(c.in) > cap(c.inBuf) {
				c.inBuf = c.in[:0]
			}
			continue
		}
		if err != nil {
			if len(c.in) > 0 && err == io.EOF && c.st == stHead {
				// A truncated head: hand it on so net/http answers it.
				c.out = append(c.out, c.in...)
				c.in = c.in[:0]
				c.err = err
				continue
			}
			return 0, err
		}
	}
}

// process consumes c.in into c.out as far as it can.
func (c *Conn) process() {
	for len(c.in) > 0 && c.err == nil {
		switch c.st {
		case stHead:
			// Tolerate (and drop) empty lines before a request (RFC 7230 3.5).
			for len(c.in) >= 2 && c.in[0] == '\r' && c.in[1] == '\n' {
				c.in = c.in[2:]
			}
			end := bytes.Index(c.in, []byte("\r\n\r\n"))
			if end < 0 {
				if bareLF(c.in) {
					c.reject(Result{Tier: Severe, Reason: ReasonBadHeader, Message: "bare LF in request head"}, 400)
					return
				}
				if bytes.IndexByte(c.in, 0) >= 0 {
					c.reject(Result{Tier: Severe, Reason: ReasonBadHeader, Message: "NUL in request head"}, 400)
				}
				c.compact()
				return
			}
			head := c.in[:end+4]
			if end+4 > c.opts.maxHead() {
				c.reject(Result{Tier: Severe, Reason: ReasonHeadTooLarge, Message: "request head larger than " + strconv.Itoa(c.opts.maxHead()) + " bytes"}, http.StatusRequestHeaderFieldsTooLarge)
				return
			}
			res := classify(head, Limits{MaxHeaders: c.opts.MaxHeaders})
			if res.Tier < Ambiguous && containsFold(head, lowerMarker) {
				res = Result{Tier: Severe, Reason: ReasonBadHeader, Message: "reserved header " + markerHeader}
			}
			if res.Tier >= Ambiguous {
				c.reject(res, http.StatusBadRequest)
				return
			}
			if res.Normalized != nil {
				c.out = append(c.out, res.Normalized...)
			} else {
				c.out = append(c.out, head...)
			}
			c.in = c.in[end+4:]
			switch {
			case res.Upgrade:
				c.st = stPassthrough
			case res.Chunked:
				c.st = stChunkSize
			case res.ContentLength > 0:
				c.st, c.remaining = stBody, res.ContentLength
			}
		case stBody, stChunkData:
			n := int64(len(c.in))
			if n > c.remaining {
				n = c.remaining
			}
			c.out = append(c.out, c.in[:n]...)
			c.in = c.in[n:]
			c.remaining -= n
			if c.remaining == 0 {
				if c.st == stBody {
					c.st = stHead
				} else {
					c.st = stChunkCRLF
				}
			}
		case stChunkCRLF:
			if len(c.in) < 2 {
				if c.in[0] != '\r' {
					c.err = ErrBadChunk
				}
				c.compact()
				return
			}
			if c.in[0] != '\r' || c.in[1] != '\n' {
				c.err = ErrBadChunk
				return
			}
			c.out = append(c.out, '\r', '\n')
			c.in = c.in[2:]
			c.st = stChunkSize
		case stChunkSize, stTrailer:
			i := bytes.IndexByte(c.in, '\n')
			if i < 0 {
				if len(c.in) > 4096 {
					c.err = ErrBadChunk
				}
				c.compact()
				return
			}
			ln := c.in[:i+1]
			if i == 0 || ln[i-1] != '\r' || i > 4096 {
				c.err = ErrBadChunk
				return
			}
			body := ln[:i-1]
			if c.st == stChunkSize {
				size, ok := ParseChunkSize(body)
				if !ok {
					c.err = ErrBadChunk
					return
				}
				c.out = append(c.out, ln...)
				c.in = c.in[i+1:]
				if size == 0 {
					c.st = stTrailer
				} else {
					c.st, c.remaining = stChunkData, size
				}
				continue
			}
			// Trailer section: header lines until an empty line.
			if len(body) > 0 && (bytes.IndexByte(body, ':') <= 0 || !validValue(body) || body[0] == ' ' || body[0] == '\t') {
				c.err = ErrBadChunk
				return
			}
			c.out = append(c.out, ln...)
			c.in = c.in[i+1:]
			if len(body) == 0 {
				c.st = stHead
			}
		case stPassthrough:
			c.out = append(c.out, c.in...)
			c.in = c.in[:0]
		case stDone:
			c.in = c.in[:0]
			return
		}
	}
	c.compact()
}

// bareLF reports whether b holds an LF not preceded by CR.
func bareLF(b []byte) bool {
	for i := bytes.IndexByte(b, '\n'); i >= 0; {
		if i == 0 || b[i-1] != '\r' {
			return true
		}
		j := bytes.IndexByte(b[i+1:], '\n')
		if j < 0 {
			return false
		}
		i += j + 1
	}
	return false
}

// compact keeps c.in from growing by moving the unread tail to the front.
func (c *Conn) compact() {
	if cap(c.in) > 64<<10 && len(c.in) < 4096 {
		c.in = append([]byte(nil), c.in...)
		c.inBuf = c.in[:0]
	}
}

// containsFold reports whether b contains lower (lower case ASCII) in any
// letter case, without the copy bytes.ToLower would make.
func containsFold(b []byte, lower string) bool {
	for i := 0; i+len(lower) <= len(b); i++ {
		if b[i] != lower[0] {
			continue
		}
		j := 1
		for ; j < len(lower); j++ {
			c := b[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
		}
		if j == len(lower) {
			return true
		}
	}
	return false
}

var lowerMarker = "\n" + string(bytes.ToLower([]byte(markerHeader))) + ":"

// reject replaces the rest of the connection with a synthetic request
// that Wrap answers with status and the reason.
func (c *Conn) reject(res Result, status int) {
	if c.opts.OnReject != nil {
		c.opts.OnReject(res)
	}
	c.rejected.Store(true)
	q := url.Values{"status": {strconv.Itoa(status)}, "tier": {res.Tier.String()}, "reason": {res.Reason}, "msg": {res.Message}}
	c.out = append(c.out, "GET /httpguard HTTP/1.1\r\nHost: httpguard.invalid\r\nConnection: close\r\n"+markerHeader+": "+secret+" "+q.Encode()+"\r\n\r\n"...)
	c.in = c.in[:0]
	c.st = stDone
	c.err = io.EOF
}

// Rejected reports whether the connection refused a request.
func (c *Conn) Rejected() bool { return c.rejected.Load() }

// ParseChunkSize parses a chunk-size line without its CRLF: 1 to 15 hex
// digits, optionally followed by BWS and chunk extensions (which must be
// valid field-value bytes). The second result is false for anything else.
func ParseChunkSize(b []byte) (int64, bool) {
	if i := bytes.IndexByte(b, ';'); i >= 0 {
		ext := b[i+1:]
		if !validValue(ext) {
			return 0, false
		}
		b = b[:i]
		// BWS before ';' is allowed by RFC 9112.
		b = bytes.TrimRight(b, " \t")
	}
	if len(b) == 0 || len(b) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}

// Wrap answers requests refused by a guarded connection with their status
// and reason (and Connection: close), and refuses requests that reach it
// with framing headers net/http should never have let through (a second
// line of defence for connections that were not guarded, e.g. HTTP/2,
// where only header validity is checked). Everything else goes to next.
func Wrap(next http.Handler, opts Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := r.Header[markerHeader]; ok {
			refuseMarked(w, v)
			return
		}
		if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 && r.Header.Get("Content-Length") != "" {
			refuse(w, http.StatusBadRequest, ReasonBothTECL+": both Transfer-Encoding and Content-Length present")
			return
		}
		if r.ProtoMajor == 1 && (len(r.Header["Upgrade"]) > 0 || r.Method == http.MethodConnect) {
			// Conn stops checking after such a request (the connection may
			// switch protocols): unless it does, it ends with this answer.
			w = &closeUnlessSwitched{ResponseWriter: w}
		}
		next.ServeHTTP(w, r)
	})
}

// closeUnlessSwitched adds Connection: close to a final response, so a
// connection whose upgrade did not happen carries no further request past
// the guard. A 101 is written by whoever hijacks the connection, not
// through it.
type closeUnlessSwitched struct {
	http.ResponseWriter
	final bool
}

func (c *closeUnlessSwitched) WriteHeader(code int) {
	if !c.final && code >= 200 {
		c.final = true
		c.Header().Set("Connection", "close")
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *closeUnlessSwitched) Write(b []byte) (int, error) {
	if !c.final {
		c.WriteHeader(http.StatusOK)
	}
	return c.ResponseWriter.Write(b)
}

func (c *closeUnlessSwitched) Flush() {
	if !c.final {
		c.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(c.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach Hijack and deadlines.
func (c *closeUnlessSwitched) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// Marked says whether h carries the guard's marker: such a request is
// answered by Wrap's handler (the guard's 400), never by a shortcut past it.
func Marked(h http.Header) bool {
	_, ok := h[markerHeader]
	return ok
}

// refuseMarked answers a request that carries the guard's marker. It is
// kept out of Wrap's handler, whose frame every request pays for (536
// bytes with it inline, 64 without), on goroutines such as HTTP/2's
// per-stream ones that start with small stacks.
func refuseMarked(w http.ResponseWriter, v []string) {
	if len(v) == 1 && len(v[0]) > len(secret) && v[0][:len(secret)] == secret {
		q, _ := url.ParseQuery(v[0][len(secret)+1:])
		status, _ := strconv.Atoi(q.Get("status"))
		if status == 0 {
			status = http.StatusBadRequest
		}
		refuse(w, status, q.Get("reason")+": "+q.Get("msg"))
		return
	}
	refuse(w, http.StatusBadRequest, ReasonBadHeader+": reserved header "+markerHeader)
}

func refuse(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Connection", "close")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, strconv.Itoa(status)+" "+http.StatusText(status)+": request refused by httpguard ("+msg+")\n")
}
