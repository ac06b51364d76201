package connpool

import (
	"net"
	"testing"
	"time"
)

// listen starts a loopback listener for the test and hands over the
// connections it accepts.
func listen(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	return ln.Addr().String(), ch
}

// TestPool covers reuse (most recent first), the idle cap and timeout,
// and the liveness check for requests that cannot be sent twice.
func TestPool(t *testing.T) {
	addr, accepted := listen(t)
	dials := 0
	dial := func(addr string) (net.Conn, error) { dials++; return net.Dial("tcp", addr) }
	p := &Pool{Addr: addr, MaxIdle: 2, IdleTimeout: time.Hour}

	a, reused, err := p.Acquire(dial, 0, true)
	if err != nil || reused {
		t.Fatalf("first: %v reused=%v", err, reused)
	}
	b, _, _ := p.Acquire(dial, 0, true)
	c, _, _ := p.Acquire(dial, 0, true)
	a.Release()
	b.Release()
	c.Release() // over MaxIdle: closed
	if p.Idle() != 2 || dials != 3 {
		t.Fatalf("idle %d dials %d, want 2 and 3", p.Idle(), dials)
	}
	got, reused, _ := p.Acquire(dial, 0, true)
	if got != b || !reused {
		t.Errorf("got %p (reused %v), want the most recent %p", got, reused, b)
	}
	got.Release()

	// The peer closes both pooled connections: a replayable request may
	// take one (and retry), one that cannot be replayed gets a live one.
	for range 3 {
		(<-accepted).Close()
	}
	time.Sleep(50 * time.Millisecond)
	got, reused, _ = p.Acquire(dial, 0, false)
	if reused || dials != 4 {
		t.Errorf("non-replayable request got a closed connection (reused %v, dials %d)", reused, dials)
	}
	got.Close()

	// A retry after a stale connection drops the dead idle ones and dials.
	d, _, _ := p.Acquire(dial, 0, true)
	d.Release()
	(<-accepted).Close() // the non-replayable request's connection
	(<-accepted).Close() // d's
	time.Sleep(50 * time.Millisecond)
	if got, reused, _ := p.Acquire(dial, 1, true); reused || p.Idle() != 0 {
		t.Errorf("retry: reused %v, %d dead idle connections kept", reused, p.Idle())
	} else {
		got.Close()
	}

	// Idle past the timeout: dropped.
	p.IdleTimeout = time.Millisecond
	e, _, _ := p.Acquire(dial, 0, true)
	e.Release()
	time.Sleep(5 * time.Millisecond)
	if _, reused, _ := p.Acquire(dial, 0, true); reused {
		t.Error("connection idle past the timeout reused")
	}
}

// deadlineSpy records the deadlines set on the connection under it.
type deadlineSpy struct {
	net.Conn
	set []time.Time
}

func (d *deadlineSpy) SetDeadline(t time.Time) error {
	d.set = append(d.set, t)
	return d.Conn.SetDeadline(t)
}

func TestSetDeadlineWithin(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	spy := &deadlineSpy{Conn: a}
	c := &Conn{Conn: spy}
	t0 := time.Now().Add(time.Minute)
	const slack = 10 * time.Millisecond
	steps := []struct {
		name string
		call func() error
		want time.Time // the deadline set on the connection; zero: none
	}{
		{"first sets t+slack", func() error { return c.SetDeadlineWithin(t0, slack) }, t0.Add(slack)},
		{"same t keeps it", func() error { return c.SetDeadlineWithin(t0, slack) }, time.Time{}},
		{"t a little later keeps it", func() error { return c.SetDeadlineWithin(t0.Add(slack/2), slack) }, time.Time{}},
		{"t up to the set deadline keeps it", func() error { return c.SetDeadlineWithin(t0.Add(slack), slack) }, time.Time{}},
		{"t past it sets a new one", func() error { return c.SetDeadlineWithin(t0.Add(2*slack), slack) }, t0.Add(3 * slack)},
		{"an earlier t sets it (never late by more than slack)", func() error { return c.SetDeadlineWithin(t0, slack) }, t0.Add(slack)},
		{"an exact deadline is set", func() error { return c.SetDeadline(t0.Add(time.Hour)) }, t0.Add(time.Hour)},
		{"and forgets the kept one", func() error { return c.SetDeadlineWithin(t0, slack) }, t0.Add(slack)},
		{"a read deadline forgets it too", func() error { return c.SetReadDeadline(t0) }, time.Time{}},
		{"so the next one is set", func() error { return c.SetDeadlineWithin(t0, slack) }, t0.Add(slack)},
	}
	for _, s := range steps {
		before := len(spy.set)
		if err := s.call(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		switch {
		case s.want.IsZero() && len(spy.set) != before:
			t.Errorf("%s: set %v; want no new deadline", s.name, spy.set[before:])
		case !s.want.IsZero() && (len(spy.set) != before+1 || !spy.set[before].Equal(s.want)):
			t.Errorf("%s: set %v; want %v", s.name, spy.set[before:], s.want)
		}
	}
}

// TestDeadlinesFromTwoGoroutines: a cancellation may set a deadline while
// the owner sets its own (run with -race).
func TestDeadlinesFromTwoGoroutines(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &Conn{Conn: a}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			_ = c.SetDeadline(time.Unix(1, 0))
		}
	}()
	for i := range 1000 {
		_ = c.SetDeadlineWithin(time.Now().Add(time.Duration(i)*time.Millisecond), time.Millisecond)
	}
	<-done
}

// TestAliveIgnoresDeadline: a pooled connection keeps whatever deadline
// its last request left, which may have passed; Alive still tells an open
// connection from one the peer closed.
func TestAliveIgnoresDeadline(t *testing.T) {
	addr, accepted := listen(t)
	p := &Pool{Addr: addr}
	c, _, err := p.Acquire(func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer := <-accepted
	_ = c.SetDeadline(time.Now().Add(-time.Second))
	if !c.Alive() {
		t.Error("open connection with a past deadline: not alive")
	}
	peer.Close()
	time.Sleep(20 * time.Millisecond)
	if c.Alive() {
		t.Error("connection the peer closed: alive")
	}
}

// TestReleaseWithBytesLeft: a connection released with bytes after the
// answer in its buffer is closed, not pooled: the next request's answer
// would start with them.
func TestReleaseWithBytesLeft(t *testing.T) {
	addr, accepted := listen(t)
	dial := func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }
	p := &Pool{Addr: addr}
	c, _, err := p.Acquire(dial, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	defer s.Close()
	if _, err := s.Write([]byte("answer and more")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len("answer"))
	if _, err := c.R.Read(b); err != nil {
		t.Fatal(err)
	}
	if c.R.Buffered() == 0 {
		t.Fatal("the test needs bytes left in the buffer")
	}
	c.Release()
	if p.Idle() != 0 {
		t.Fatalf("%d idle connections after releasing one with bytes left, want 0", p.Idle())
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("the connection released with bytes left is still open")
	}
}
