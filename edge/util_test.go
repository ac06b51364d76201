package edge

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

type atomicInt struct{ v atomic.Int64 }

func (a *atomicInt) add() int64 { return a.v.Add(1) }
func (a *atomicInt) get() int64 { return a.v.Load() }

// serveRaw runs f on each connection to a loopback listener of its own
// (an origin speaking raw bytes) and returns its address. A connection
// closes once f returns and the test ends, or 5 s after f returns.
func serveRaw(t *testing.T, f func(c net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				f(c)
				select {
				case <-done:
				case <-time.After(5 * time.Second):
				}
			}()
		}
	}()
	return ln.Addr().String()
}
