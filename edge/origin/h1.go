package origin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/edgestack/edgestack/internal/connpool"
	"github.com/edgestack/edgestack/internal/sockio"
)

// h1Transport is the HTTP/1.1 client for plain-HTTP origins. Each request
// is written and its response read in the caller's goroutine, over pooled
// keep-alive connections (internal/connpool, shared with lbd's engine).
// http.Transport hands every request to two goroutines per connection (a
// write loop and a read loop); for a request that passes through the edge
// uncached, those hand-offs cost about as much as everything else edged
// does for it.
//
// What it does not do, so NewHTTP keeps http.Transport for it: TLS
// (HTTP/2), a cap on connections per host.
type h1Transport struct {
	pool        connpool.Pool
	dialer      *net.Dialer
	respTimeout time.Duration // to the response head; 0: none
}

func newH1Transport(addr string, d *net.Dialer, idle time.Duration, maxIdle int, respTimeout time.Duration) *h1Transport {
	return &h1Transport{
		pool:        connpool.Pool{Addr: addr, MaxIdle: maxIdle, IdleTimeout: idle},
		dialer:      d,
		respTimeout: respTimeout,
	}
}

// headTimeoutError is the error for an origin that sent no response head
// within the response timeout (a net.Error with Timeout(), so the edge
// answers 504).
type headTimeoutError struct{ d time.Duration }

func (e headTimeoutError) Error() string {
	return fmt.Sprintf("no response headers within %v", e.d)
}
func (headTimeoutError) Timeout() bool   { return true }
func (headTimeoutError) Temporary() bool { return true }

var aLongTimeAgo = time.Unix(1, 0)

// RoundTrip sends req (a client request with an absolute URL) and reads
// the response head. The body reads from the connection; reading it to
// the end returns the connection to the pool, closing it early closes the
// connection.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	hasBody := req.Body != nil && req.Body != http.NoBody
	replayable := !hasBody && (req.Method == http.MethodGet || req.Method == http.MethodHead || req.Method == http.MethodOptions)
	deadline, hasDeadline := ctx.Deadline()
	resp, _, err := t.do(ctx, req, replayable, deadline, hasDeadline, req.Write, nil)
	return resp, err
}

// rawGet stands for the body-less GETs sendRaw sends, where ReadResponse
// wants a request (only its method matters there).
var rawGet = &http.Request{Method: http.MethodGet}

// sendRaw is RoundTrip for a body-less GET whose head the caller built:
// no http.Request and no context (the deadline bounds it all), the same
// pooling, stale-connection retry and response handling; take, if not
// nil, may take the answer raw (SendGet).
func (t *h1Transport) sendRaw(head []byte, deadline time.Time, take Taker) (*http.Response, Raw, error) {
	return t.do(context.Background(), rawGet, true, deadline, true, func(w io.Writer) error {
		_, err := w.Write(head)
		return err
	}, take)
}

// do sends a request written by write (req stands for it when reading the
// answer) over a pooled connection, once more on a fresh one when a reused
// connection turns out closed and the request is replayable.
func (t *h1Transport) do(ctx context.Context, req *http.Request, replayable bool, deadline time.Time, hasDeadline bool, write func(io.Writer) error, take Taker) (*http.Response, Raw, error) {
	dial := func(addr string) (net.Conn, error) {
		c, err := t.dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return sockio.Wrap(c), nil
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, Raw{}, err
		}
		c, reused, err := t.pool.Acquire(dial, attempt, replayable)
		if err != nil {
			return nil, Raw{}, err
		}
		resp, raw, err := t.exchange(ctx, c, req, deadline, hasDeadline, write, take)
		if err == nil {
			return resp, raw, nil
		}
		c.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, Raw{}, cerr
		}
		var ht headTimeoutError
		if reused && attempt == 0 && replayable && !errors.As(err, &ht) {
			continue // a keep-alive connection the origin had closed: once more, fresh
		}
		return nil, Raw{}, err
	}
}

