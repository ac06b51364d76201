// Package connpool keeps idle keep-alive connections to one upstream
// address (an lbd target, an edged origin) for the lean HTTP/1.1 paths
// that write requests and read responses themselves: most recently used
// first, dropped after an idle timeout, checked for a close by the peer
// with one non-blocking peek where a request cannot be sent twice.
package connpool

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// QuietReuse is how long a connection may have sat in the pool for its
// next request to be sent with sockio.FlushBeforeRead (ReleasedWithin):
// on a busy pool connections come back and go out again within it.
const QuietReuse = 10 * time.Millisecond

// Defaults for a Pool's zero limits.
const (
	DefaultMaxIdle     = 512
	DefaultIdleTimeout = 60 * time.Second
)

// Conn is one connection with its buffers. It belongs to whoever acquired
// it until Release (back to the pool) or Close.
type Conn struct {
	net.Conn
	R *bufio.Reader
	W *bufio.Writer
	// Addr is the pool's address (the Host for requests without one).
	Addr string
	// Head and Lines are scratch space for the owner's response-head
	// parsing, kept with the connection so they are reused.
	Head  []byte
	Lines [][2]int

	pool *Pool
	used time.Time
	// deadline is the last one SetDeadlineWithin set, in Unix
	// nanoseconds (0: unknown, as after any other deadline call).
	// Atomic: a cancellation may set a deadline from another goroutine.
	deadline atomic.Int64
}

// SetDeadlineWithin makes the read and write deadline t, or leaves the
// one an earlier call set when that falls within [t, t+slack]. A new
// deadline costs a runtime timer update; per request on a busy
// keep-alive connection that is more than a deadline firing up to slack
// late is worth. When it sets one, it sets t+slack, so requests that
// follow within slack keep it.
func (c *Conn) SetDeadlineWithin(t time.Time, slack time.Duration) error {
	want := t.UnixNano()
	if cur := c.deadline.Load(); cur != 0 && cur >= want && cur <= want+int64(slack) {
		return nil
	}
	d := t.Add(slack)
	c.deadline.Store(0)
	if err := c.Conn.SetDeadline(d); err != nil {
		return err
	}
	c.deadline.Store(d.UnixNano())
	return nil
}

// SetDeadline, SetReadDeadline and SetWriteDeadline set the deadlines
// exactly (and make SetDeadlineWithin set its next one).
func (c *Conn) SetDeadline(t time.Time) error {
	c.deadline.Store(0)
	return c.Conn.SetDeadline(t)
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	c.deadline.Store(0)
	return c.Conn.SetReadDeadline(t)
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.deadline.Store(0)
	return c.Conn.SetWriteDeadline(t)
}

// Release returns the connection to its pool for another request. The
// caller must have read the whole response.
func (c *Conn) Release() { c.pool.put(c) }

// ReleasedWithin reports whether the connection came back to the pool at
// most d before now, or is fresh from a dial. A connection that sat idle
// longer may hold a close from the peer that raised readiness already
// spent, so its next read must try before it waits (see
// sockio.FlushBeforeRead): a peer that closed and then vanished (a
// stopped container) answers a request with nothing at all.
func (c *Conn) ReleasedWithin(now time.Time, d time.Duration) bool {
	return c.used.IsZero() || now.Sub(c.used) <= d
}

// Alive reports whether an idle connection is still open, with one
// non-blocking MSG_PEEK: EAGAIN means open and quiet; EOF, an error or
// unexpected bytes mean the peer closed it (or broke the protocol).
func (c *Conn) Alive() bool {
	if c.R.Buffered() > 0 {
		return false
	}
	nc := c.Conn
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var b [1]byte
	// Control, not Read: a deadline left from the connection's last
	// request (which may have passed) must not make it look closed.
	err = rc.Control(func(fd uintptr) {
		_, _, rerr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		alive = errors.Is(rerr, unix.EAGAIN)
	})
	return err == nil && alive
}

// Pool keeps idle connections to one address. The zero value with Addr
// set is ready to use.
type Pool struct {
	Addr string
	// MaxIdle caps the idle connections kept. Default: DefaultMaxIdle.
	MaxIdle int
	// IdleTimeout drops connections idle this long. Default:
	// DefaultIdleTimeout.
	IdleTimeout time.Duration

	mu   sync.Mutex
	idle []*Conn
}

// Acquire returns the connection for a request's attempt. The first
// attempt takes a pooled one; when the request cannot be sent twice (a
// body, a method that is not idempotent) it first makes sure that one was
// not closed by the peer meanwhile (a shorter keep-alive timeout than
// ours). A later attempt follows a stale pooled connection, whose siblings
// likely are stale too (the peer restarted, or closed its idle
// connections): it drops those and dials, rather than take another stale
// one. reused reports a pooled connection.
func (p *Pool) Acquire(dial func(addr string) (net.Conn, error), attempt int, replayable bool) (c *Conn, reused bool, err error) {
	if attempt == 0 {
		c, reused = p.get()
		for !replayable && c != nil && !c.Alive() {
			c.Close()
			c, reused = p.get()
		}
	} else {
		p.dropDead()
	}
	if c == nil {
		nc, err := dial(p.Addr)
		if err != nil {
			return nil, false, err
		}
		c = &Conn{Conn: nc, R: bufio.NewReaderSize(nc, 16<<10), W: bufio.NewWriterSize(nc, 8<<10), Addr: p.Addr, pool: p}
	}
	return c, reused, nil
}

func (p *Pool) limits() (int, time.Duration) {
	n, d := p.MaxIdle, p.IdleTimeout
	if n <= 0 {
		n = DefaultMaxIdle
	}
	if d <= 0 {
		d = DefaultIdleTimeout
	}
	return n, d
}

func (p *Pool) get() (*Conn, bool) {
	_, timeout := p.limits()
	now := time.Now()
	p.mu.Lock()
	for len(p.idle) > 0 {
		c := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(c.used) < timeout {
			p.mu.Unlock()
			return c, true
		}
		c.Close()
	}
	p.mu.Unlock()
	return nil, false
}

func (p *Pool) put(c *Conn) {
	if c.R.Buffered() > 0 {
		// Bytes after the answer: the peer broke the protocol, and the
		// next request's answer would start with them.
		c.Close()
		return
	}
	maxIdle, _ := p.limits()
	c.used = time.Now()
	p.mu.Lock()
	if len(p.idle) < maxIdle {
		p.idle = append(p.idle, c)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	c.Close()
}

// dropDead closes the idle connections the peer has closed (one
// non-blocking peek each), keeping the live ones.
func (p *Pool) dropDead() {
	maxIdle, _ := p.limits()
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	live := idle[:0]
	for _, c := range idle {
		if c.Alive() {
			live = append(live, c)
		} else {
			c.Close()
		}
	}
	clear(idle[len(live):])
	p.mu.Lock()
	p.idle = append(live, p.idle...)
	if len(p.idle) > maxIdle {
		for _, c := range p.idle[maxIdle:] {
			c.Close()
		}
		clear(p.idle[maxIdle:])
		p.idle = p.idle[:maxIdle]
	}
	p.mu.Unlock()
}

// CloseIdle closes every idle connection.
func (p *Pool) CloseIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.idle {
		c.Close()
	}
	p.idle = nil
}

// Idle returns the number of idle connections.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}
