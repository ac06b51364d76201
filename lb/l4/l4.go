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
	"syscall"
	"time"

	"github.com/edgestack/edgestack/internal/accesslog"
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
	// AccessLog, when set, gets one record per finished connection or
	// UDP flow.
	AccessLog *accesslog.Logger
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

// Results name how a connection or flow ended (access log) or why it
// got no target (metrics, access log).
const (
	ResultOK              = "ok"                 // both sides closed cleanly
	ResultNoTarget        = "no_target"          // no route or no target to pick
	ResultConnectFailed   = "connect_failed"     // every connect attempt failed
	ResultBadClientHello  = "bad_client_hello"   // passthrough: not TLS
	ResultTLSFailed       = "tls_failed"         // terminate: handshake failed
	ResultIdleTimeout     = "idle_timeout"       // no traffic for idle_timeout
	ResultClientReset     = "client_reset"       // the client reset or broke the connection
	ResultTargetReset     = "target_reset"       // the target did
	ResultShutdown        = "shutdown"           // closed by lbd (listener stopped)
	ResultTargetUnreached = "target_unreachable" // udp: the target answered with ICMP unreachable
)

// status maps a result to the status nginx's stream module logs (200
// once a target was connected), for CLF-shaped access-log lines.
func status(result string) int {
	switch result {
	case ResultBadClientHello, ResultTLSFailed:
		return 400
	case ResultConnectFailed:
		return 502
	case ResultNoTarget:
		return 503
	}
	return 200
}

// connRecord starts the access-log record of a client connection.
func (o *Options) connRecord(proto string, client net.Addr, start time.Time) accesslog.Conn {
	rec := accesslog.Conn{Time: start, Listener: o.Name, Proto: proto}
	if ap, err := netip.ParseAddrPort(client.String()); err == nil {
		rec.Remote, rec.RemotePort = ap.Addr().Unmap().String(), int(ap.Port())
	}
	return rec
}

// logConn finishes rec with result and writes it.
func (o *Options) logConn(rec *accesslog.Conn, result string, end time.Time) {
	if o.AccessLog == nil {
		return
	}
	rec.Result, rec.Status, rec.Duration = result, status(result), end.Sub(rec.Time)
	o.AccessLog.LogConn(rec)
}

func (s *tcpServer) count(group, result string) {
	s.opts.Metrics.Conns.WithLabelValues(s.opts.Name, group, result).Inc()
}

// handle forwards one client connection and logs it.
func (s *tcpServer) handle(c net.Conn) {
	defer c.Close()
	rec := s.opts.connRecord(s.opts.Protocol, c.RemoteAddr(), time.Now())
	result := s.forward(c, &rec)
	s.opts.logConn(&rec, result, time.Now())
}

// forward serves one client connection, filling rec (SNI, target,
// bytes), and returns how it ended.
func (s *tcpServer) forward(c net.Conn, rec *accesslog.Conn) string {
	routes := s.routes.Load()
	if routes == nil {
		return ResultNoTarget // not configured yet
	}
	var client net.Conn = c
	var hello []byte
	switch {
	case s.opts.Protocol == "tls" && s.opts.Passthrough:
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var err error
		rec.SNI, hello, err = PeekClientHello(c)
		_ = c.SetReadDeadline(time.Time{})
		if err != nil {
			s.count("", ResultBadClientHello)
			return ResultBadClientHello
		}
	case s.opts.Protocol == "tls":
		tc := tls.Server(c, s.opts.TLS)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := tc.HandshakeContext(ctx)
		cancel()
		rec.SNI = tc.ConnectionState().ServerName // known once the ClientHello was read
		if err != nil {
			s.count("", ResultTLSFailed)
			return ResultTLSFailed
		}
		client = tc
		defer tc.Close()
	}
	g := routes.group(rec.SNI)
	if g == nil {
		s.count("", ResultNoTarget)
		return ResultNoTarget
	}
	rec.TargetGroup = g.Name
	upstream, t := s.dial(g)
	if upstream == nil {
		s.count(g.Name, ResultConnectFailed)
		return ResultConnectFailed
	}
	rec.UpstreamAddr = t.Addr
	release := t.Acquire()
	defer release()
	defer upstream.Close()
	s.count(g.Name, ResultOK)
	prefix := hello
	if routes.ProxyProtocol {
		src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		dst, _ := netip.ParseAddrPort(c.LocalAddr().String())
		prefix = append(AppendProxyV2(nil, src, dst, false), hello...)
	}
	if len(prefix) > 0 {
		if _, err := upstream.Write(prefix); err != nil {
			t.Report(false)
			return ResultTargetReset
		}
		// The replayed ClientHello is client data; the PROXY header is not.
		rec.BytesIn = int64(len(hello))
		s.bytesIn.Add(float64(len(hello)))
	}
	t.Report(true)
	in, out, result := s.pipe(client, upstream, routes.IdleTimeout)
	rec.BytesIn += in
	rec.BytesOut = out
	return result
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
// idle for idle; it returns the bytes copied each way and how the
// connection ended: the first direction to fail names it, since it
// closes both sides and so fails the other.
func (s *tcpServer) pipe(client, upstream net.Conn, idle time.Duration) (in, out int64, result string) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var ended atomic.Pointer[string]
	end := func(r string) { ended.CompareAndSwap(nil, &r) }
	copyDir := func(dst, src net.Conn, ctr prometheus.Counter, fromClient bool) (total int64) {
		for {
			if idle > 0 {
				_ = src.SetReadDeadline(time.Now().Add(idle))
			}
			n, err := io.CopyN(dst, src, chunk)
			if n > 0 {
				total += n
				ctr.Add(float64(n))
				last.Store(time.Now().UnixNano())
			}
			if err == nil {
				continue
			}
			var ne net.Error
			timeout := errors.As(err, &ne) && ne.Timeout()
			idleFor := time.Since(time.Unix(0, last.Load()))
			if timeout && idle > 0 && idleFor < idle && !s.quit.Load() {
				continue // the other direction is busy
			}
			// Half-close so the peer sees EOF, then stop.
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == io.EOF {
				_ = cw.CloseWrite()
				return total
			}
			if err == io.EOF {
				end(ResultOK)
			} else {
				end(endOf(err, fromClient, s.quit.Load(), timeout && idleFor >= idle))
			}
			_ = dst.Close()
			_ = src.Close()
			return total
		}
	}
	done := make(chan struct{})
	go func() {
		in = copyDir(upstream, client, s.bytesIn, true)
		close(done)
	}()
	out = copyDir(client, upstream, s.bytesOut, false)
	<-done
	if r := ended.Load(); r != nil {
		return in, out, *r
	}
	return in, out, ResultOK
}

// endOf names the end of a direction that failed with err (not EOF).
// fromClient is the client-to-target direction; idleExpired says the
// connection was idle for the whole idle timeout. Splice does not say
// which socket failed, so the side is inferred from the errno: a write
// into a reset peer is EPIPE, and a reset is otherwise reported by the
// next read.
func endOf(err error, fromClient, quitting, idleExpired bool) string {
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	switch {
	case timeout && idleExpired:
		return ResultIdleTimeout
	case quitting && (timeout || errors.Is(err, net.ErrClosed)):
		return ResultShutdown
	case timeout:
		return ResultIdleTimeout
	}
	readSide := !errors.Is(err, syscall.EPIPE)
	if fromClient == readSide {
		return ResultClientReset
	}
	return ResultTargetReset
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
