//go:build linux

package edge

import (
	"net"
	"syscall"

	"github.com/edgestack/edgestack/edge/cache"
	"golang.org/x/sys/unix"
)

// sendHeadAndBlob writes head, then the blob with sendfile(2): the body's
// pages go to the socket without a copy through user memory. The caller
// holds a reference on blob. ok is false when c is not a TCP socket (the
// caller then writes from memory).
func sendHeadAndBlob(c net.Conn, head []byte, blob *cache.Blob) (ok bool, err error) {
	tc, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return false, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false, nil
	}
	var off int64
	size := blob.Size()
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for len(head) > 0 {
			// MSG_MORE: let the header share a segment with the body.
			n, err := unix.SendmsgN(int(fd), head, nil, nil, unix.MSG_MORE)
			if err == unix.EAGAIN {
				return false
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			head = head[n:]
		}
		for off < size {
			n, err := unix.Sendfile(int(fd), blob.FD(), &off, int(size-off))
			if err == unix.EAGAIN {
				return false
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			if n == 0 {
				werr = syscall.EIO // the file is shorter than it should be
				return true
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return true, err
}
