package httpguard

import (
	"bytes"
	"math/rand/v2"
	"net"
	"testing"
)

// headConn is a net.Conn whose every Read returns one request head.
type headConn struct {
	net.Conn
	head []byte
}

func (c *headConn) Read(p []byte) (int, error) { return copy(p, c.head), nil }

// TestConnReadsWithoutAllocating: keep-alive requests read through a
// guarded connection cost no allocation (the edge's hit path allocates
// nothing else, so any garbage here set off collections under load).
func TestConnReadsWithoutAllocating(t *testing.T) {
	head := []byte("GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: wrk\r\n\r\n")
	c := NewConn(&headConn{head: head}, Options{})
	p := make([]byte, 4096)
	read := func() {
		n, err := c.Read(p)
		if err != nil || !bytes.Equal(p[:n], head) {
			t.Fatalf("read %q, %v", p[:n], err)
		}
	}
	read()
	if n := testing.AllocsPerRun(1000, read); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}

// TestContainsFold agrees with bytes.Contains over bytes.ToLower.
func TestContainsFold(t *testing.T) {
	marker := []byte(lowerMarker)
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, r.IntN(64))
		for i := range b {
			b[i] = "\nX-EDGSTACKHTPUARD:xedgstackhtpuard-: "[r.IntN(38)]
		}
		if r.IntN(4) == 0 {
			at := r.IntN(len(b) + 1)
			m := bytes.Clone(marker)
			for i := range m {
				if r.IntN(2) == 0 {
					m[i] = bytes.ToUpper(m[i : i+1])[0]
				}
			}
			b = append(b[:at], append(m, b[at:]...)...)
		}
		if got, want := containsFold(b, lowerMarker), bytes.Contains(bytes.ToLower(b), marker); got != want {
			t.Fatalf("%q: %v, want %v", b, got, want)
		}
	}
}
