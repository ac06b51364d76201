package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/internal/accesslog"
	"github.com/edgestack/edgestack/internal/h2"
	"github.com/edgestack/edgestack/internal/httpguard"
	"github.com/edgestack/edgestack/internal/sockio"
	"github.com/edgestack/edgestack/internal/wbatch"
	"github.com/edgestack/edgestack/lb/accept"
	"golang.org/x/net/http2"
)

// ServerOptions tune a listener's front end.
type ServerOptions struct {
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request head.
	ReadHeaderTimeout time.Duration
	// MaxHeaderBytes bounds a request head.
	MaxHeaderBytes int
	// MaxConnections bounds concurrent client connections (0: no limit).
	MaxConnections int
	// TLS, when set, makes the listener HTTPS (HTTP/2 and HTTP/1.1 by
	// ALPN).
	TLS *tls.Config
	// OnReject is told of requests refused by the desync guard.
	OnReject func(httpguard.Result)
	// Fast, when set on a TLS server, serves HTTP/1.1 connections with
	// the fast engine (HTTP/2 ones still go to the HTTP/2 server).
	Fast *Handler
	// AccessLog, when set, gets one entry per request (fast engine; the
	// net/http engine is wrapped by the service instead).
	AccessLog *accesslog.Logger
	// Active counts open client connections (optional).
	Active interface{ Add(float64) }
	// BytesIn and BytesOut count the bytes read from and written to
	// client connections, TLS records included (optional; counted only
	// with Active).
	BytesIn, BytesOut interface{ Add(float64) }
	// HTTP2 picks the HTTP/2 server: internal/h2 (default) or x/net's.
	HTTP2  h2.Config
	Logger *slog.Logger
}

// Server is one listener's HTTP front end: every HTTP/1.1 connection goes
// through the desync guard; HTTPS connections that negotiate h2 are served
// by an HTTP/2 server.
type Server struct {
	opts  ServerOptions
	h1    *http.Server
	h2    *http2.Server // when HTTP2 picks net/http's
	own   *h2.Server    // when it picks internal/h2
	conns chan net.Conn // handshaken HTTP/1.1 TLS connections for h1
	fast  *FastServer   // HTTP/1.1 over TLS, when opts.Fast is set
	ln    net.Listener
	wg    sync.WaitGroup // TLS accept loop, handshakes, h2 connections
	done  chan struct{}

	mu   sync.Mutex
	h2c  map[net.Conn]struct{}
	quit atomic.Bool
}

// NewServer returns a server of handler.
func NewServer(handler http.Handler, opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	guardOpts := httpguard.Options{MaxHeaderBytes: opts.MaxHeaderBytes, OnReject: opts.OnReject}
	s := &Server{opts: opts, done: make(chan struct{}), h2c: map[net.Conn]struct{}{}}
	s.h1 = &http.Server{
		Handler:           httpguard.Wrap(handler, guardOpts),
		IdleTimeout:       opts.IdleTimeout,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	if opts.TLS != nil && opts.HTTP2.Own() {
		s.own = &h2.Server{
			Handler:              s.h1.Handler,
			MaxConcurrentStreams: opts.HTTP2.MaxConcurrentStreams,
			MaxHeaderBytes:       opts.MaxHeaderBytes,
			IdleTimeout:          opts.IdleTimeout,
			ReadTimeout:          opts.ReadHeaderTimeout,
			Logger:               opts.Logger,
		}
	}
	if opts.TLS != nil {
		if s.own == nil {
			s.h2 = &http2.Server{IdleTimeout: opts.IdleTimeout, MaxReadFrameSize: 1 << 20, MaxConcurrentStreams: opts.HTTP2.MaxConcurrentStreams}
			_ = http2.ConfigureServer(s.h1, s.h2) // graceful h2 shutdown with h1's
		}
		s.conns = make(chan net.Conn)
		if opts.Fast != nil {
			s.fast = NewFastServer(opts.Fast, opts)
			s.fast.h.initOnce.Do(s.fast.h.init)
		}
	}
	return s
}

// Serve serves ln until Shutdown or Close; it returns nil then.
func (s *Server) Serve(ln net.Listener) error {
	ln = s.opts.limitAndCount(ln)
	s.mu.Lock()
	if s.quit.Load() {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	guardOpts := httpguard.Options{MaxHeaderBytes: s.opts.MaxHeaderBytes, OnReject: s.opts.OnReject}
	var err error
	if s.opts.TLS == nil {
		err = s.h1.Serve(httpguard.NewListener(ln, guardOpts))
	} else {
		s.wg.Add(1)
		go s.acceptTLS(ln, guardOpts)
		err = s.h1.Serve(&chanListener{conns: s.conns, done: s.done, addr: ln.Addr()})
	}
	if errors.Is(err, http.ErrServerClosed) || s.quit.Load() {
		return nil
	}
	return err
}

func (s *Server) acceptTLS(ln net.Listener, guardOpts httpguard.Options) {
	defer s.wg.Done()
	for {
		c, err := accept.Next(ln, s.quit.Load)
		if c == nil {
			if err != nil {
				s.opts.Logger.Error("accept failed", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go s.handshake(c, guardOpts)
	}
}

func (s *Server) handshake(c net.Conn, guardOpts httpguard.Options) {
	defer s.wg.Done()
	wc := wbatch.NewConn(c)
	wc.Disable() // until HTTP/2 is negotiated (net/http's server)
	tc := tls.Server(wc, s.opts.TLS)
	hsTimeout := s.opts.ReadHeaderTimeout
	if hsTimeout <= 0 {
		hsTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), hsTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.opts.Logger.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
		if s.own == nil {
			// Batch its writes (internal/wbatch): net/http's HTTP/2 server
			// flushes each response on its own; internal/h2 batches itself.
			wbatch.Enable(wc)
		}
		s.mu.Lock()
		if s.quit.Load() {
			s.mu.Unlock()
			_ = tc.Close()
			return
		}
		s.h2c[tc] = struct{}{}
		s.mu.Unlock()
		if s.own != nil {
			st := tc.ConnectionState()
			s.own.ServeConn(tc, h2.ConnOpts{TLS: &st})
		} else {
			s.h2.ServeConn(tc, &http2.ServeConnOpts{Handler: s.h1.Handler, BaseConfig: s.h1})
		}
		s.mu.Lock()
		delete(s.h2c, tc)
		s.mu.Unlock()
		return
	}
	if s.fast != nil {
		s.fast.serveExternal(tc)
		return
	}
	select {
	case s.conns <- httpguard.NewConn(tc, guardOpts):
	case <-s.done:
		_ = tc.Close()
	}
}

// Shutdown stops accepting, lets requests in flight finish until ctx ends,
// then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	if s.fast != nil {
		go func() { _ = s.fast.Shutdown(ctx) }()
	}
	if s.own != nil {
		go func() { _ = s.own.Shutdown(ctx) }() // GOAWAY; streams in flight finish
	}
	err := s.h1.Shutdown(ctx) // also sends GOAWAY on x/net's h2 connections
	waited := make(chan struct{})
	go func() { s.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		s.closeH2()
		<-waited
	}
	return err
}

// Close closes everything at once.
func (s *Server) Close() error {
	s.stop()
	if s.fast != nil {
		_ = s.fast.Close()
	}
	err := s.h1.Close()
	s.closeH2()
	s.wg.Wait()
	return err
}

// StopAccepting stops taking new connections at once (the ones open are
// left to Shutdown or Close): a reload that replaces this server must not
// let it accept once the new one serves.
func (s *Server) StopAccepting() {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		_ = s.ln.Close() // plain HTTP: net/http's Serve then returns, and Serve sees quit
	}
}

func (s *Server) stop() {
	if s.quit.Swap(true) {
		return
	}
	close(s.done)
	s.mu.Lock()
	if s.ln != nil && s.opts.TLS != nil {
		_ = s.ln.Close()
	}
	s.mu.Unlock()
}

func (s *Server) closeH2() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.h2c {
		_ = c.Close()
	}
}

