// Package l4 is lbd's L4 data plane: TCP listeners forwarding connections
// to a target group (zero-copy splice on Linux), TLS listeners that either
// terminate TLS or pass the encrypted stream through routed by the SNI of
// the ClientHello, optional PROXY protocol v2 to targets, and UDP
// listeners with per-flow affinity and idle expiry.
package l4

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/lb/accept"
	"github.com/edgestack/edgestack/lb/rules"
	"github.com/edgestack/edgestack/lb/targetgroup"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
)

// Routes is a listener's routing snapshot.
type Routes struct {
	// Default receives connections no SNI route matches (nil: refused).
	Default *targetgroup.Group
	// SNI routes (tls listeners), first match wins.
	SNI []SNIRoute
	// ProxyProtocol sends a PROXY v2 header to targets.
	ProxyProtocol bool
	// IdleTimeout closes connections (UDP: flows) without traffic.
	IdleTimeout time.Duration
}

// SNIRoute routes a server-name pattern to a group.
type SNIRoute struct {
	Pattern string
	Group   *targetgroup.Group
}

func (r *Routes) group(sni string) *targetgroup.Group {
	sni = strings.ToLower(sni)
	for _, s := range r.SNI {
		if rules.Glob(strings.ToLower(s.Pattern), sni, true) {
			return s.Group
		}
	}
	return r.Default
}

// Metrics are the L4 collectors.
type Metrics struct {
	Conns   *prometheus.CounterVec // listener, target_group, result
	Bytes   *prometheus.CounterVec // listener, direction
	Connect prometheus.ObserverVec // target_group
}

// NewMetrics creates and registers the L4 metrics.
func NewMetrics(reg prometheus.Registerer, ns string) (*Metrics, error) {
	m := &Metrics{
		Conns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "l4_connections_total",
			Help: "L4 connections (UDP: flows) by listener, target group and result (ok, no_target, connect_failed, bad_client_hello, tls_failed)."},
			[]string{"listener", "target_group", "result"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "l4_bytes_total",
			Help: "Bytes forwarded by L4 listeners, by direction (in: client to target, out: target to client)."},
			[]string{"listener", "direction"}),
		Connect: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "l4_connect_seconds",
			Help: "Time to connect to a target, by target group.", Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5}},
			[]string{"target_group"}),
	}
	for _, c := range []prometheus.Collector{m.Conns, m.Bytes, m.Connect} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Options configure an L4 listener.
type Options struct {
	Name     string
	Protocol string // tcp, tls or udp
	Listen   string
	// Listener (tcp, tls), when set, is used instead of binding Listen.
	Listener net.Listener
	// Passthrough (tls): route by SNI without decrypting.
	Passthrough bool
	// TLS (tls, terminate): the server config.
	TLS            *tls.Config
	MaxConnections int
	Active         interface{ Add(float64) }
	Metrics        *Metrics
	Logger         *slog.Logger
}

// Server is a running L4 listener.
type Server interface {
	Serve() error
	SetRoutes(*Routes)
	Addr() net.Addr
	Shutdown(ctx context.Context) error
	Close() error
}

// Listen binds an L4 listener.
func Listen(opts Options) (Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Protocol == "udp" {
		return listenUDP(opts)
	}
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = listenTCP(opts.Listen); err != nil {
			return nil, err
		}
	}
	s := &tcpServer{opts: opts, ln: ln, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	s.bytesIn = opts.Metrics.Bytes.WithLabelValues(opts.Name, "in")
	s.bytesOut = opts.Metrics.Bytes.WithLabelValues(opts.Name, "out")
	return s, nil
}

type tcpServer struct {
	opts              Options
	ln                net.Listener
	routes            atomic.Pointer[Routes]
	bytesIn, bytesOut prometheus.Counter
	quit              atomic.Bool
	done              chan struct{}
	wg                sync.WaitGroup
	mu                sync.Mutex
	conns             map[net.Conn]struct{}
}

func (s *tcpServer) SetRoutes(r *Routes) { s.routes.Store(r) }
func (s *tcpServer) Addr() net.Addr      { return s.ln.Addr() }

func (s *tcpServer) Serve() error {
	ln := s.ln
	if s.opts.MaxConnections > 0 {
		ln = netutil.LimitListener(ln, s.opts.MaxConnections)
	}
	for {
		c, err := accept.Next(ln, s.quit.Load)
		if err != nil {
			return err
		}
		if c == nil {
			return nil
		}
		if !s.track(c, true) {
			_ = c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			s.handle(c)
		}()
	}
}

