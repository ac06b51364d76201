package origin

import (
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
	return t.do(ctx, req, replayable, deadline, hasDeadline, req.Write)
}

// rawGet stands for the body-less GETs sendRaw sends, where ReadResponse
// wants a request (only its method matters there).
var rawGet = &http.Request{Method: http.MethodGet}

// sendRaw is RoundTrip for a body-less GET whose head the caller built:
// no http.Request and no context (the deadline bounds it all), the same
// pooling, stale-connection retry and response handling.
func (t *h1Transport) sendRaw(head []byte, deadline time.Time) (*http.Response, error) {
	return t.do(context.Background(), rawGet, true, deadline, true, func(w io.Writer) error {
		_, err := w.Write(head)
		return err
	})
}

// do sends a request written by write (req stands for it when reading the
// answer) over a pooled connection, once more on a fresh one when a reused
// connection turns out closed and the request is replayable.
func (t *h1Transport) do(ctx context.Context, req *http.Request, replayable bool, deadline time.Time, hasDeadline bool, write func(io.Writer) error) (*http.Response, error) {
	dial := func(addr string) (net.Conn, error) {
		c, err := t.dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return sockio.Wrap(c), nil
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, reused, err := t.pool.Acquire(dial, attempt, replayable)
		if err != nil {
			return nil, err
		}
		resp, err := t.exchange(ctx, c, req, deadline, hasDeadline, write)
		if err == nil {
			return resp, nil
		}
		c.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		var ht headTimeoutError
		if reused && attempt == 0 && replayable && !errors.As(err, &ht) {
			continue // a keep-alive connection the origin had closed: once more, fresh
		}
		return nil, err
	}
}

// exchange writes the request on c and reads the response head.
func (t *h1Transport) exchange(ctx context.Context, c *connpool.Conn, req *http.Request, deadline time.Time, hasDeadline bool, write func(io.Writer) error) (*http.Response, error) {
	headDeadline := deadline
	if t.respTimeout > 0 {
		if d := time.Now().Add(t.respTimeout); !hasDeadline || d.Before(deadline) {
			headDeadline = d
		}
	}
	if hasDeadline && headDeadline.Equal(deadline) {
		// One deadline for all of it: keep the connection's while it is
		// close enough (up to deadlineSlack late) rather than moving it
		// three times per request.
		_ = c.SetDeadlineWithin(deadline, deadlineSlack)
	} else {
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
	if err == nil {
		err = c.W.Flush()
	}
	if err != nil {
		// The origin may have answered early (a 413 for a body it will
		// not read) and closed: take that answer if it is there.
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		resp, rerr := readFinalResponse(c, req)
		if rerr != nil {
			stop()
			return nil, err
		}
		// Not reusable: the request was not all sent.
		return withBody(c, resp, false, stop, deadline, false), nil
	}
	resp, err := readFinalResponse(c, req)
	if err != nil {
		stop()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil && !headDeadline.Equal(deadline) {
			return nil, headTimeoutError{t.respTimeout}
		}
		return nil, err
	}
	// A 101 (the edge asks for no upgrade) leaves the connection in
	// another protocol: never pooled.
	reuse := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	return withBody(c, resp, reuse, stop, deadline, headDeadline.Equal(deadline)), nil
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
			_ = b.c.SetDeadline(time.Time{})
			b.c.Release()
			return
		}
		b.c.Close()
	})
}
