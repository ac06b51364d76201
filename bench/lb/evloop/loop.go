//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// proxy owns one event loop per P; stop ends them and wait returns when
// they have closed every socket.
type proxy struct {
	addr  string // the bound listen address
	loops []*loop
	wg    sync.WaitGroup
}

// conn is a client connection or a target connection.
type conn struct {
	fd     int
	client bool
	in     []byte // bytes read and not yet used
	out    []byte // a client's unsent response bytes
	peer   *conn  // client <-> target while a request is in flight
	target int    // a target connection's index in loop.targets
	armed  bool   // EPOLLOUT is registered
}

type loop struct {
	ep, listenFD, stopFD int
	conns                map[int]*conn
	idle                 [][]*conn // per target
	targets              []unix.SockaddrInet4
	next                 int    // round robin
	port                 string // for X-Forwarded-Port
	buf                  []byte
}

func start(listen string, targets []string) (*proxy, error) {
	var sas []unix.SockaddrInet4
	for _, t := range targets {
		sa, err := sockaddr(t)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", t, err)
		}
		sas = append(sas, sa)
	}
	la, err := sockaddr(listen)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", listen, err)
	}
	p := &proxy{}
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		l, err := newLoop(&la, sas)
		if err != nil {
			p.stop()
			return nil, err
		}
		if i == 0 { // a :0 port is chosen by the first bind; the others share it
			got, _ := unix.Getsockname(l.listenFD)
			la.Port = got.(*unix.SockaddrInet4).Port
			p.addr = net.JoinHostPort(net.IP(la.Addr[:]).String(), strconv.Itoa(la.Port))
		}
		l.port = strconv.Itoa(la.Port)
		p.loops = append(p.loops, l)
		p.wg.Add(1)
		go func() { defer p.wg.Done(); l.run() }()
	}
	return p, nil
}

func sockaddr(hostport string) (unix.SockaddrInet4, error) {
	var sa unix.SockaddrInet4
	a, err := net.ResolveTCPAddr("tcp4", hostport)
	if err != nil {
		return sa, err
	}
	if ip := a.IP.To4(); ip != nil {
		copy(sa.Addr[:], ip)
	}
	sa.Port = a.Port
	return sa, nil
}

