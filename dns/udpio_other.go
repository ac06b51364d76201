//go:build !linux

package dnsserver

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

func newUDPIO(conn *net.UDPConn, n int) (udpIO, error) { return newXnetIO(conn, n), nil }

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common
// (their Message types are the same).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// xnetIO is udpIO over x/net's batch calls, which allocate the source
// address of every datagram.
type xnetIO struct {
	bc  batchConn
	rms []ipv4.Message
	wms []ipv4.Message
}

func newXnetIO(conn *net.UDPConn, n int) *xnetIO {
	x := &xnetIO{rms: make([]ipv4.Message, n), wms: make([]ipv4.Message, n)}
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		x.bc = ipv4.NewPacketConn(conn)
	} else {
		x.bc = ipv6.NewPacketConn(conn)
	}
	for i := range x.wms {
		x.rms[i].Buffers = make([][]byte, 1)
		x.wms[i].Buffers = make([][]byte, 1)
	}
	return x
}

func (x *xnetIO) read(bufs [][]byte) (int, error) {
	n := min(len(bufs), len(x.rms))
	for i := range n {
		x.rms[i].Buffers[0] = bufs[i]
	}
	return x.bc.ReadBatch(x.rms[:n], 0)
}

func (x *xnetIO) size(i int) int { return x.rms[i].N }

func (x *xnetIO) src(i int) (netip.AddrPort, bool) {
	ua, ok := x.rms[i].Addr.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	return ua.AddrPort(), true
}

func (x *xnetIO) write(outs [][]byte, from []int) (int, error) {
	for j := range outs {
		x.wms[j].Buffers[0] = outs[j]
		x.wms[j].Addr = x.rms[from[j]].Addr
	}
	return x.bc.WriteBatch(x.wms[:len(outs)], 0)
}
