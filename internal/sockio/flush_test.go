package sockio

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestFlushBeforeRead sends requests with FlushBeforeRead and reads the
// peer's answers: whole, after bytes the peer sent first, larger than
// the socket takes at once (the read finishes the send), and followed by
// an ordinary write that must not overtake the request.
func TestFlushBeforeRead(t *testing.T) {
	cases := []struct {
		name     string
		size     int  // request bytes
		early    bool // the peer sends bytes before the request
		full     bool // the socket is full: the read's send finds no room
		writeNow bool // a Write follows the flush, before the read
	}{
		{name: "one byte", size: 1},
		{name: "a head", size: 300},
		{name: "a full buffer", size: 60 << 10},
		{name: "bytes before the request", size: 300, early: true},
		{name: "socket full", size: 300, full: true},
		{name: "a write before the read", size: 300, writeNow: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t)
			var filled []byte
			if tc.full {
				// Fill the socket while the peer does not read: a write
				// that ends at its deadline with part of it sent.
				// that ends at its deadline with nothing more sent.
				fill := bytes.Repeat([]byte("f"), 1<<20)
				for {
					_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
					n, err := c.Write(fill)
					filled = append(filled, fill[:n]...)
					if !errors.Is(err, os.ErrDeadlineExceeded) && err != nil {
						t.Fatalf("filling the socket: %v", err)
					}
					if n == 0 {
						break
					}
				}
			}
			req := bytes.Repeat([]byte("r"), tc.size)
			tail := []byte("tail")
			want := len(filled) + tc.size
			if tc.writeNow {
				want += len(tail)
			}
			answer := []byte("answer")
			var early []byte
			if tc.early {
				early = []byte("early ")
				if _, err := s.Write(early); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond) // the runtime sees them readable
			}
			got := make(chan []byte, 1)
			go func() {
				if tc.full {
					time.Sleep(50 * time.Millisecond) // the read's send finds the socket full
				}
				b := make([]byte, want)
				_, err := io.ReadFull(s, b)
				if err != nil {
					got <- nil
					return
				}
				got <- b
				_, _ = s.Write(answer)
			}()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			w := bufio.NewWriterSize(c, 64<<10)
			w.Write(req)
			if err := FlushBeforeRead(c, w); err != nil {
				t.Fatalf("FlushBeforeRead: %v", err)
			}
			if tc.writeNow {
				if _, err := c.Write(tail); err != nil {
					t.Fatalf("Write after the flush: %v", err)
				}
			}
			b := make([]byte, len(early)+len(answer))
			if _, err := io.ReadFull(c, b); err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			if wantAns := append(append([]byte{}, early...), answer...); !bytes.Equal(b, wantAns) {
				t.Fatalf("read %q, want %q", b, wantAns)
			}
			sent := <-got
			wantReq := append(append(filled, req...), tail...)[:want]
			if !bytes.Equal(sent, wantReq) {
				t.Fatalf("the peer received %d bytes, not the %d sent in order", len(sent), want)
			}
		})
	}
}

// TestFlushBeforeReadClosedPeer: a request flushed to a peer that has
// closed ends the read with an error at once, not at the deadline.
func TestFlushBeforeReadClosedPeer(t *testing.T) {
	for _, reset := range []bool{false, true} {
		c, s := pair(t)
		if reset {
			s.SetLinger(0)
		}
		s.Close()
		time.Sleep(20 * time.Millisecond) // the close is seen before the request
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		w := bufio.NewWriter(c)
		w.WriteString("GET / HTTP/1.1\r\n\r\n")
		err := FlushBeforeRead(c, w)
		if err == nil {
			_, err = c.Read(make([]byte, 16))
		}
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("reset=%v: the exchange ended with %v; want a prompt error or EOF", reset, err)
		}
	}
}

// TestFlushBeforeReadDeadline: a request that cannot be sent because the
// deadline has passed is reported by the read as a write error.
func TestFlushBeforeReadDeadline(t *testing.T) {
	c, _ := pair(t)
	_ = c.SetDeadline(time.Now().Add(-time.Second))
	w := bufio.NewWriter(c)
	w.WriteString("x")
	if err := FlushBeforeRead(c, w); err != nil {
		t.Fatalf("FlushBeforeRead: %v", err)
	}
	_, err := c.Read(make([]byte, 1))
	var oe *net.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || (supported && oe.Op != "write") {
		t.Fatalf("Read = %v; want a write deadline error", err)
	}
}

// TestFlushBeforeReadPlain: elsewhere it is an ordinary Flush.
func TestFlushBeforeReadPlain(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { _, _ = io.Copy(io.Discard, b) }()
	w := bufio.NewWriter(a)
	w.WriteString("x")
	if err := FlushBeforeRead(a, w); err != nil || w.Buffered() != 0 {
		t.Fatalf("FlushBeforeRead on a pipe = %v with %d bytes left", err, w.Buffered())
	}
}