func (p *proxy) stop() {
	for _, l := range p.loops {
		_, _ = unix.Write(l.stopFD, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

func (p *proxy) wait() { p.wg.Wait() }

func newLoop(la *unix.SockaddrInet4, targets []unix.SockaddrInet4) (*loop, error) {
	l := &loop{conns: map[int]*conn{}, idle: make([][]*conn, len(targets)), targets: targets, buf: make([]byte, 64<<10)}
	var err error
	if l.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, err
	}
	if l.stopFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, err
	}
	if l.listenFD, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
		return nil, err
	}
	_ = unix.SetsockoptInt(l.listenFD, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	_ = unix.SetsockoptInt(l.listenFD, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err := unix.Bind(l.listenFD, la); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(l.listenFD, 1024); err != nil {
		return nil, err
	}
	for _, fd := range []int{l.listenFD, l.stopFD} {
		if err := l.watch(unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *loop) watch(op, fd int, events uint32) error {
	return unix.EpollCtl(l.ep, op, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)})
}

// run serves every socket epoll reports ready, in the order reported,
// until stop; a blocking epoll_wait is the loop's only wait.
func (l *loop) run() {
	runtime.LockOSThread()
	defer l.closeAll()
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(l.ep, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			switch fd {
			case l.stopFD:
				return
			case l.listenFD:
				l.accept()
				continue
			}
			c := l.conns[fd]
			if c == nil { // closed earlier in this batch
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				l.flush(c)
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				if c.client {
					l.clientReadable(c)
				} else {
					l.targetReadable(c)
				}
			}
		}
	}
}

func (l *loop) closeAll() {
	for fd := range l.conns {
		_ = unix.Close(fd)
	}
	for _, fd := range []int{l.listenFD, l.stopFD, l.ep} {
		_ = unix.Close(fd)
	}
}

func (l *loop) accept() {
	for {
		fd, _, err := unix.Accept4(l.listenFD, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		l.conns[fd] = &conn{fd: fd, client: true}
		if l.watch(unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN) != nil {
			l.close(l.conns[fd])
		}
	}
}

// close closes c and, if a request was in flight, its peer.
func (l *loop) close(c *conn) {
	delete(l.conns, c.fd)
	_ = unix.Close(c.fd)
	if p := c.peer; p != nil {
		c.peer, p.peer = nil, nil
		l.close(p)
	}
}

func (l *loop) clientReadable(c *conn) {
	n, err := unix.Read(c.fd, l.buf)
	if errors.Is(err, unix.EAGAIN) {
		return
	}
	if n <= 0 {
		l.close(c)
		return
	}
	c.in = append(c.in, l.buf[:n]...)
	l.forward(c)
}

var crlf2 = []byte("\r\n\r\n")

// forward sends the client's next complete (body-less) request to the
// next target, with the X-Forwarded fields lbd adds.
func (l *loop) forward(c *conn) {
	if c.peer != nil {
		return
	}
	end := bytes.Index(c.in, crlf2)
	if end < 0 {
		return
	}
	head := c.in[:end+2]
	i := l.next % len(l.targets)
	l.next++
	t, err := l.target(i)
	if err != nil {
		l.close(c)
		return
	}
	t.peer, c.peer = c, t
	host := ""
	if j := bytes.Index(head, []byte("\r\nHost: ")); j >= 0 {
		rest := head[j+8:]
		host = string(rest[:bytes.IndexByte(rest, '\r')])
	}
	req := append(l.buf[:0], head...)
	req = append(req, "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: "...)
	req = append(req, l.port...)
	req = append(req, "\r\nX-Forwarded-Host: "...)
	req = append(req, host...)
	req = append(req, crlf2...)
	c.in = c.in[end+4:]
	if _, err := unix.Write(t.fd, req); err != nil {
		l.close(c)
	}
}

// target returns an idle connection to target i, or dials one.
func (l *loop) target(i int) (*conn, error) {
	if k := len(l.idle[i]); k > 0 {
		t := l.idle[i][k-1]
		l.idle[i] = l.idle[i][:k-1]
		return t, nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &l.targets[i]); err != nil { // blocking: loopback
		_ = unix.Close(fd)
		return nil, err
	}
	_ = unix.SetNonblock(fd, true)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	t := &conn{fd: fd, target: i}
	l.conns[fd] = t
	return t, l.watch(unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN)
}

func (l *loop) targetReadable(t *conn) {
	n, err := unix.Read(t.fd, l.buf)
	if errors.Is(err, unix.EAGAIN) {
		return
	}
	if n <= 0 {
		if t.peer == nil { // an idle one closed
			for k, x := range l.idle[t.target] {
				if x == t {
					l.idle[t.target] = append(l.idle[t.target][:k], l.idle[t.target][k+1:]...)
					break
				}
			}
		}
		l.close(t)
		return
	}
	t.in = append(t.in, l.buf[:n]...)
	size, ok := responseSize(t.in)
	if !ok {
		l.close(t)
		return
	}
	if size < 0 || len(t.in) < size {
		return // more to come
	}
	c := t.peer
	t.peer, c.peer = nil, nil
	c.out = append(c.out, t.in[:size]...)
	t.in = t.in[:0]
	l.idle[t.target] = append(l.idle[t.target], t)
	l.flush(c)
	if len(c.in) > 0 {
		l.forward(c)
	}
}

// responseSize is the length of the response at the start of b, -1 while
// its head is incomplete, and !ok without a Content-Length (the probe
// proxies nothing else).
func responseSize(b []byte) (size int, ok bool) {
	end := bytes.Index(b, crlf2)
	if end < 0 {
		return -1, true
	}
	const field = "\r\nContent-Length: "
	i := bytes.Index(b[:end], []byte(field))
	if i < 0 {
		return 0, false
	}
	v := b[i+len(field):]
	n, err := strconv.Atoi(string(v[:bytes.IndexByte(v, '\r')]))
	if err != nil {
		return 0, false
	}
	return end + 4 + n, true
}

func (l *loop) flush(c *conn) {
	n, err := unix.Write(c.fd, c.out)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		l.close(c)
		return
	}
	if n == len(c.out) {
		c.out = c.out[:0] // keep the buffer
	} else {
		c.out = c.out[max(n, 0):]
	}
	switch {
	case len(c.out) > 0 && !c.armed:
		c.armed = true
		_ = l.watch(unix.EPOLL_CTL_MOD, c.fd, unix.EPOLLIN|unix.EPOLLOUT)
	case len(c.out) == 0 && c.armed:
		c.armed = false
		_ = l.watch(unix.EPOLL_CTL_MOD, c.fd, unix.EPOLLIN)
	}
}
