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
	c, s := pair(t)
	if Pending(c) {
		t.Fatal("pending before anything was sent")
	}
	if _, err := s.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !Pending(c) {
		if time.Now().After(deadline) {
			t.Fatal("not pending 5 s after 10 bytes were sent")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := io.ReadFull(c, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if Pending(c) {
		t.Error("pending once every byte was read")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Pending(a) {
		t.Error("a pipe is pending")
	}
}
