package l4

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenConfig binds with SO_REUSEPORT, so a listener that must be
// re-created on reload (its settings changed) can bind its new socket
// before the old one stops: no connection is refused in between.
var ListenConfig = net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}}

// Listen binds a TCP address.
func listenTCP(addr string) (net.Listener, error) {
	return ListenConfig.Listen(context.Background(), "tcp", addr)
}

// ListenTCP binds a TCP address with SO_REUSEPORT (for L7 listeners).
func ListenTCP(addr string) (net.Listener, error) { return listenTCP(addr) }
