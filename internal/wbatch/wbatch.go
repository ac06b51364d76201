// Package wbatch batches a connection's small writes: Write copies into a
// buffer and returns, and a flusher goroutine (alive only while there is
// something to send) sends whatever has gathered in one write(2).
//
// Why: net/http's HTTP/2 server flushes every time its frame queue runs
// empty, one syscall (and one TLS record, one packet) per response even
// when many streams answer at once. Under load the flushes that arrive
// while a write is in progress now share the next one; when idle a write
// goes out at once (a goroutine hand-off, no timer, no Nagle delay).
// Large writes, and writes with nothing queued ahead, are sent directly
// without a copy.
//
// Batching pays off only where a connection carries concurrent streams:
// connections from Listener write straight through until Enable (for
// TLS, BatchH2 enables it for connections that will speak HTTP/2), so
// HTTP/1.1 pays nothing.
package wbatch

import (
	"crypto/tls"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxBuffered bounds the bytes a connection holds unsent: Write blocks
	// above it, so a client that stops reading still pushes back.
	maxBuffered = 256 << 10
	// directMin: a write at least this large, with nothing queued, is sent
	// by the caller itself (copying it would cost more than it saves).
	directMin = 16 << 10
	// closeLinger bounds how long Close waits for buffered bytes to go out
	// to a peer that does not read.
	closeLinger = 2 * time.Second
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// Listener wraps every accepted connection in a Conn that writes straight
// through until Enable is called on it.
func Listener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	w := NewConn(c)
	w.Disable()
	return w, nil
}

// Disable makes c write straight through until Enable. Call it before
// the connection is shared by several writers.
func (c *Conn) Disable() { c.off.Store(true) }

// Enable turns batching on for c when it is (or wraps, through
// NetConn/Unwrap) a Conn. Call it before the connection is shared by
// several writers.
func Enable(c net.Conn) {
	for c != nil {
		switch x := c.(type) {
		case *Conn:
			x.off.Store(false)
			return
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		case interface{ Unwrap() net.Conn }:
			c = x.Unwrap()
		default:
			return
		}
	}
}

// BatchH2 returns a copy of cfg that enables batching, during the
// handshake, on connections from Listener whose client offers HTTP/2 when
// cfg's NextProtos puts h2 first (so h2 is what will be negotiated).
func BatchH2(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	if len(cfg.NextProtos) == 0 || cfg.NextProtos[0] != "h2" {
		return cfg
	}
	next := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hello.SupportedProtos, "h2") {
			Enable(hello.Conn)
		}
		if next != nil {
			return next(hello)
		}
		return nil, nil
	}
	return cfg
}

// Conn is a net.Conn with batched writes. A write error is returned by a
// later Write (or Close); write deadlines bound the flusher's writes.
type Conn struct {
	net.Conn
	mu      sync.Mutex
	drained sync.Cond // the flusher finished a write, or gave up
	buf     *[]byte   // queued bytes; nil when idle (returned to bufPool)
	sending bool      // a write to Conn is in progress (flusher or direct)
	err     error
	off     atomic.Bool // write straight through (not enabled yet)
}

// NewConn wraps c.
func NewConn(c net.Conn) *Conn {
	w := &Conn{Conn: c}
	w.drained.L = &w.mu
	return w
}

func (c *Conn) queued() int {
	if c.buf == nil {
		return 0
	}
	return len(*c.buf)
}

// Write sends p, or queues it behind a write in progress.
func (c *Conn) Write(p []byte) (int, error) {
	if c.off.Load() {
		return c.Conn.Write(p)
	}
	c.mu.Lock()
	for c.err == nil && c.queued() > 0 && c.queued()+len(p) > maxBuffered {
		c.drained.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if !c.sending && len(p) >= directMin {
		c.sending = true
		c.mu.Unlock()
		n, err := c.Conn.Write(p)
		c.mu.Lock()
		c.doneSending(err)
		c.mu.Unlock()
		return n, err
	}
	if c.buf == nil {
		c.buf = bufPool.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	if !c.sending {
		c.sending = true
		go c.flush()
	}
	c.mu.Unlock()
	return len(p), nil
}

// doneSending ends a write (with c.mu held): records its error and hands
// what queued up meanwhile to a flusher.
func (c *Conn) doneSending(err error) {
	if err != nil && c.err == nil {
		c.err = err
	}
	if c.err == nil && c.queued() > 0 {
		go c.flush()
	} else {
		c.sending = false
	}
	c.drained.Broadcast()
}

// flush sends the queue until it is empty, then ends.
func (c *Conn) flush() {
	c.mu.Lock()
	for c.err == nil && c.queued() > 0 {
		out := c.buf
		c.buf = nil
		c.mu.Unlock()
		_, err := c.Conn.Write(*out)
		*out = (*out)[:0]
		if cap(*out) <= maxBuffered {
			bufPool.Put(out)
		}
		c.mu.Lock()
		if err != nil && c.err == nil {
			c.err = err
		}
		c.drained.Broadcast()
	}
	c.sending = false
	c.drained.Broadcast()
	c.mu.Unlock()
}

// drain waits (bounded by closeLinger) until nothing is being sent.
func (c *Conn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sending {
		// Bound the flusher's write; the deadline no longer matters to
		// anyone else once the connection is closing.
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeLinger))
	}
	for c.sending {
		c.drained.Wait()
	}
}

// Close sends what is queued (for at most closeLinger) and closes.
func (c *Conn) Close() error {
	c.drain()
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.drained.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite sends what is queued and half-closes when the connection
// supports it.
func (c *Conn) CloseWrite() error {
	c.drain()
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Unwrap returns the underlying connection.
func (c *Conn) Unwrap() net.Conn { return c.Conn }
