//go:build linux && (amd64 || arm64 || riscv64 || ppc64le || s390x || loong64)

package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const supported = true

// rawIO holds the prebuilt RawConn callbacks and their arguments, so a
// read or write allocates nothing.
type rawIO struct {
	rc syscall.RawConn

	// The callbacks' arguments and results live here, so each direction
	// takes its own lock (concurrent Reads are legal, if odd).
	rmu   sync.Mutex
	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	rfunc func(fd uintptr) bool

	wmu   sync.Mutex
	wbuf  []byte
	wn    int
	werr  syscall.Errno
	wfunc func(fd uintptr) bool

	// writev's state (under wmu): the buffers, the bytes of them sent,
	// and the iovecs of one sendmsg.
	vbufs  [maxIovecs][]byte // a copy: the caller's slice is not kept
	nbufs  int
	vtotal int
	vfunc  func(fd uintptr) bool
	iov    [maxIovecs]unix.Iovec
	msg    unix.Msghdr

	// A write handed to the next read (FlushBeforeRead), owned by the
	// one goroutine running the exchange: deferNext makes the next write
	// hand its bytes over instead of sending them; pend holds them, pn
	// counts those the read's callback sent, perr is that send's error.
	deferNext bool
	pend      []byte
	pn        int
	psent     bool
	perr      syscall.Errno
	pfunc     func(fd uintptr) bool

	// ReadLoop's state, under rmu: loop is set while its step runs
	// inside the loop's RawConn.Read, whose descriptor is lfd; drained
	// records that a read found the socket empty since the last wait,
	// short that it did so by returning fewer bytes than asked for.
	loop    bool
	lfd     uintptr
	drained bool
	short   bool

	// The read deadline callers set (Unix ns, 0: none), and the probe
	// deadline ReadLoop set in its place (0: none), which bounds a wait
	// after a short read (see ReadLoop).
	tcp     *net.TCPConn
	readDL  atomic.Int64
	probeAt atomic.Int64
}

func (r *rawIO) init(rc syscall.RawConn) {
	r.rc = rc
	r.rfunc = r.recv
	r.wfunc = r.send
	r.vfunc = r.sendv
	r.pfunc = r.sendRecv
}

// recv is the read callback: false asks RawConn to wait for readiness.
func (r *rawIO) recv(fd uintptr) bool {
	n, e := recvfrom(fd, r.rbuf)
	if e == syscall.EAGAIN {
		return false
	}
	r.rn, r.rerr = n, e
	return true
}

// recvfrom is recvfrom(2) as a raw system call, again after EINTR.
func recvfrom(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), 0, 0, 0)
		switch e {
		case 0:
			return int(n), 0
		case syscall.EINTR:
		default:
			return 0, e
		}
	}
}

// sendto is send(2) with MSG_NOSIGNAL as a raw system call, again after
// EINTR.
func sendto(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			return int(n), 0
		case syscall.EINTR:
		default:
			return 0, e
		}
	}
}

