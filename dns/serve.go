package dnsserver

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/miekg/dns"
)

func udpWorkers() int { return max(2, runtime.GOMAXPROCS(0)) }

// worker holds the buffers one serving goroutine reuses.
type worker struct {
	key []byte
	out []byte
}

func newWorker() *worker { return &worker{key: make([]byte, 0, 300), out: make([]byte, 0, maxTCP)} }

// ServeDNS answers one raw query from src and returns the answer (nil:
// send nothing). The result aliases w's buffer.
func (s *Service) serve(w *worker, raw []byte, src netip.AddrPort, tcp bool) []byte {
	start := time.Now()
	snap := s.snap.Load()
	proto := protoUDP
	if tcp {
		proto = protoTCP
	}
	vi := 0
	if len(snap.views) > 1 {
		vi = snap.viewIndex(src.Addr().Unmap())
	}
	var key []byte
	var qend int
	var ok bool
	if snap.cache != nil {
		key, qend, ok = fastKey(w.key[:0], raw, tcp, vi)
		w.key = key
		if ok {
			if e := snap.cache.get(key); e != nil {
				out := append(w.out[:0], e.wire...)
				patch(out, raw, qend)
				s.m.fast.Inc()
				s.m.queries[proto][rcodeIndex(e.rcode)].Inc()
				s.m.latency[proto].Observe(time.Since(start).Seconds())
				return out
			}
		}
	}
	a := s.slow(snap, raw, src, tcp, w.out[:0])
	if a.wire == nil {
		s.m.dropped.Inc()
		return nil
	}
	// Only answers that echo the question may be stored: a hit patches the
	// query's question bytes over the stored ones. (A FORMERR answer, for
	// one, carries no question.)
	if ok && a.cacheable && echoesQuestion(a.wire, raw, qend) {
		snap.cache.put(key, a.wire, a.rcode)
	}
	if a.wire[2]&0x02 != 0 {
		s.m.truncated.Inc()
	}
	s.m.queries[proto][rcodeIndex(a.rcode)].Inc()
	s.m.latency[proto].Observe(time.Since(start).Seconds())
	return a.wire
}

func (s *Service) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			s.deps.Fail(err)
			return
		}
		select {
		case s.tcpSem <- struct{}{}:
		default:
			s.m.tcpRejected.Inc()
			c.Close()
			continue
		}
		s.wg.Add(1)
		go s.serveConn(c)
	}
}

// serveConn answers queries on one TCP connection in order (pipelined
// queries are read while answers are written), until the client closes,
// stays idle for tcp.idle_timeout, or the server stops.
func (s *Service) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() { <-s.tcpSem }()
	s.conns.Store(c, struct{}{})
	s.m.tcpConns.Inc()
	defer func() {
		s.conns.Delete(c)
		s.m.tcpConns.Dec()
		c.Close()
	}()
	idle := s.cfg.Load().TCP.IdleTimeout.D()
	src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	r := bufio.NewReaderSize(c, 4096)
	bw := bufio.NewWriterSize(c, 16384)
	w := newWorker()
	msg := make([]byte, 65535)
	for !s.closing.Load() {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(r, msg[:n]); err != nil {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(idle))
		raw := msg[:n]
		if isXFR(raw) {
			if bw.Flush() != nil {
				return
			}
			if err := s.transfer(c, raw, src); err != nil {
				return
			}
			continue
		}
		out := s.serve(w, raw, src, true)
		if out == nil {
			continue
		}
		binary.BigEndian.PutUint16(l[:], uint16(len(out)))
		if _, err := bw.Write(l[:]); err != nil {
			return
		}
		if _, err := bw.Write(out); err != nil {
			return
		}
		// Flush when no further query is already waiting.
		if r.Buffered() == 0 {
			if bw.Flush() != nil {
				return
			}
		}
	}
}

// isXFR reports whether raw is a plain AXFR or IXFR query.
func isXFR(raw []byte) bool {
	if len(raw) < 17 || raw[2]&0xF8 != 0 || raw[5] != 1 {
		return false
	}
	off := 12
	for off < len(raw) && raw[off] != 0 {
		if raw[off] >= 0xC0 {
			return false
		}
		off += int(raw[off]) + 1
	}
	if off+3 > len(raw) {
		return false
	}
	t := binary.BigEndian.Uint16(raw[off+1:])
	return t == dns.TypeAXFR || t == dns.TypeIXFR
}

// echoesQuestion reports whether wire holds exactly the question of raw
// (bytes 12..qend), up to the letter case of the name.
func echoesQuestion(wire, raw []byte, qend int) bool {
	if len(wire) < qend || len(raw) < qend || qend < 12 || wire[4] != 0 || wire[5] != 1 {
		return false
	}
	for i := 12; i < qend; i++ {
		a, b := wire[i], raw[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