// exchange writes the request on c and reads the response head (or
// hands it to take).
func (t *h1Transport) exchange(ctx context.Context, c *connpool.Conn, req *http.Request, deadline time.Time, hasDeadline bool, write func(io.Writer) error, take Taker) (*http.Response, Raw, error) {
	headDeadline := deadline
	if t.respTimeout > 0 {
		if d := time.Now().Add(t.respTimeout); !hasDeadline || d.Before(deadline) {
			headDeadline = d
		}
	}
	switch {
	case hasDeadline && headDeadline.Equal(deadline):
		// One deadline for all of it: keep the connection's while it is
		// close enough (up to deadlineSlack late) rather than moving it
		// three times per request.
		_ = c.SetDeadlineWithin(deadline, deadlineSlack)
	case hasDeadline && req == rawGet:
		// A body-less GET's few bytes go out under the head's deadline
		// too: then one deadline, usually kept from the last request.
		_ = c.SetDeadlineWithin(headDeadline, deadlineSlack)
	default:
		_ = c.SetWriteDeadline(deadline)
		_ = c.SetReadDeadline(headDeadline)
	}
	// A cancelled request unblocks whatever read or write is under way
	// (nothing to watch for a context that cannot end).
	stop := noStop
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
	}
	err := write(c.W)
	switch {
	case err != nil:
	case (req.Body == nil || req.Body == http.NoBody) && c.ReleasedWithin(time.Now(), connpool.QuietReuse):
		// The answer's head is read next: a body-less request on a
		// connection busy until now goes out with that read.
		err = sockio.FlushBeforeRead(c.Conn, c.W)
	default:
		// A write error is looked into below (an early answer), so the
		// request's end goes out now; so does a request on a connection
		// that sat idle (its read must look for a close first).
		err = c.W.Flush()
	}
	if err != nil {
		// The origin may have answered early (a 413 for a body it will
		// not read) and closed: take that answer if it is there.
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		resp, rerr := readFinalResponse(c, req)
		if rerr != nil {
			stop()
			return nil, Raw{}, err
		}
		// Not reusable: the request was not all sent.
		return withBody(c, resp, false, stop, deadline, false), Raw{}, nil
	}
	if take != nil {
		if head, ok := peekHead(c.R); ok {
			if n, ok := take(head); ok {
				_, _ = c.R.Discard(len(head))
				// The body's deadline is the request's, unless the body
				// is already here (no read left to bound).
				bodyHere := int64(c.R.Buffered()) >= n
				return nil, rawAnswer(c, head, n, stop, deadline, bodyHere || headDeadline.Equal(deadline)), nil
			}
		}
		// Not taken, or no complete head in the buffer (an error, a head
		// too large): read it as always, from the same unread bytes.
	}
	resp, err := readFinalResponse(c, req)
	if err != nil {
		stop()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil && !headDeadline.Equal(deadline) {
			return nil, Raw{}, headTimeoutError{t.respTimeout}
		}
		return nil, Raw{}, err
	}
	// A 101 (the edge asks for no upgrade) leaves the connection in
	// another protocol: never pooled.
	reuse := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	return withBody(c, resp, reuse, stop, deadline, headDeadline.Equal(deadline)), Raw{}, nil
}

// Taker decides from a response head (the status line to the blank line,
// as received) whether the caller takes the answer raw: it then returns
// the length of the body that follows. It must take only final answers
// on a connection that stays open (HTTP/1.1 without Connection: close)
// whose body is exactly that long (a Content-Length, no
// Transfer-Encoding). It must not keep head.
type Taker func(head []byte) (length int64, take bool)

// Raw is an answer taken raw: its head and its body.
type Raw struct {
	// Head is the head as received: valid until Body is first read.
	Head []byte
	// Body reads the length Taker returned; reading it to the end returns
	// the connection to the pool, closing it early closes the connection.
	Body io.ReadCloser
}

