package sharedsock

import (
	"errors"
	"net"
	"testing"
	"time"
)

// accept1 accepts one connection from ln within a second.
func accept1(t *testing.T, ln net.Listener) (net.Conn, error) {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-time.After(time.Second):
		return nil, errors.New("no connection within 1s")
	}
}

// TestHandOver: a second view of an address shares the socket; once the
// first is closed the second takes every connection, including one
// dialled while the first was still open; the socket closes with the
// last view.
func TestHandOver(t *testing.T) {
	var set Set
	first, err := set.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := first.Addr().String()
	// Port 0 is never shared: the named address is.
	if dup, err := set.Listen(addr); err == nil {
		dup.Close()
		t.Fatalf("second bind of %s without SO_REUSEPORT succeeded", addr)
	}
	_ = first.Close()

	old, err := set.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	next, err := set.Listen(addr)
	if err != nil {
		t.Fatalf("second view of %s: %v", addr, err)
	}
	if next.Addr().String() != addr {
		t.Fatalf("view address %s, want %s", next.Addr(), addr)
	}
	c1, err := net.Dial("tcp", addr) // queued before the hand-over
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	_ = old.Close()
	if _, err := old.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("closed view Accept: %v, want net.ErrClosed", err)
	}
	for i := range 2 {
		if i == 1 {
			c2, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("dial after hand-over: %v", err)
			}
			defer c2.Close()
		}
		c, err := accept1(t, next)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		c.Close()
	}
	_ = next.Close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts after the last view closed", addr)
	}
}

// TestBindError: a failing Bind is returned and leaves nothing behind.
func TestBindError(t *testing.T) {
	boom := errors.New("boom")
	set := Set{Bind: func(string) (net.Listener, error) { return nil, boom }}
	if _, err := set.Listen("127.0.0.1:1"); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if len(set.m) != 0 {
		t.Errorf("sockets kept after a failed bind: %v", set.m)
	}
}

// flakyListener fails its first Accept with an error other than a closed
// socket (as EMFILE does).
type flakyListener struct {
	net.Listener
	failed bool
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if !f.failed {
		f.failed = true
		return nil, errors.New("accept4: too many open files")
	}
	return f.Listener.Accept()
}

// TestAcceptErrorWaitedOut: an accept error that is not a closed socket
// does not end the views; the next connection still arrives.
func TestAcceptErrorWaitedOut(t *testing.T) {
	set := Set{Bind: func(addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		return &flakyListener{Listener: ln}, nil
	}}
	ln, err := set.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := accept1(t, ln)
	if err != nil {
		t.Fatalf("after an accept error: %v", err)
	}
	got.Close()
}
