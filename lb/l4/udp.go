package l4

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/internal/accesslog"
	"github.com/edgestack/edgestack/lb/targetgroup"
	"github.com/prometheus/client_golang/prometheus"
)

// udpServer forwards datagrams per flow (client address): a flow sticks
// to one target through its own connected socket until it is idle for
// the listener's idle timeout.
type udpServer struct {
	opts              Options
	pc                *net.UDPConn
	routes            atomic.Pointer[Routes]
	bytesIn, bytesOut prometheus.Counter

	mu    sync.Mutex
	flows map[netip.AddrPort]*flow
	quit  atomic.Bool
	wg    sync.WaitGroup
	done  chan struct{}
}

type flow struct {
	up      *net.UDPConn
	target  *targetgroup.Target
	group   string
	release func()
	start   time.Time
	last    atomic.Int64 // unix nanoseconds of the last datagram either way
	// Forwarded datagrams and bytes, for the access log: in is client
	// to target (Serve), out target to client (replies).
	pktIn, bytesIn, pktOut, bytesOut atomic.Int64
}

func listenUDP(opts Options) (*udpServer, error) {
	lpc, err := ListenConfig.ListenPacket(context.Background(), "udp", opts.Listen)
	if err != nil {
		return nil, err
	}
	pc := lpc.(*net.UDPConn)
	s := &udpServer{opts: opts, pc: pc, flows: map[netip.AddrPort]*flow{}, done: make(chan struct{})}
	s.bytesIn = opts.Metrics.Bytes.WithLabelValues(opts.Name, "in")
	s.bytesOut = opts.Metrics.Bytes.WithLabelValues(opts.Name, "out")
	return s, nil
}

func (s *udpServer) SetRoutes(r *Routes) { s.routes.Store(r) }
func (s *udpServer) Addr() net.Addr      { return s.pc.LocalAddr() }

func (s *udpServer) Serve() error {
	s.wg.Add(1)
	go s.janitor()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := s.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if s.quit.Load() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			continue
		}
		f := s.flow(from)
		if f == nil {
			continue
		}
		f.last.Store(time.Now().UnixNano())
		if _, err := f.up.Write(buf[:n]); err != nil {
			f.target.Report(false)
			continue
		}
		f.pktIn.Add(1)
		f.bytesIn.Add(int64(n))
		s.bytesIn.Add(float64(n))
	}
}

// flow returns the flow of client from, creating it.
func (s *udpServer) flow(from netip.AddrPort) *flow {
	s.mu.Lock()
	f := s.flows[from]
	s.mu.Unlock()
	if f != nil {
		return f
	}
	routes := s.routes.Load()
	if routes == nil || routes.Default == nil {
		return nil
	}
	g := routes.Default
	var tried []*targetgroup.Target
	for range 3 {
		t := g.Pick(tried)
		if t == nil {
			break
		}
		raddr, err := net.ResolveUDPAddr("udp", t.Addr)
		var up *net.UDPConn
		if err == nil {
			up, err = net.DialUDP("udp", nil, raddr)
		}
		if err != nil {
			t.Report(false)
			tried = append(tried, t)
			continue
		}
		now := time.Now()
		f = &flow{up: up, target: t, group: g.Name, release: t.Acquire(), start: now}
		f.last.Store(now.UnixNano())
		s.mu.Lock()
		if s.quit.Load() {
			s.mu.Unlock()
			_ = up.Close()
			f.release()
			return nil
		}
		s.flows[from] = f
		s.mu.Unlock()
		if s.opts.Active != nil {
			s.opts.Active.Add(1)
		}
		s.opts.Metrics.Conns.WithLabelValues(s.opts.Name, g.Name, "ok").Inc()
		s.wg.Add(1)
		go s.replies(from, f)
		return f
	}
	s.opts.Metrics.Conns.WithLabelValues(s.opts.Name, g.Name, "no_target").Inc()
	return nil
}

// replies copies a target's datagrams back to the client until the flow
// is closed.
func (s *udpServer) replies(client netip.AddrPort, f *flow) {
	defer s.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.up.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && !ne.Timeout() && !errors.Is(err, net.ErrClosed) {
				f.target.Report(false) // e.g. ICMP port unreachable
				s.expire(client, f, ResultTargetUnreached)
			}
			return
		}
		f.last.Store(time.Now().UnixNano())
		if _, err := s.pc.WriteToUDPAddrPort(buf[:n], client); err == nil {
			f.pktOut.Add(1)
			f.bytesOut.Add(int64(n))
			s.bytesOut.Add(float64(n))
		}
	}
}

// expire ends a flow (once, whoever calls first) and logs it with
// result.
func (s *udpServer) expire(client netip.AddrPort, f *flow, result string) {
	s.mu.Lock()
	if s.flows[client] != f {
		s.mu.Unlock()
		return
	}
	delete(s.flows, client)
	s.mu.Unlock()
	_ = f.up.Close()
	f.release()
	if s.opts.Active != nil {
		s.opts.Active.Add(-1)
	}
	if s.opts.AccessLog == nil {
		return
	}
	rec := accesslog.Conn{Time: f.start, Listener: s.opts.Name, Proto: "udp", Remote: client.Addr().Unmap().String(),
		RemotePort: int(client.Port()), TargetGroup: f.group, UpstreamAddr: f.target.Addr,
		BytesIn: f.bytesIn.Load(), BytesOut: f.bytesOut.Load(), PacketsIn: f.pktIn.Load(), PacketsOut: f.pktOut.Load()}
	// The flow lasted until its last datagram, not until it expired.
	s.opts.logConn(&rec, result, time.Unix(0, f.last.Load()))
}

// janitor expires idle flows.
func (s *udpServer) janitor() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		idle := 30 * time.Second
		if r := s.routes.Load(); r != nil && r.IdleTimeout > 0 {
			idle = r.IdleTimeout
		}
		cutoff := time.Now().Add(-idle).UnixNano()
		s.mu.Lock()
		var old []netip.AddrPort
		var fs []*flow
		for k, f := range s.flows {
			if f.last.Load() < cutoff {
				old = append(old, k)
				fs = append(fs, f)
			}
		}
		s.mu.Unlock()
		for i := range old {
			s.expire(old[i], fs[i], ResultIdleTimeout)
		}
	}
}

func (s *udpServer) Shutdown(ctx context.Context) error { return s.Close() }

func (s *udpServer) Close() error {
	if s.quit.Swap(true) {
		return nil
	}
	close(s.done)
	_ = s.pc.Close()
	s.mu.Lock()
	var keys []netip.AddrPort
	var fs []*flow
	for k, f := range s.flows {
		keys = append(keys, k)
		fs = append(fs, f)
	}
	s.mu.Unlock()
	for i := range keys {
		s.expire(keys[i], fs[i], ResultShutdown)
	}
	s.wg.Wait()
	return nil
}
