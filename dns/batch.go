package dnsserver

import (
	"errors"
	"net"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// udpBatch is how many datagrams one recvmmsg/sendmmsg moves at most.
const udpBatch = 32

// maxUDPQuery is the largest UDP query read; longer datagrams are cut and
// answered FORMERR.
const maxUDPQuery = 8192

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common
// (their Message types are the same).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// serveUDPBatch is the UDP loop: it reads up to udpBatch queries per
// system call (recvmmsg), answers them and writes the answers with one
// sendmmsg. Under load this divides the system calls, which dominate the
// profile, by the batch size; when idle it behaves like a plain loop.
func (s *Service) serveUDPBatch(conn *net.UDPConn) {
	defer s.wg.Done()
	var bc batchConn
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		bc = ipv4.NewPacketConn(conn)
	} else {
		bc = ipv6.NewPacketConn(conn)
	}
	rms := make([]ipv4.Message, udpBatch)
	wms := make([]ipv4.Message, udpBatch)
	bufs := make([][]byte, udpBatch)
	outs := make([][][]byte, udpBatch)
	workers := make([]*worker, udpBatch)
	for i := range rms {
		bufs[i] = make([]byte, maxUDPQuery)
		rms[i].Buffers = [][]byte{bufs[i]}
		outs[i] = make([][]byte, 1)
		workers[i] = &worker{key: make([]byte, 0, 300), out: make([]byte, 0, 4096)}
	}
	var rkey []byte
	for {
		n, err := bc.ReadBatch(rms, 0)
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		k := 0
		for i := range n {
			m := &rms[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			src := ua.AddrPort()
			out := s.serve(workers[i], bufs[i][:m.N], src, false)
			if out == nil {
				continue
			}
			if r := s.snap.Load().rrl; r != nil {
				var v verdict
				rkey, v = r.check(rkey, src.Addr(), out, time.Now())
				switch v {
				case rrlDrop:
					s.m.rrl.WithLabelValues("drop").Inc()
					continue
				case rrlSlip:
					s.m.rrl.WithLabelValues("slip").Inc()
					if out = truncated(out); out == nil {
						continue
					}
				}
			}
			outs[k][0] = out
			wms[k].Buffers = outs[k]
			wms[k].Addr = m.Addr
			k++
		}
		for off := 0; off < k; {
			w, err := bc.WriteBatch(wms[off:k], 0)
			if err != nil {
				if s.closing.Load() || errors.Is(err, net.ErrClosed) {
					return
				}
				off++ // skip the datagram that failed (e.g. unreachable)
				continue
			}
			off += w
		}
	}
}
