//go:build !linux

package sockio

import "net"

// Pending cannot tell off Linux: false.
func Pending(net.Conn) bool { return false }