// Taken reports whether r holds an answer.
func (r Raw) Taken() bool { return r.Body != nil }

// rawAnswer ties c to a raw answer whose body is n bytes long.
func rawAnswer(c *connpool.Conn, head []byte, n int64, stop func() bool, deadline time.Time, readDeadlineSet bool) Raw {
	if !readDeadlineSet {
		_ = c.SetReadDeadline(deadline)
	}
	b := &h1Body{rc: &fixedBody{r: c.R, n: n}, c: c, stop: stop, reuse: true}
	if n == 0 {
		b.finish(true)
		return Raw{Head: head, Body: http.NoBody}
	}
	return Raw{Head: head, Body: b}
}

// fixedBody reads n bytes, and reports io.EOF with the last of them (as
// net/http's bodies do), so that reading exactly n releases the
// connection.
type fixedBody struct {
	r *bufio.Reader
	n int64
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	if b.n == 0 {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *fixedBody) Close() error { return nil }

// peekHead returns the response head at the start of r's unread bytes,
// reading more while it is incomplete, without consuming anything. It
// ends at the first empty line, however the lines end (a taker may
// refuse bare LFs); false: no complete head (an error, or a head larger
// than r's buffer).
func peekHead(r *bufio.Reader) ([]byte, bool) {
	want := 1
	for {
		b, err := r.Peek(want)
		if err != nil && len(b) < want {
			return nil, false
		}
		b, _ = r.Peek(r.Buffered())
		if end := headEnd(b); end > 0 {
			return b[:end], true
		}
		if len(b) == r.Size() {
			return nil, false
		}
		want = len(b) + 1
	}
}

// headEnd returns the length of the head in b up to and including its
// empty line, or 0 when b holds no empty line yet.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

func noStop() bool { return true }

// deadlineSlack is how late an origin timeout may fire, so that a busy
// pooled connection keeps its deadline instead of a timer update per
// request (connpool.Conn.SetDeadlineWithin).
const deadlineSlack = 10 * time.Millisecond

// withBody ties c to resp's body, which releases it when read (to the
// pool if reuse).
func withBody(c *connpool.Conn, resp *http.Response, reuse bool, stop func() bool, deadline time.Time, readDeadlineSet bool) *http.Response {
	if !readDeadlineSet {
		_ = c.SetReadDeadline(deadline)
	}
	b := &h1Body{rc: resp.Body, c: c, stop: stop, reuse: reuse}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp
	}
	resp.Body = b
	return resp
}

// readFinalResponse skips interim (1xx) responses other than 101.
func readFinalResponse(c *connpool.Conn, req *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(c.R, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
	}
}

// h1Body hands the connection back once the body has been read to its
// end, and closes it when the body is abandoned.
type h1Body struct {
	rc    io.ReadCloser
	c     *connpool.Conn
	stop  func() bool
	reuse bool
	once  sync.Once
}

// Pending reports whether more of the body can be read without waiting
// for the origin: bytes in the connection's buffer or in its socket. The
// edge reads a body of unknown length whole while they keep coming, and
// streams it once a read would wait. Only while the body is being read
// (not after its end, when the connection may serve another request).
func (b *h1Body) Pending() bool {
	return b.c.R.Buffered() > 0 || sockio.Pending(b.c.Conn)
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

func (b *h1Body) Close() error {
	b.finish(false)
	return b.rc.Close()
}

// finish releases the connection once: to the pool after a complete
// body on a connection both sides keep open, closed otherwise (closing
// first also makes the inner body's Close, which drains, return at once).
func (b *h1Body) finish(complete bool) {
	b.once.Do(func() {
		// stop reports false when the request was cancelled: its deadline
		// is already in the past.
		if b.stop() && complete && b.reuse && b.c.R.Buffered() == 0 {
			// Pooled with its deadline as it is: the next request sets
			// its own (or keeps this one, SetDeadlineWithin), and Alive
			// does not look at it.
			b.c.Release()
			return
		}
		b.c.Close()
	})
}