// chanListener hands handshaken connections to net/http.
type chanListener struct {
	conns <-chan net.Conn
	done  <-chan struct{}
	addr  net.Addr
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// limitAndCount applies MaxConnections and the connection and byte
// counters to a listener (both engines).
func (o ServerOptions) limitAndCount(ln net.Listener) net.Listener {
	ln = sockio.Listener{Listener: ln}
	if o.MaxConnections <= 0 && o.Active == nil {
		return ln
	}
	cl := &countingListener{Listener: ln, active: o.Active, in: o.BytesIn, out: o.BytesOut, done: make(chan struct{})}
	if o.MaxConnections > 0 {
		cl.slots = make(chan struct{}, o.MaxConnections)
	}
	return cl
}

// countingListener bounds the open connections (when slots is set: an
// Accept waits for a free slot, as netutil.LimitListener's does) and
// keeps a gauge of them; when in and out are set it counts the bytes
// their clients send and receive. Its connections stay *countedConn
// around the *sockio.Conn, so the fast engine can reach the socket.
type countingListener struct {
	net.Listener
	active    interface{ Add(float64) } // nil: not counted
	in, out   interface{ Add(float64) } // nil: not counted
	slots     chan struct{}             // nil: no limit
	done      chan struct{}
	closeOnce sync.Once
}

func (l *countingListener) Accept() (net.Conn, error) {
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		if l.slots != nil {
			<-l.slots
		}
		return nil, err
	}
	if l.active != nil {
		l.active.Add(1)
	}
	cc := &countedConn{Conn: c, active: l.active, in: l.in, out: l.out, slots: l.slots}
	cc.raw, _ = c.(*sockio.Conn)
	return cc, nil
}

func (l *countingListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type countedConn struct {
	net.Conn
	raw     *sockio.Conn // the socket under Conn, if it is one
	active  interface{ Add(float64) }
	in, out interface{ Add(float64) } // nil: not counted
	slots   chan struct{}             // one is freed on Close
	closed  atomic.Bool
	// Bytes not yet added to in/out: a shared counter updated from both
	// cores on every read and write cost ~1% of a small request's CPU.
	pendingIn, pendingOut atomic.Int64
}

// flushEvery is how many bytes a connection counts before adding them to
// the shared counters (and on Close).
const flushEvery = 64 << 10

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	count(c.in, &c.pendingIn, n)
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	count(c.out, &c.pendingOut, n)
	return n, err
}

// count adds n bytes to pending, and pending to ctr once it reaches
// flushEvery.
func count(ctr interface{ Add(float64) }, pending *atomic.Int64, n int) {
	if n > 0 && ctr != nil && pending.Add(int64(n)) >= flushEvery {
		ctr.Add(float64(pending.Swap(0)))
	}
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	if !c.closed.Swap(true) {
		if c.active != nil {
			c.active.Add(-1)
		}
		if c.slots != nil {
			<-c.slots
		}
	}
	if c.in != nil {
		c.in.Add(float64(c.pendingIn.Swap(0)))
		c.out.Add(float64(c.pendingOut.Swap(0)))
	}
	return err
}
