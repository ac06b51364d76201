package dnsserver

import "net/netip"

// udpIO moves batches of datagrams for serveUDPBatch: Linux reads and
// writes them with recvmmsg/sendmmsg itself (udpio_linux.go), allocating
// nothing per datagram; elsewhere x/net's batch calls do it.
type udpIO interface {
	// read fills bufs[:n] with datagrams and returns n.
	read(bufs [][]byte) (int, error)
	// size and src describe datagram i of the last read.
	size(i int) int
	src(i int) (netip.AddrPort, bool)
	// write sends outs[j] to the source of datagram from[j] of the last
	// read, and returns how many went out (the first failure stops it).
	write(outs [][]byte, from []int) (int, error)
}
