//go:build linux && (amd64 || arm64 || riscv64 || ppc64le || s390x || loong64)

package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
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
}

func (r *rawIO) init(rc syscall.RawConn) {
	r.rc = rc
	r.rfunc = r.recv
	r.wfunc = r.send
	r.vfunc = r.sendv
}

// recv is the read callback: false asks RawConn to wait for readiness.
func (r *rawIO) recv(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(r.rbuf))), uintptr(len(r.rbuf)), 0, 0, 0)
		switch e {
		case 0:
			r.rn, r.rerr = int(n), 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			r.rn, r.rerr = 0, e
			return true
		}
	}
}

// send is the write callback: it writes what it can of wbuf and returns
// false (wait until writable) while some is left.
func (r *rawIO) send(fd uintptr) bool {
	for r.wn < len(r.wbuf) {
		rest := r.wbuf[r.wn:]
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(rest))), uintptr(len(rest)), syscall.MSG_NOSIGNAL, 0, 0)
		if stop, ret := r.sent(n, e); stop {
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

func (r *rawIO) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rmu.Lock()
	r.rbuf = p
	err := r.rc.Read(r.rfunc)
	r.rbuf = nil
	rn, rerr := r.rn, r.rerr
	r.rmu.Unlock()
	if err != nil {
		return 0, opError("read", err)
	}
	if rerr != 0 {
		return 0, opError("read", os.NewSyscallError("recvfrom", rerr))
	}
	if rn == 0 {
		return 0, io.EOF
	}
	return rn, nil
}

func (r *rawIO) write(p []byte) (int, error) {
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

func (r *rawIO) writev(bufs [][]byte, total int) (int64, error) {
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
