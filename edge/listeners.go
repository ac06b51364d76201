package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/edgestack/edgestack/internal/httpguard"
)

// edgeListener is one viewer-facing listener: a view of its socket
// (internal/sharedsock), the fast path accepting on it and the net/http
// server behind. Its settings are fixed when it is built; a reload that
// changes them builds a new one on the same socket and retires this one.
type edgeListener struct {
	name string
	spec string // the settings it was built from (listenerSpec)
	addr net.Addr
	fast *fastServer
	srv  *http.Server
}

// listenerSpec is everything an edgeListener's servers are built from, as
// a string to compare across reloads. Certificates are not in it: they
// are looked up per handshake (s.certs), so a reload swaps them in place.
func listenerSpec(cfg *Config, l Listener) string {
	to := cfg.Timeouts
	to.WebSocketIdle = 0 // read per tunnel from the snapshot: no new servers for it
	return fmt.Sprintf("%s tls=%t %+v %+v header=%d", l.Address, l.TLS != nil, to, cfg.HTTP2, cfg.Limits.MaxHeaderBytes)
}

func listenerName(l Listener) string {
	if l.Name != "" {
		return l.Name
	}
	return l.Address
}

// newListener binds (or shares) l's socket and builds its servers from
// cfg; nothing is served until serveListener.
func (s *Service) newListener(cfg *Config, l Listener) (*edgeListener, error) {
	name := listenerName(l)
	ln, err := s.socks.Listen(l.Address)
	if err != nil {
		return nil, fmt.Errorf("edge: listener %s: %w", name, err)
	}
	guardOpts := httpguard.Options{MaxHeaderBytes: int(cfg.Limits.MaxHeaderBytes), OnReject: func(httpguard.Result) { s.rejects.Inc() }}
	handler := withTLSState(httpguard.Wrap(s.challenges(s.h), guardOpts))
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.Timeouts.ReadHeader.D(),
		ReadTimeout:       cfg.Timeouts.Read.D(),
		WriteTimeout:      cfg.Timeouts.Write.D(),
		IdleTimeout:       cfg.Timeouts.Idle.D(),
		MaxHeaderBytes:    int(cfg.Limits.MaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		// With http2.server: net/http, this server speaks HTTP/2.
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: int(cfg.HTTP2.MaxConcurrentStreams)},
	}
	// Fresh hits over HTTP/1.1 are answered by the fast path, everything
	// else by srv through the connections it hands over (on TLS
	// listeners: all HTTP/2 ones, once the fast path has done the
	// handshake).
	fs := newFastServer(s.h, ln, cfg.Timeouts.Idle.D(), cfg.Timeouts.ReadHeader.D(), cfg.Timeouts.Write.D())
	fs.guard = guardOpts
	fs.read = cfg.Timeouts.Read.D()
	fs.full = handler
	if l.TLS != nil && cfg.HTTP2.Own() {
		fs.h2 = s.h2Server(cfg, handler)
	}
	if l.TLS != nil {
		fs.tlsConf = &tls.Config{GetCertificate: s.getCertificate, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1", "acme-tls/1"}}
		srv.TLSConfig = fs.tlsConf // HTTP/2 for the handed-over *tls.Conns
		srv.ConnContext = connContext
	}
	return &edgeListener{name: name, spec: listenerSpec(cfg, l), addr: ln.Addr(), fast: fs, srv: srv}, nil
}

// challenges answers certd's HTTP-01 challenges ahead of next, from the
// certd storage folders read at the time (none: next serves).
func (s *Service) challenges(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, src := range s.certSources() {
			if src.HTTPChallenge(w, r) {
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// serveListener starts l's two accept loops; s.wg owns them.
func (s *Service) serveListener(l *edgeListener) {
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := l.srv.Serve(l.fast.handoff); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.deps.Fail(fmt.Errorf("edge: listener %s: %w", l.name, err))
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := l.fast.serve(); err != nil {
			s.deps.Fail(fmt.Errorf("edge: listener %s: %w", l.name, err))
		}
	}()
	s.log.Info("listening", "listener", l.name, "addr", l.addr.String(), "tls", l.fast.tlsConf != nil)
}

// stop stops l taking connections (its socket stays open while a newer
// listener shares it) and lets its connections finish until ctx ends.
func (l *edgeListener) stop(ctx context.Context) error {
	l.fast.close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if l.fast.h2 != nil {
			_ = l.fast.h2.Shutdown(ctx) // GOAWAY; in-flight streams finish
		}
	}()
	err := l.srv.Shutdown(ctx)
	if err != nil {
		_ = l.srv.Close()
	}
	waitCtx(ctx, &l.fast.wg)
	<-done
	return err
}

// retire stops l in the background within the shutdown grace; s.wg owns
// the goroutine, so Shutdown waits for it.
func (s *Service) retire(l *edgeListener, grace time.Duration) {
	l.fast.close() // now: new connections must reach the new listener
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		_ = l.stop(ctx)
		s.log.Info("listener stopped", "listener", l.name)
	}()
}

// relisten builds the listener set for cfg: the running ones where the
// settings are unchanged, new ones (on the same socket where the address
// is) where not. Nothing new serves yet; on error the new ones are closed
// and nothing changed.
func (s *Service) relisten(cfg *Config) ([]*edgeListener, error) {
	s.mu.Lock()
	running := map[string]*edgeListener{}
	for _, l := range s.listeners {
		running[l.name] = l
	}
	s.mu.Unlock()
	var next []*edgeListener
	for _, lc := range cfg.Listeners {
		if old := running[listenerName(lc)]; old != nil && old.spec == listenerSpec(cfg, lc) {
			next = append(next, old)
			continue
		}
		l, err := s.newListener(cfg, lc)
		if err != nil {
			s.closeUnserved(next)
			return nil, err
		}
		next = append(next, l)
	}
	return next, nil
}

// listenerSet is ls as a set.
func listenerSet(ls []*edgeListener) map[*edgeListener]bool {
	set := make(map[*edgeListener]bool, len(ls))
	for _, l := range ls {
		set[l] = true
	}
	return set
}

// closeUnserved closes the listeners of next that are not running: built
// by relisten (or Start) and never served.
func (s *Service) closeUnserved(next []*edgeListener) {
	s.mu.Lock()
	running := listenerSet(s.listeners)
	s.mu.Unlock()
	for _, l := range next {
		if !running[l] {
			l.fast.close()
		}
	}
}

// swapListeners serves the listeners of next that are new and retires the
// running ones next does not keep.
func (s *Service) swapListeners(next []*edgeListener, grace time.Duration) {
	s.mu.Lock()
	prev := s.listeners
	s.mu.Unlock()
	was := listenerSet(prev)
	for _, l := range next {
		if !was[l] {
			s.serveListener(l)
		}
	}
	s.mu.Lock()
	s.listeners = next
	s.mu.Unlock()
	kept := listenerSet(next)
	for _, l := range prev {
		if !kept[l] {
			s.retire(l, grace)
		}
	}
}
