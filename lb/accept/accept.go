// Package accept is lbd's one accept loop step: the next connection from
// a listener, backing off on temporary errors (EMFILE and the like) instead
// of spinning, and telling a deliberate stop from a failure.
package accept

import (
	"errors"
	"net"
	"time"
)

// Next returns the next connection from ln. After an error it returns
// (nil, nil) when stopping() reports a deliberate stop, sleeps and retries
// (5 ms doubling up to 1 s) when the error is temporary, and returns the
// error otherwise.
func Next(ln net.Listener, stopping func() bool) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		if stopping() {
			return nil, nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		return nil, err
	}
}
