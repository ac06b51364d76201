// Package h2 is an HTTP/2 server (RFC 9113) for edged's and lbd's TLS
// listeners, in place of net/http's.
//
// Why: net/http's HTTP/2 server runs three goroutines per connection that
// talk over channels, starts a goroutine for every response's HEADERS
// frame and every flush (writeResHeaders never "stays within the
// buffer"), and a fresh goroutine per stream whose stack then grows by
// copying: on a 1 KiB cache hit that was about 60 µs of CPU against 15
// for the same hit over HTTPS/1.1.
//
// This server reads frames on the connection's own goroutine (frames and
// HPACK through golang.org/x/net/http2's Framer, which also validates
// header blocks), answers requests an Inline function can serve at once
// on that goroutine, and runs every other request's handler on a goroutine
// of its own. All writes go through one buffered writer under a mutex; the
// reading goroutine flushes it when it has no more input to process, so
// the answers to the requests of one read leave in one write, and a
// handler goroutine flushes when its response ends.
package h2

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server serves HTTP/2 connections. Set its fields before the first
// ServeConn; they are not changed after.
type Server struct {
	// Handler serves every request. Required.
	Handler http.Handler
	// Inline, when set, is offered every request without a body on the
	// connection's reading goroutine before a goroutine is started for
	// it. It returns false, having written nothing, when it cannot answer
	// at once without blocking (edged: anything but a fresh hit); the
	// request then goes to Handler. What it writes is buffered: it never
	// waits for the peer's flow-control window.
	Inline func(w http.ResponseWriter, r *http.Request) bool
	// MaxConcurrentStreams is advertised to clients, and counts streams
	// whose handler is still running, even after the client reset them.
	// Default: 250.
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds a request's header list (RFC 9113
	// SETTINGS_MAX_HEADER_LIST_SIZE, names + values + 32 per field).
	// Default: 1 MiB.
	MaxHeaderBytes int
	// StreamWindow is the receive window of each stream for request
	// bodies. Default: 1 MiB (as net/http's server: a smaller window slows
	// uploads over links with a large bandwidth-delay product).
	StreamWindow int32
	// IdleTimeout closes a connection with no open stream for this long
	// (GOAWAY first). Default: 0, none.
	IdleTimeout time.Duration
	// ReadTimeout bounds reading the client's preface and first SETTINGS.
	// Default: 10s.
	ReadTimeout time.Duration
	// BodyTimeout bounds how long a request's body may take to arrive,
	// from its HEADERS frame: a stream whose body is still incomplete then
	// is reset (CANCEL) and its handler's reads fail, as net/http's
	// ReadTimeout does for HTTP/2 streams. Default: 0, none.
	BodyTimeout time.Duration
	// WriteTimeout closes a connection whose peer does not take a write
	// within it. Default: 30s.
	WriteTimeout time.Duration
	// ExtendedConnect advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and
	// takes CONNECT requests with a :protocol (RFC 8441: WebSockets over
	// HTTP/2). The handler sees them as x/net's server shows them: Method
	// CONNECT, the protocol in Header[":protocol"], URL and Host from :path
	// and :authority; the request body and the response are the two
	// directions of the tunnel, and BodyTimeout does not apply. Default:
	// false (a :protocol is then a malformed request).
	ExtendedConnect bool
	// Logger gets debug lines about connection errors. Default: discard.
	Logger *slog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown bool
	done     chan struct{} // closed when the last conn ends during Shutdown
}

// ConnOpts describe one connection.
type ConnOpts struct {
	// Context is the parent of every request's context. Default:
	// context.Background().
	Context context.Context
	// TLS is reported as each request's TLS state. Default: taken from c
	// when it is a *tls.Conn.
	TLS *tls.ConnectionState
}

// ServeConn serves c, which has already negotiated h2 (or is prior-
// knowledge cleartext HTTP/2), until the client goes away, an error ends
// it, or Shutdown finishes. It closes c.
func (s *Server) ServeConn(c net.Conn, opts ConnOpts) {
	sc := s.newConn(c, opts)
	if sc == nil {
		_ = c.Close()
		return
	}
	defer s.untrack(sc)
	sc.serve()
}

// Shutdown sends every connection a GOAWAY, refuses new connections, and
// waits until the streams in flight are done and the connections closed,
// or ctx ends (then it closes them).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	if s.done == nil {
		s.done = make(chan struct{})
		if len(s.conns) == 0 {
			close(s.done)
		}
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	done := s.done
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			_ = c.nc.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.shutdown && len(s.conns) == 0 && s.done != nil {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
}

func (s *Server) maxStreams() uint32 {
	if s.MaxConcurrentStreams > 0 {
		return s.MaxConcurrentStreams
	}
	return 250
}

func (s *Server) maxHeaderBytes() uint32 {
	if s.MaxHeaderBytes > 0 {
		return uint32(s.MaxHeaderBytes)
	}
	return 1 << 20
}

func (s *Server) streamWindow() int32 {
	if s.StreamWindow > 0 {
		return s.StreamWindow
	}
	return 1 << 20
}

func (s *Server) readTimeout() time.Duration {
	if s.ReadTimeout > 0 {
		return s.ReadTimeout
	}
	return 10 * time.Second
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout > 0 {
		return s.WriteTimeout
	}
	return 30 * time.Second
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}