// readResult is Read's result for a recvfrom's.
func readResult(n int, e syscall.Errno) (int, error) {
	switch {
	case e != 0:
		return 0, opError("read", os.NewSyscallError("recvfrom", e))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// send is the write callback: it writes what it can of wbuf and returns
// false (wait until writable) while some is left.
func (r *rawIO) send(fd uintptr) bool {
	for r.wn < len(r.wbuf) {
		n, e := sendto(fd, r.wbuf[r.wn:])
		if stop, ret := r.sent(uintptr(n), e); stop {
			return ret
		}
	}
	return true
}

// sent records one send's outcome for a write callback: the bytes sent,
// or the error. stop says the callback must return now, with ret (false:
// the socket is full, wait until writable).
func (r *rawIO) sent(n uintptr, e syscall.Errno) (stop, ret bool) {
	switch e {
	case 0:
		r.wn += int(n)
		return false, false
	case syscall.EINTR:
		return false, false
	case syscall.EAGAIN:
		return true, false
	default:
		r.werr = e
		return true, true
	}
}

// sendRecv is the read callback of a read with a write handed to it:
// the first call sends the write's bytes (right after RawConn.Read
// cleared the readiness it had seen) and returns false, so the read
// waits for the answer instead of first trying a recvfrom that would
// find nothing; later calls are recv. A send the socket cannot take
// whole, or that fails, ends the callback: read finishes it.
func (r *rawIO) sendRecv(fd uintptr) bool {
	if r.psent {
		return r.recv(fd)
	}
	for r.pn < len(r.pend) {
		n, e := sendto(fd, r.pend[r.pn:])
		switch e {
		case 0:
			r.pn += n
		case syscall.EAGAIN:
			return true
		default:
			r.perr = e
			return true
		}
	}
	r.psent = true
	return false
}

func (r *rawIO) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.loop {
		return r.loopRead(p)
	}
	r.rmu.Lock()
	r.rbuf = p
	f, handed := r.rfunc, r.pend != nil
	if handed {
		f, r.pn, r.psent, r.perr = r.pfunc, 0, false, 0
	}
	err := r.rc.Read(f)
	r.rbuf = nil
	rn, rerr := r.rn, r.rerr
	unsent := handed && !r.psent
	var rest []byte
	perr := r.perr
	if handed {
		rest, r.pend = r.pend[r.pn:], nil
	}
	r.rmu.Unlock()
	if unsent {
		switch {
		case perr != 0:
			return 0, opError("write", os.NewSyscallError("sendto", perr))
		case err != nil:
			return 0, opError("write", err)
		}
		// The socket took only part of it: the rest as an ordinary
		// write, then an ordinary read.
		if _, err := r.write(rest); err != nil {
			return 0, err
		}
		return r.read(p)
	}
	if err != nil {
		return 0, opError("read", err)
	}
	return readResult(rn, rerr)
}

func (r *rawIO) write(p []byte) (int, error) {
	if r.deferNext {
		r.deferNext = false
		r.pend = p
		return len(p), nil
	}
	if err := r.sendPending(); err != nil {
		return 0, err
	}
	r.wmu.Lock()
	r.wbuf, r.wn, r.werr = p, 0, 0
	err := r.rc.Write(r.wfunc)
	n, werr := r.wn, r.werr
	r.wbuf = nil
	r.wmu.Unlock()
	if err != nil {
		return n, opError("write", err)
	}
	if werr != 0 {
		return n, opError("write", os.NewSyscallError("sendto", werr))
	}
	return n, nil
}

// opError unwraps RawConn's own OpError ("raw-read") so callers see the
// operation they asked for; deadline errors stay os.ErrDeadlineExceeded.
func opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Err: err}
}

// sendv is writev's callback: sendmsg over what is left of vbufs (wn
// bytes are sent), false while some is left and the socket is full.
func (r *rawIO) sendv(fd uintptr) bool {
	for r.wn < r.vtotal {
		skip, n := r.wn, 0
		for _, b := range r.vbufs[:r.nbufs] {
			if skip >= len(b) {
				skip -= len(b)
				continue
			}
			b, skip = b[skip:], 0
			r.iov[n].Base = unsafe.SliceData(b)
			r.iov[n].SetLen(len(b))
			n++
		}
		r.msg.Iov = &r.iov[0]
		r.msg.SetIovlen(n)
		m, _, e := syscall.RawSyscall(syscall.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&r.msg)), syscall.MSG_NOSIGNAL)
		if stop, ret := r.sent(m, e); stop {
			return ret
		}
	}
	return true
}

// loopRead is a Read inside ReadLoop's step: one recvfrom, no wait.
func (r *rawIO) loopRead(p []byte) (int, error) {
	n, e := recvfrom(r.lfd, p)
	if e == syscall.EAGAIN {
		r.drained, r.short = true, false
		return 0, ErrWouldBlock
	}
	if e == 0 && n > 0 {
		// Fewer bytes than asked for: the socket holds no more data, and
		// data that arrives next wakes the loop's wait (an end of stream
		// that came with these bytes may not: see ReadLoop).
		r.drained = n < len(p)
		r.short = r.drained
	}
	return readResult(n, e)
}

