package lb

import (
	"net"
	"strings"
	"sync"

	"github.com/edgestack/edgestack/lb/l4"
)

// socket is one bound TCP address shared by the listeners that use it
// over time: when a reload re-creates a listener on the same address, the
// new one takes over the socket and the old one stops taking connections
// from it, so nothing queued in the kernel is reset. One goroutine accepts
// and hands connections to whichever view is accepting.
type socket struct {
	key   string
	ln    net.Listener
	conns chan net.Conn
	err   chan error
	refs  int // guarded by owner.mu
	owner *sockets
}

// sockets tracks the shared sockets of a service.
type sockets struct {
	mu sync.Mutex
	m  map[string]*socket
}

// listen returns a view of the socket bound to addr, binding it if needed.
func (ss *sockets) listen(addr string) (net.Listener, error) {
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
	ln, err := l4.ListenTCP(addr)
	if err != nil {
		return nil, err
	}
	s := &socket{key: addr, ln: ln, conns: make(chan net.Conn), err: make(chan error, 1), refs: 1, owner: ss}
	if shared {
		ss.m[addr] = s
	}
	go s.accept()
	return s.view(), nil
}

func (s *socket) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			s.err <- err
			close(s.conns)
			return
		}
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
		}()
	}
}

// sockView is one listener's view of a socket.
type sockView struct {
	s    *socket
	done chan struct{}
	once sync.Once
}

func (v *sockView) Accept() (net.Conn, error) {
	select {
	case c, ok := <-v.s.conns:
		if !ok {
			return nil, net.ErrClosed
		}
		return c, nil
	case <-v.done:
		return nil, net.ErrClosed
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
