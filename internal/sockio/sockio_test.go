package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns a wrapped client connection and the plain server side of
// a loopback TCP connection.
func pair(t *testing.T) (net.Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	w := Wrap(c)
	t.Cleanup(func() { w.Close(); s.Close() })
	return w, s.(*net.TCPConn)
}

func TestWrapOnlyWrapsTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("a pipe was wrapped")
	}
	if _, ok := TCP(a); ok {
		t.Fatal("TCP found a TCP connection under a pipe")
	}
	c, _ := pair(t)
	if _, ok := c.(*Conn); ok != supported {
		t.Fatalf("wrapped TCP connection is %T (supported=%v)", c, supported)
	}
	if tc, ok := TCP(c); !ok || tc == nil {
		t.Fatal("TCP did not find the wrapped connection")
	}
}

func TestRoundTrip(t *testing.T) {
	for _, size := range []int{1, 1500, 64 << 10, 8 << 20} {
		c, s := pair(t)
		data := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		echoed := make(chan error, 1)
		go func() { // the server echoes until the client half-closes
			_, err := io.Copy(s, s)
			s.CloseWrite()
			echoed <- err
		}()
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(c)
			got <- b
		}()
		n, err := c.Write(data)
		if err != nil || n != size {
			t.Fatalf("size %d: Write = %d, %v", size, n, err)
		}
		if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatalf("size %d: CloseWrite: %v", size, err)
		}
		if err := <-echoed; err != nil {
			t.Fatalf("size %d: echo: %v", size, err)
		}
		if b := <-got; !bytes.Equal(b, data) {
			t.Fatalf("size %d: read back %d bytes, not what was written", size, len(b))
		}
	}
}

func TestEOF(t *testing.T) {
	c, s := pair(t)
	s.Write([]byte("last"))
	s.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "last" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the end = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestReadDeadline(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 8))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline = %v; want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("error %v is not a read OpError", err)
	}
}

func TestWriteDeadline(t *testing.T) {
	// The server never reads, so the buffers fill up: raw writes (small)
	// and ordinary ones (large) both stop at the deadline, having written
	// something first.
	for _, size := range []int{rawWriteMax - 1, 64 << 20} {
		c, _ := pair(t)
		chunk := make([]byte, size) // first: 64 MiB take a while to clear under -race
		c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		var total int
		var err error
		for range (256 << 20) / size { // at most 256 MiB
			var n int
			n, err = c.Write(chunk)
			total += n
			if err != nil {
				break
			}
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%d-byte writes past the deadline: %v; want a timeout", size, err)
		}
		if total == 0 {
			t.Errorf("%d-byte writes: nothing written before the deadline", size)
		}
	}
}

func TestPeerReset(t *testing.T) {
	c, s := pair(t)
	s.SetLinger(0)
	s.Close() // RST
	time.Sleep(10 * time.Millisecond)
	_, err := c.Read(make([]byte, 8))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after a reset = %v; want ECONNRESET", err)
	}
}

func TestWriteToClosedPeerIsAnError(t *testing.T) {
	c, s := pair(t)
	s.SetLinger(0)
	s.Close()
	time.Sleep(10 * time.Millisecond)
	var err error
	for range 3 { // the first write may still be accepted locally
		if _, err = c.Write([]byte("x")); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Write to a closed peer = %v; want EPIPE or ECONNRESET (and no SIGPIPE)", err)
	}
}

func TestConcurrentReadersAndWriters(t *testing.T) {
	c, s := pair(t)
	go io.Copy(s, s)
	const writers, each = 4, 1000
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := c.Write([]byte{'x'}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	total := make(chan int)
	for range 2 {
		go func() {
			n := 0
			b := make([]byte, 7)
			for {
				m, err := c.Read(b)
				n += m
				if err != nil {
					total <- n
					return
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(50 * time.Millisecond)
	c.SetReadDeadline(time.Now()) // stop both readers
	if got := <-total + <-total; got != writers*each {
		t.Fatalf("read %d bytes back; want %d", got, writers*each)
	}
}

func TestReadWriteWithoutAllocating(t *testing.T) {
	if !supported {
		t.Skip("raw socket I/O is Linux only")
	}
	c, s := pair(t)
	go io.Copy(s, s)
	msg, buf := []byte("ping"), make([]byte, 16)
	roundTrip := func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip()
	if n := testing.AllocsPerRun(200, roundTrip); n != 0 {
		t.Fatalf("a write and a read allocate %v times; want 0", n)
	}
	bufs := [][]byte{msg[:2], nil, msg[2:]}
	writev := func() {
		if n, err := WriteBuffers(c, bufs); n != 4 || err != nil {
			t.Fatalf("WriteBuffers = %d, %v", n, err)
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(200, writev); n != 0 {
		t.Fatalf("a writev and a read allocate %v times; want 0", n)
	}
}

func TestWriteBuffers(t *testing.T) {
	piece := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	cases := []struct {
		name string
		bufs [][]byte
	}{
		{"one", [][]byte{piece(10, 'a')}},
		{"head and body", [][]byte{piece(200, 'h'), piece(1024, 'b')}},
		{"empty ones", [][]byte{nil, piece(3, 'a'), {}, piece(5, 'b'), nil}},
		{"nothing", [][]byte{nil, {}}},
		{"chunked", [][]byte{[]byte("400\r\n"), piece(1024, 'c'), []byte("\r\n")}},
		{"more than 8", func() (b [][]byte) {
			for i := range 12 {
				b = append(b, piece(100+i, byte('a'+i)))
			}
			return
		}()},
		{"over 64 KiB", [][]byte{piece(100, 'h'), piece(200<<10, 'b')}},
		{"at 64 KiB", [][]byte{piece(1<<10, 'h'), piece(63<<10, 'b')}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t)
			want := bytes.Join(tc.bufs, nil)
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(s)
				got <- b
			}()
			n, err := WriteBuffers(c, tc.bufs)
			if err != nil || n != int64(len(want)) {
				t.Fatalf("WriteBuffers = %d, %v; want %d", n, err, len(want))
			}
			c.Close()
			if b := <-got; !bytes.Equal(b, want) {
				t.Fatalf("peer read %d bytes, not the %d written in order", len(b), len(want))
			}
		})
	}
}

func TestWritevDeadline(t *testing.T) {
	c, _ := pair(t) // the peer never reads
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	head, body := make([]byte, 100), make([]byte, 32<<10)
	var total int64
	var err error
	for range 8192 { // at most 256 MiB
		var n int64
		n, err = WriteBuffers(c, [][]byte{head, body})
		total += n
		if err != nil {
			break
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) || total == 0 {
		t.Fatalf("writev past the deadline: %d bytes, %v; want some, then a timeout", total, err)
	}
}

func TestListenerWraps(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener{Listener: inner}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			c.Write([]byte("x"))
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*Conn); ok != supported {
		t.Fatalf("accepted %T (supported=%v)", c, supported)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("read %q, %v", b, err)
	}
}