func (r *rawIO) readLoop(step func() bool) error {
	for {
		err := r.loopOnce(step)
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || r.probeAt.Load() == 0 {
			r.disarm()
			return err
		}
		if dl := r.readDL.Load(); dl != 0 && time.Now().UnixNano() >= dl {
			r.disarm()
			return err // the caller's deadline
		}
		// The probe's: look again (the step's first read tries), under
		// the caller's deadline until the next wait after a short read.
		r.disarm()
	}
}

func (r *rawIO) loopOnce(step func() bool) error {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	r.drained, r.short = false, false
	err := r.rc.Read(func(fd uintptr) bool {
		r.lfd, r.loop = fd, true
		for {
			if step() {
				r.loop = false
				return true
			}
			if r.drained {
				if r.short {
					r.armProbe()
				}
				r.drained, r.short, r.loop = false, false, false
				return false
			}
		}
	})
	r.loop = false
	if err != nil {
		return opError("read", err)
	}
	return nil
}

// probeAfter bounds a ReadLoop wait that follows a short read.
const probeAfter = 250 * time.Millisecond

// armProbe makes sure the coming wait ends within probeAfter: by a probe
// deadline already set, the caller's deadline, or a new probe deadline
// (one runtime timer update, at most once per probeAfter on a busy
// connection).
func (r *rawIO) armProbe() {
	now := time.Now().UnixNano()
	if p := r.probeAt.Load(); p > now {
		return
	}
	at := now + int64(probeAfter)
	if dl := r.readDL.Load(); dl != 0 && dl <= at {
		return
	}
	r.probeAt.Store(at)
	_ = r.tcp.SetReadDeadline(time.Unix(0, at))
	if dl := r.readDL.Load(); dl != 0 && dl <= at {
		r.disarm() // a caller set a nearer deadline meanwhile: it stands
	}
}

// disarm puts the caller's read deadline back in place of a probe.
func (r *rawIO) disarm() {
	if r.probeAt.Swap(0) == 0 {
		return
	}
	var t time.Time
	if dl := r.readDL.Load(); dl != 0 {
		t = time.Unix(0, dl)
	}
	_ = r.tcp.SetReadDeadline(t)
}

// setReadDeadline records a caller's read deadline (ReadLoop's probe
// gives way to it) and sets it.
func (r *rawIO) setReadDeadline(t time.Time, set func(time.Time) error) error {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	r.readDL.Store(ns)
	r.probeAt.Store(0)
	return set(t)
}

// sendPending sends a write handed to a read that never came, before
// anything written after it.
func (r *rawIO) sendPending() error {
	if r.pend == nil {
		return nil
	}
	p := r.pend
	r.pend = nil
	_, err := r.write(p)
	return err
}

func (r *rawIO) writev(bufs [][]byte, total int) (int64, error) {
	if err := r.sendPending(); err != nil {
		return 0, err
	}
	r.wmu.Lock()
	r.nbufs = copy(r.vbufs[:], bufs)
	r.vtotal, r.wn, r.werr = total, 0, 0
	err := r.rc.Write(r.vfunc)
	n, werr := r.wn, r.werr
	r.vbufs = [maxIovecs][]byte{} // hold no references to the buffers
	r.iov = [maxIovecs]unix.Iovec{}
	r.msg.Iov = nil
	r.wmu.Unlock()
	if err != nil {
		return int64(n), opError("write", err)
	}
	if werr != 0 {
		return int64(n), opError("write", os.NewSyscallError("sendmsg", werr))
	}
	return int64(n), nil
}

// RawSend is send(2) on a non-blocking socket as a raw system call (see
// the package comment), with MSG_NOSIGNAL added to flags. For callbacks
// of a syscall.RawConn's Write.
func RawSend(fd uintptr, b []byte, flags int) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(flags|syscall.MSG_NOSIGNAL), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// RawSendfile is sendfile(2) to a non-blocking socket as a raw system
// call. It never sleeps: a long one (a megabyte takes a few hundred µs,
// all of it CPU) is work, not a wait, so nothing is gained by the runtime
// handing the P to another thread meanwhile, and the hand-off and its
// undoing cost ~10% of a 1 MiB cache hit's CPU. Other Ps still steal this
// P's runnable goroutines.
func RawSendfile(fd uintptr, src int, off *int64, count int64) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDFILE, fd, uintptr(src), uintptr(unsafe.Pointer(off)), uintptr(count), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
