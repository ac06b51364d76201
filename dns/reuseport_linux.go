package dnsserver

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort lets several UDP sockets share the DNS port (SO_REUSEPORT):
// one per worker, so that the kernel spreads datagrams over them and the
// workers do not contend for one socket.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

const canReusePort = true
