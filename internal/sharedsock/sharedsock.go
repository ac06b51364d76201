// Package sharedsock lets a daemon re-create a listener on reload without
// closing its socket: every listener on one address gets a view of the
// same bound socket, the newest view takes the connections, and the socket
// closes with the last view. So nothing queued in the kernel is reset and
// no client is refused between the old server and the new one.
package sharedsock

import (
	"errors"
	"net"
	"strings"
	"sync"
	"time"
)

// socket is one bound TCP address shared by the listeners that use it
// over time. One goroutine accepts and hands connections to whichever view
// is accepting.
type socket struct {
	key   string
	ln    net.Listener
	conns chan net.Conn // closed when ln is
	// spare holds connections a view received just as it was closed, for
	// the next view.
	spare chan net.Conn
	refs  int // guarded by owner.mu
	owner *Set
}

// Set tracks the shared sockets of a service. The zero Set binds with
// net.Listen.
type Set struct {
	// Bind binds a new socket; nil: net.Listen("tcp", addr).
	Bind func(addr string) (net.Listener, error)

	mu sync.Mutex
	m  map[string]*socket
}

// Listen returns a view of the socket bound to addr, binding it if needed.
// An address with port 0 always binds a new socket. Closing the view stops
// it taking connections; the last view's Close closes the socket.
func (ss *Set) Listen(addr string) (net.Listener, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[string]*socket{}
	}
	shared := !strings.HasSuffix(addr, ":0")
	if s := ss.m[addr]; s != nil && shared {
		s.refs++
		return s.view(), nil
	}
	bind := ss.Bind
	if bind == nil {
		bind = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	}
	ln, err := bind(addr)
	if err != nil {
		return nil, err
	}
	s := &socket{key: addr, ln: ln, conns: make(chan net.Conn), spare: make(chan net.Conn, 16), refs: 1, owner: ss}
	if shared {
		ss.m[addr] = s
	}
	go s.accept()
	return s.view(), nil
}

// accept runs until ln is closed. Other errors (out of file descriptors,
// an aborted handshake) are waited out as net/http's Serve does, so one
// does not end every listener on the socket.
func (s *socket) accept() {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				close(s.conns)
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.conns <- c
	}
}

func (s *socket) view() *sockView {
	return &sockView{s: s, done: make(chan struct{})}
}

func (s *socket) release() {
	s.owner.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last && s.owner.m[s.key] == s {
		delete(s.owner.m, s.key)
	}
	s.owner.mu.Unlock()
	if last {
		_ = s.ln.Close()
		// Connections accepted meanwhile are closed by nobody else.
		go func() {
			for c := range s.conns {
				_ = c.Close()
			}
			for {
				select {
				case c := <-s.spare:
					_ = c.Close()
				default:
					return
				}
			}
		}()
	}
}

// sockView is one listener's view of a socket.
type sockView struct {
	s    *socket
	done chan struct{}
	once sync.Once
}

// Accept returns the socket's next connection, or net.ErrClosed once the
// view is closed: a connection that arrives as the view closes is left for
// the next view, never taken by a server that is going away.
func (v *sockView) Accept() (net.Conn, error) {
	select {
	case <-v.done:
		return nil, net.ErrClosed
	default:
	}
	var c net.Conn
	select {
	case c = <-v.s.spare:
	case got, ok := <-v.s.conns:
		if !ok {
			return nil, net.ErrClosed
		}
		c = got
	case <-v.done:
		return nil, net.ErrClosed
	}
	select {
	case <-v.done:
		select {
		case v.s.spare <- c:
		default:
			_ = c.Close()
		}
		return nil, net.ErrClosed
	default:
		return c, nil
	}
}

func (v *sockView) Close() error {
	v.once.Do(func() {
		close(v.done)
		v.s.release()
	})
	return nil
}

func (v *sockView) Addr() net.Addr { return v.s.ln.Addr() }
