package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// lineServer is a ReadLoop step that answers each line it reads with
// "ok:<line>\n", taking work to answer it, and, like a server between
// requests, leaves it to ReadLoop whether to read on or wait once it has
// answered all it read; it ends at "quit" or an error.
type lineServer struct {
	c    *Conn
	buf  []byte // read, not yet answered
	rbuf []byte
	work time.Duration
	err  error
}

func (s *lineServer) step() bool {
	for {
		if i := bytes.IndexByte(s.buf, '\n'); i >= 0 {
			line := string(s.buf[:i])
			s.buf = s.buf[i+1:]
			if line == "quit" {
				return true
			}
			time.Sleep(s.work) // what arrives meanwhile must not be missed
			if _, err := s.c.Write([]byte("ok:" + line + "\n")); err != nil {
				s.err = err
				return true
			}
			if bytes.IndexByte(s.buf, '\n') < 0 {
				return false // ReadLoop reads on, or waits
			}
			continue
		}
		n, err := s.c.Read(s.rbuf)
		s.buf = append(s.buf, s.rbuf[:n]...)
		switch {
		case errors.Is(err, ErrWouldBlock):
			return false
		case err != nil:
			s.err = err
			return true
		}
	}
}

// TestReadLoop serves lines sent one at a time, all at once, while the
// step is busy with the one before, and longer than one read.
func TestReadLoop(t *testing.T) {
	if !supported {
		t.Skip("no raw socket I/O here")
	}
	long := string(bytes.Repeat([]byte("x"), 3000))
	cases := []struct {
		name  string
		lines []string
		batch bool          // all in one write
		gap   time.Duration // between writes, without waiting for answers
		work  time.Duration
		rbuf  int
	}{
		{name: "one at a time", lines: []string{"a", "b", "c"}},
		{name: "all at once", lines: []string{"a", "b", "c"}, batch: true},
		{name: "sent while the step works", lines: []string{"a", "b", "c"}, gap: 5 * time.Millisecond, work: 30 * time.Millisecond},
		{name: "longer than a read", lines: []string{long, "b", long}, rbuf: 512},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t)
			rbuf := tc.rbuf
			if rbuf == 0 {
				rbuf = 4096
			}
			s := &lineServer{c: c.(*Conn), rbuf: make([]byte, rbuf), work: tc.work}
			done := make(chan error, 1)
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			go func() { done <- s.c.ReadLoop(s.step) }()
			_ = peer.SetDeadline(time.Now().Add(5 * time.Second))
			var want bytes.Buffer
			for _, l := range tc.lines {
				want.WriteString("ok:" + l + "\n")
			}
			got := make([]byte, want.Len())
			switch {
			case tc.batch:
				var all bytes.Buffer
				for _, l := range tc.lines {
					all.WriteString(l + "\n")
				}
				peer.Write(all.Bytes())
			case tc.gap > 0:
				for _, l := range tc.lines {
					peer.Write([]byte(l + "\n"))
					time.Sleep(tc.gap)
				}
			default:
				off := 0
				for _, l := range tc.lines {
					peer.Write([]byte(l + "\n"))
					n, err := io.ReadFull(peer, got[off:off+len("ok:"+l+"\n")])
					if err != nil {
						t.Fatalf("answer to %.10q: %v", l, err)
					}
					off += n
				}
				got = got[:0]
			}
			if len(got) > 0 {
				if _, err := io.ReadFull(peer, got); err != nil {
					t.Fatalf("reading the answers: %v (a line was missed)", err)
				}
				if !bytes.Equal(got, want.Bytes()) {
					t.Fatalf("answers %.60q, want %.60q", got, want.Bytes())
				}
			}
			peer.Write([]byte("quit\n"))
			if err := <-done; err != nil || s.err != nil {
				t.Fatalf("ReadLoop = %v, step error %v; want nil", err, s.err)
			}
			// The connection reads as always after the loop.
			peer.Write([]byte("after"))
			b := make([]byte, 5)
			if _, err := io.ReadFull(c, b); err != nil || string(b) != "after" {
				t.Fatalf("Read after the loop = %q, %v", b, err)
			}
		})
	}
}

