package connpool

import (
	"net"
	"testing"
	"time"
)

// TestPool covers reuse (most recent first), the idle cap and timeout,
// and the liveness check for requests that cannot be sent twice.
func TestPool(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dials := 0
	dial := func(addr string) (net.Conn, error) { dials++; return net.Dial("tcp", addr) }
	p := &Pool{Addr: ln.Addr().String(), MaxIdle: 2, IdleTimeout: time.Hour}

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
