//go:build linux

package edge

import (
	"bytes"
	"net"
	"os"
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

// meltdownFile says whether the kernel isolates its page tables (PTI).
var meltdownFile = "/sys/devices/system/cpu/vulnerabilities/meltdown"

// defaultSendfileMin is cache.sendfile_min_size's default. With PTI every
// system call costs more, and sendfile needs two per response (head,
// body) where one writev does: measured on such a VM, writev won up to
// about 150 KiB (100 KiB hits: 35 against 40 µs of CPU), sendfile from
// 200 KiB on. Without PTI sendfile already won at 64 KiB.
func defaultSendfileMin() Size {
	b, err := os.ReadFile(meltdownFile)
	if err == nil && bytes.Contains(b, []byte("PTI")) {
		return 160 << 10
	}
	return 64 << 10
}
