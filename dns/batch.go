package dnsserver

import (
	"errors"
	"net"
	"time"
)

// udpBatch is how many datagrams one recvmmsg/sendmmsg moves at most.
const udpBatch = 32

// maxUDPQuery is the largest UDP query read; longer datagrams are cut and
// answered FORMERR.
const maxUDPQuery = 8192

// serveUDPBatch is the UDP loop: it reads up to udpBatch queries per
// system call (recvmmsg), answers them and writes the answers with one
// sendmmsg. Under load this divides the system calls, which dominate the
// profile, by the batch size; when idle it behaves like a plain loop.
func (s *Service) serveUDPBatch(conn *net.UDPConn) {
	defer s.wg.Done()
	uio, err := newUDPIO(conn, udpBatch)
	if err != nil {
		s.log.Error("UDP socket unusable", "err", err)
		return
	}
	bufs := make([][]byte, udpBatch)
	outs := make([][]byte, 0, udpBatch)
	from := make([]int, 0, udpBatch)
	workers := make([]*worker, udpBatch)
	for i := range bufs {
		bufs[i] = make([]byte, maxUDPQuery)
		workers[i] = &worker{key: make([]byte, 0, 300), out: make([]byte, 0, 4096)}
	}
	var rkey []byte
	for {
		n, err := uio.read(bufs)
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		outs, from = outs[:0], from[:0]
		for i := range n {
			src, ok := uio.src(i)
			if !ok {
				continue
			}
			out := s.serve(workers[i], bufs[i][:uio.size(i)], src, false)
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
			outs = append(outs, out)
			from = append(from, i)
		}
		for off := 0; off < len(outs); {
			w, err := uio.write(outs[off:], from[off:])
			if err != nil || w <= 0 {
				if err != nil && (s.closing.Load() || errors.Is(err, net.ErrClosed)) {
					return
				}
				off++ // skip the datagram that failed (e.g. unreachable)
				continue
			}
			off += w
		}
	}
}
