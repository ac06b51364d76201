// Package sockio reads and writes TCP sockets with recvfrom/sendto issued
// as raw system calls from the calling goroutine, on Go's netpoller.
//
// net.TCPConn's Read and Write go through read(2)/write(2) and the
// runtime's entersyscall/exitsyscall. On a busy loopback proxy two costs
// follow: the VFS layer in front of the socket, and — since a loopback
// send runs the receiver's TCP processing inside the call — system
// calls long enough for the runtime's monitor to hand the caller's P to
// another thread, which then has to be woken and later put back to
// sleep. A non-blocking socket call never blocks, so it can be issued as
// a raw call: the goroutine keeps its P, and readiness waits still park
// it on the netpoller with the connection's deadlines (RawConn). Writes
// larger than 64 KiB, and the writev, sendfile and splice paths of
// net.TCPConn (net.Buffers, ReadFrom, WriteTo), stay ordinary calls.
//
// Wrap returns c itself where this does not apply (not a TCP
// connection, or not Linux).
package sockio

import (
	"bufio"
	"errors"
	"net"
	"time"
)

// Conn is a TCP connection whose Read and Write use raw system calls.
// Everything else (deadlines, Close, addresses, CloseWrite) is the
// wrapped *net.TCPConn's.
type Conn struct {
	*net.TCPConn
	io rawIO
}

// Wrap returns a Conn for a *net.TCPConn on Linux, else c unchanged.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok || !supported {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	w := &Conn{TCPConn: tc}
	w.io.init(rc)
	w.io.tcp = tc
	return w
}

// Listener hands out its connections wrapped by Wrap.
type Listener struct{ net.Listener }

// Accept waits for the next connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// SetDeadline sets the read and write deadlines (see net.Conn).
func (c *Conn) SetDeadline(t time.Time) error {
	return c.io.setReadDeadline(t, c.TCPConn.SetDeadline)
}

// SetReadDeadline sets the read deadline (see net.Conn).
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.io.setReadDeadline(t, c.TCPConn.SetReadDeadline)
}

// Read reads up to len(p) bytes; io.EOF at the end of the stream.
func (c *Conn) Read(p []byte) (int, error) {
	return c.io.read(p)
}

// rawWriteMax is the largest write issued as a raw call. A larger one
// may copy for long enough that the scheduler should be free to run other
// goroutines meanwhile, so it goes through the ordinary system call path.
const rawWriteMax = 64 << 10

// Write writes all of p unless an error (or a deadline) stops it.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) > rawWriteMax {
		if err := c.io.sendPending(); err != nil {
			return 0, err
		}
		return c.TCPConn.Write(p)
	}
	return c.io.write(p)
}

// FlushBeforeRead flushes w, a writer to c, for a request whose answer
// c's next Read reads. On a Conn that Read sends the flushed bytes itself,
// from inside its wait for the answer: an answer cannot arrive before the
// request has left, so the Read waits for readiness at once instead of
// first trying a recvfrom that finds nothing — one system call fewer per
// exchange. (Between two RawConn reads the runtime forgets readiness it
// saw, so only a read that sends the request can skip the try.) Until
// that Read nothing may be written to w; writes to c send the request
// first. For one goroutine's request/response exchange; elsewhere it is
// w.Flush().
func FlushBeforeRead(c net.Conn, w *bufio.Writer) error {
	sc, ok := c.(*Conn)
	if !ok || !supported {
		return w.Flush()
	}
	sc.io.deferNext = true
	err := w.Flush()
	sc.io.deferNext = false
	return err
}

// ErrWouldBlock is what a Conn's Read returns inside ReadLoop's step
// when the socket has nothing to read.
var ErrWouldBlock = errors.New("sockio: nothing to read yet")

// ReadLoop calls step until it returns true, all within one
// RawConn.Read, so that a server can wait for a connection's next
// request without first trying a recvfrom that finds nothing. (The
// runtime forgets the readiness it saw at the start of each
// RawConn.Read, so a read between requests must try first; one that
// lasts across requests need not.) Inside step, c's Read is a single
// recvfrom that returns ErrWouldBlock when there is nothing to read.
// step returns false when it needs more input: ReadLoop then waits for
// readiness if a read since the last wait found the socket empty (it
// returned ErrWouldBlock, or fewer bytes than asked for: anything that
// arrives after that wakes the wait), else it calls step again at once.
// step must return false only when every buffer between c and itself is
// empty (bytes already read raise no readiness). An end of stream that
// arrives with the last bytes a short read returned raises none either
// (the kernel reports it to the next recvfrom): a wait after a short read
// therefore ends within 250 ms, by a read deadline of the loop's own that
// gives way to the caller's, and the loop looks again — so a peer that
// half-closes after its last request sees the close within 250 ms. It may write to c, set
// deadlines and wait on other connections; only it may read c until
// ReadLoop returns: nil after step's true, or the wait's error (a
// deadline, a close).
func (c *Conn) ReadLoop(step func() bool) error {
	return c.io.readLoop(step)
}

// maxIovecs is how many buffers one raw sendmsg carries.
const maxIovecs = 8

// Writev writes bufs in order, with raw sendmsg calls when they are few
// and small (up to 8 buffers, 64 KiB in all), else with net.Buffers'
// writev. It returns the bytes written.
func (c *Conn) Writev(bufs [][]byte) (int64, error) {
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	if len(bufs) > maxIovecs || total > rawWriteMax {
		if err := c.io.sendPending(); err != nil {
			return 0, err
		}
		return copyBuffers(bufs).WriteTo(c.TCPConn)
	}
	return c.io.writev(bufs, total)
}

// WriteBuffers writes bufs to c: Writev for a Conn, else net.Buffers'
// WriteTo (writev on a *net.TCPConn). bufs itself is not kept, so a
// caller's slice literal can stay on its stack.
func WriteBuffers(c net.Conn, bufs [][]byte) (int64, error) {
	if sc, ok := c.(*Conn); ok {
		return sc.Writev(bufs)
	}
	return copyBuffers(bufs).WriteTo(c)
}

// copyBuffers copies bufs for net.Buffers.WriteTo, which consumes its
// receiver.
func copyBuffers(bufs [][]byte) *net.Buffers {
	nb := append(net.Buffers(nil), bufs...)
	return &nb
}

// NetConn returns the wrapped connection (as tls.Conn and
// http.ResponseController's NetConn do).
func (c *Conn) NetConn() net.Conn { return c.TCPConn }

// TCP returns the *net.TCPConn under c (c itself, or the one a Conn
// wraps).
func TCP(c net.Conn) (*net.TCPConn, bool) {
	switch x := c.(type) {
	case *net.TCPConn:
		return x, true
	case *Conn:
		return x.TCPConn, true
	}
	return nil, false
}
