//go:build linux

package sockio

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestPending: a socket with bytes received and not read is pending, and
// not once they are read; a connection that is not TCP never is.
func TestPending(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer s.Close()
	if Pending(s) {
		t.Fatal("pending before anything was sent")
	}
	if _, err := c.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !Pending(s) {
		if time.Now().After(deadline) {
			t.Fatal("not pending 5 s after 10 bytes were sent")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := io.ReadFull(s, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if Pending(s) {
		t.Error("pending once every byte was read")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Pending(a) {
		t.Error("a pipe is pending")
	}
}