// TestReadLoopEnds: the loop's wait ends at the read deadline, at a
// Close, and a step sees the peer's close as io.EOF.
func TestReadLoopEnds(t *testing.T) {
	if !supported {
		t.Skip("no raw socket I/O here")
	}
	t.Run("deadline", func(t *testing.T) {
		c, _ := pair(t)
		s := &lineServer{c: c.(*Conn), rbuf: make([]byte, 64)}
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if err := s.c.ReadLoop(s.step); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("ReadLoop = %v; want a deadline error", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		c, _ := pair(t)
		s := &lineServer{c: c.(*Conn), rbuf: make([]byte, 64)}
		time.AfterFunc(50*time.Millisecond, func() { c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := s.c.ReadLoop(s.step); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadLoop = %v; want net.ErrClosed", err)
		}
	})
	t.Run("peer closes", func(t *testing.T) {
		c, peer := pair(t)
		s := &lineServer{c: c.(*Conn), rbuf: make([]byte, 64)}
		time.AfterFunc(50*time.Millisecond, func() { peer.Close() })
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := s.c.ReadLoop(s.step); err != nil || !errors.Is(s.err, io.EOF) {
			t.Fatalf("ReadLoop = %v, step error %v; want nil and io.EOF", err, s.err)
		}
	})
}

// TestReadLoopHalfClose: a peer that half-closes right after its last
// line (the end of stream comes with the line's bytes, which raises no
// readiness of its own) has the loop see the end, through its probe,
// long before the read deadline.
func TestReadLoopHalfClose(t *testing.T) {
	if !supported {
		t.Skip("no raw socket I/O here")
	}
	c, peer := pair(t)
	peer.Write([]byte("a\n"))
	peer.CloseWrite()
	time.Sleep(20 * time.Millisecond) // both are there before the loop's first read
	s := &lineServer{c: c.(*Conn), rbuf: make([]byte, 64)}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := s.c.ReadLoop(s.step); err != nil || !errors.Is(s.err, io.EOF) {
		t.Fatalf("ReadLoop = %v, step error %v; want nil and io.EOF (the end was missed)", err, s.err)
	}
	b := make([]byte, 8)
	if n, err := io.ReadFull(peer, b[:5]); err != nil || string(b[:n]) != "ok:a\n" {
		t.Fatalf("answer %q, %v", b[:n], err)
	}
}

// TestReadLoopProbeKeepsDeadlines: the probe gives way to a nearer
// caller deadline, and after the loop the caller's deadline is back.
func TestReadLoopProbeKeepsDeadlines(t *testing.T) {
	if !supported {
		t.Skip("no raw socket I/O here")
	}
	t.Run("nearer caller deadline", func(t *testing.T) {
		c, peer := pair(t)
		peer.Write([]byte("a\n"))
		s := &lineServer{c: c.(*Conn), rbuf: make([]byte, 64)}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if err := s.c.ReadLoop(s.step); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("ReadLoop = %v; want the caller's deadline", err)
		}
	})
	t.Run("a probe is no deadline", func(t *testing.T) {
		c, peer := pair(t)
		peer.Write([]byte("a\n"))
		s := &lineServer{c: c.(*Conn), rbuf: make([]byte, 64)}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		time.AfterFunc(400*time.Millisecond, func() { peer.Write([]byte("quit\n")) }) // after a probe
		if err := s.c.ReadLoop(s.step); err != nil || s.err != nil {
			t.Fatalf("ReadLoop = %v, step error %v; want nil", err, s.err)
		}
	})
	t.Run("caller deadline back after the loop", func(t *testing.T) {
		c, peer := pair(t)
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(1200 * time.Millisecond))
		peer.Write([]byte("a\n"))
		time.AfterFunc(100*time.Millisecond, func() { peer.Write([]byte("quit\n")) }) // ends the loop with a probe set
		s := &lineServer{c: c.(*Conn), rbuf: make([]byte, 64)}
		if err := s.c.ReadLoop(s.step); err != nil || s.err != nil {
			t.Fatalf("ReadLoop = %v, step error %v", err, s.err)
		}
		_, err := c.Read(make([]byte, 1))
		if el := time.Since(start); !errors.Is(err, os.ErrDeadlineExceeded) || el < time.Second {
			t.Fatalf("Read after the loop = %v after %v; want the caller's deadline at 1.2 s, not the probe's", err, el)
		}
	})
}