func (s *tcpServer) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.quit.Load() {
			return false
		}
		s.conns[c] = struct{}{}
		if s.opts.Active != nil {
			s.opts.Active.Add(1)
		}
		return true
	}
	delete(s.conns, c)
	if s.opts.Active != nil {
		s.opts.Active.Add(-1)
	}
	return true
}

func (s *tcpServer) count(group, result string) {
	s.opts.Metrics.Conns.WithLabelValues(s.opts.Name, group, result).Inc()
}

// handle forwards one client connection.
func (s *tcpServer) handle(c net.Conn) {
	defer c.Close()
	routes := s.routes.Load()
	if routes == nil {
		return
	}
	var client net.Conn = c
	var prefix []byte
	sni := ""
	switch {
	case s.opts.Protocol == "tls" && s.opts.Passthrough:
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var err error
		sni, prefix, err = PeekClientHello(c)
		_ = c.SetReadDeadline(time.Time{})
		if err != nil {
			s.count("", "bad_client_hello")
			return
		}
	case s.opts.Protocol == "tls":
		tc := tls.Server(c, s.opts.TLS)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.count("", "tls_failed")
			return
		}
		sni = tc.ConnectionState().ServerName
		client = tc
		defer tc.Close()
	}
	g := routes.group(sni)
	if g == nil {
		s.count("", "no_target")
		return
	}
	upstream, t := s.dial(g)
	if upstream == nil {
		s.count(g.Name, "connect_failed")
		return
	}
	release := t.Acquire()
	defer release()
	defer upstream.Close()
	s.count(g.Name, "ok")
	if routes.ProxyProtocol {
		src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		dst, _ := netip.ParseAddrPort(c.LocalAddr().String())
		prefix = append(AppendProxyV2(nil, src, dst, false), prefix...)
	}
	if len(prefix) > 0 {
		if _, err := upstream.Write(prefix); err != nil {
			t.Report(false)
			return
		}
	}
	t.Report(true)
	s.pipe(client, upstream, routes.IdleTimeout)
}

// dial connects to a target of g, trying others when a connect fails.
func (s *tcpServer) dial(g *targetgroup.Group) (net.Conn, *targetgroup.Target) {
	var tried []*targetgroup.Target
	obs := s.opts.Metrics.Connect.WithLabelValues(g.Name)
	for range 3 {
		t := g.Pick(tried)
		if t == nil {
			return nil, nil
		}
		start := time.Now()
		c, err := net.DialTimeout("tcp", t.Addr, g.Config().ConnectTimeout.D())
		if err == nil {
			obs.Observe(time.Since(start).Seconds())
			return c, t
		}
		t.Report(false)
		tried = append(tried, t)
	}
	return nil, nil
}

// chunk is how much is copied between idle-deadline refreshes; CopyN of a
// *net.TCPConn still splices.
const chunk = 1 << 20

// pipe copies both ways until both sides are done or the connection is
// idle for idle.
func (s *tcpServer) pipe(client, upstream net.Conn, idle time.Duration) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	copyDir := func(dst, src net.Conn, ctr prometheus.Counter) {
		for {
			if idle > 0 {
				_ = src.SetReadDeadline(time.Now().Add(idle))
			}
			n, err := io.CopyN(dst, src, chunk)
			if n > 0 {
				ctr.Add(float64(n))
				last.Store(time.Now().UnixNano())
			}
			if err == nil {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && idle > 0 && time.Since(time.Unix(0, last.Load())) < idle && !s.quit.Load() {
				continue // the other direction is busy
			}
			// Half-close so the peer sees EOF, then stop.
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && (err == io.EOF) {
				_ = cw.CloseWrite()
			} else {
				_ = dst.Close()
				_ = src.Close()
			}
			return
		}
	}
	done := make(chan struct{})
	go func() {
		copyDir(upstream, client, s.bytesIn)
		close(done)
	}()
	copyDir(client, upstream, s.bytesOut)
	<-done
}

func (s *tcpServer) Shutdown(ctx context.Context) error {
	s.stop()
	waited := make(chan struct{})
	go func() { s.wg.Wait(); close(waited) }()
	select {
	case <-waited:
		return nil
	case <-ctx.Done():
		s.closeConns()
		<-waited
		return ctx.Err()
	}
}

func (s *tcpServer) Close() error {
	s.stop()
	s.closeConns()
	s.wg.Wait()
	return nil
}

func (s *tcpServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quit.Swap(true) {
		return
	}
	close(s.done)
	_ = s.ln.Close()
}

func (s *tcpServer) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
}
