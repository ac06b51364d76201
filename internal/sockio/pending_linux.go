//go:build linux

package sockio

import (
	"net"

	"golang.org/x/sys/unix"
)

// Pending reports whether c's socket holds bytes received but not yet
// read (a read would not wait); false when that cannot be told.
func Pending(c net.Conn) bool {
	tc, ok := TCP(c)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if err := rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return false
	}
	return n > 0
}
