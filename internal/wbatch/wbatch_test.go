package wbatch

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pair returns a batched client side and the plain server side of a real
// loopback TCP connection.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
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
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	w := NewConn(c)
	t.Cleanup(func() { w.Close(); peer.Close() })
	return w, peer
}

// TestOrderAndIntegrity writes framed messages of mixed sizes (some sent
// directly, most batched) from several goroutines: every message must
// arrive whole and each writer's messages in order.
func TestOrderAndIntegrity(t *testing.T) {
	w, peer := pair(t)
	const writers, perWriter = 6, 400
	var wg sync.WaitGroup
	for id := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(id), 1))
			for seq := range perWriter {
				size := r.IntN(300)
				if r.IntN(20) == 0 {
					size = directMin + r.IntN(40<<10)
				}
				msg := make([]byte, 12+size)
				binary.BigEndian.PutUint32(msg[0:], uint32(id))
				binary.BigEndian.PutUint32(msg[4:], uint32(seq))
				binary.BigEndian.PutUint32(msg[8:], uint32(size))
				for i := range size {
					msg[12+i] = byte(id*31 + seq + i)
				}
				if _, err := w.Write(msg); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	done := make(chan error, 1)
	go func() {
		br := bufio.NewReader(peer)
		next := make([]int, writers)
		hdr := make([]byte, 12)
		for n := 0; n < writers*perWriter; n++ {
			if _, err := io.ReadFull(br, hdr); err != nil {
				done <- fmt.Errorf("message %d: %w", n, err)
				return
			}
			id, seq, size := int(binary.BigEndian.Uint32(hdr)), int(binary.BigEndian.Uint32(hdr[4:])), int(binary.BigEndian.Uint32(hdr[8:]))
			if id >= writers || seq != next[id] {
				done <- fmt.Errorf("message %d: writer %d seq %d, want seq %d (interleaved or reordered)", n, id, seq, next[min(id, writers-1)])
				return
			}
			next[id]++
			body := make([]byte, size)
			if _, err := io.ReadFull(br, body); err != nil {
				done <- err
				return
			}
			for i, b := range body {
				if b != byte(id*31+seq+i) {
					done <- fmt.Errorf("writer %d seq %d: byte %d corrupted", id, seq, i)
					return
				}
			}
		}
		done <- nil
	}()
	wg.Wait()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("reader did not get every message")
	}
}

// TestCloseSendsQueued: bytes accepted by Write reach the peer even when
// Close follows at once, then the peer sees EOF.
func TestCloseSendsQueued(t *testing.T) {
	w, peer := pair(t)
	want := bytes.Repeat([]byte("queued "), 1000)
	for i := 0; i < len(want); i += 100 {
		if _, err := w.Write(want[i:min(i+100, len(want))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("peer got %d bytes, want %d", len(got), len(want))
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v, want net.ErrClosed", err)
	}
}

// TestBackpressure: with a peer that stops reading, Write blocks instead
// of buffering without bound, and resumes when the peer reads.
func TestBackpressure(t *testing.T) {
	w, peer := pair(t)
	_ = w.Conn.(*net.TCPConn).SetWriteBuffer(16 << 10)
	_ = peer.(*net.TCPConn).SetReadBuffer(16 << 10)
	var written atomic.Int64
	chunk := bytes.Repeat([]byte("b"), 1000)
	const total = 8 << 20 // far more than the 256 KiB queue plus the socket buffers
	writeDone := make(chan error, 1)
	go func() {
		for written.Load() < total {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				writeDone <- err
				return
			}
		}
		writeDone <- nil
	}()
	// Wait until the writer stalls.
	var last int64 = -1
	for i := 0; ; i++ {
		time.Sleep(100 * time.Millisecond)
		cur := written.Load()
		if cur == last {
			break
		}
		if i > 100 {
			t.Fatalf("writer never blocked: %d bytes accepted by a peer that does not read", cur)
		}
		last = cur
	}
	if last >= total {
		t.Fatalf("all %d bytes accepted by a peer that does not read", last)
	}
	// Now read everything; the writer must finish. A wider receive
	// window first: through 16 KiB windows, delayed ACKs make the copy
	// take minutes on some machines.
	_ = peer.(*net.TCPConn).SetReadBuffer(4 << 20)
	got, err := io.CopyN(io.Discard, peer, total)
	if err != nil || got != total {
		t.Fatalf("peer read %d bytes: %v", got, err)
	}
	if err := <-writeDone; err != nil {
		t.Fatal(err)
	}
}

// TestWriteErrorSurfaces: once the peer is gone, writes fail instead of
// queueing forever.
func TestWriteErrorSurfaces(t *testing.T) {
	w, peer := pair(t)
	_ = peer.(*net.TCPConn).SetLinger(0)
	peer.Close() // RST
	for i := 0; i < 10000; i++ {
		if _, err := w.Write([]byte("after reset\n")); err != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("writes to a reset connection never failed")
}

// TestCloseWithStalledPeer: Close returns even when queued bytes cannot be
// sent because the peer stopped reading.
func TestCloseWithStalledPeer(t *testing.T) {
	w, peer := pair(t)
	_ = w.Conn.(*net.TCPConn).SetWriteBuffer(16 << 10)
	_ = peer.(*net.TCPConn).SetReadBuffer(16 << 10)
	chunk := bytes.Repeat([]byte("s"), 1000)
	go func() {
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case <-closed:
	case <-time.After(closeLinger + 10*time.Second):
		t.Fatal("Close hung on a peer that does not read")
	}
}

// TestHTTP2OverTLS serves many concurrent HTTP/2 requests through a
// Listener with BatchH2: batching is on for HTTP/2 connections (off for
// an HTTP/1.1 one) and every response arrives whole.
func TestHTTP2OverTLS(t *testing.T) {
	var mu sync.Mutex
	var conns []net.Conn
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "answer to %s over %s", r.URL.Path, r.Proto)
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}
	srv.Listener = Listener(srv.Listener)
	srv.EnableHTTP2 = true
	srv.TLS = BatchH2(&tls.Config{NextProtos: []string{"h2", "http/1.1"}})
	srv.StartTLS()
	defer srv.Close()

	batched := func() (on, off int) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			if w, ok := c.(*tls.Conn).NetConn().(*Conn); ok {
				if w.off.Load() {
					off++
				} else {
					on++
				}
			}
		}
		return on, off
	}

	// HTTP/1.1 first: stays unbatched.
	h1tr := srv.Client().Transport.(*http.Transport).Clone()
	h1tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	h1tr.ForceAttemptHTTP2 = false
	h1 := &http.Client{Transport: h1tr}
	resp, err := h1.Get(srv.URL + "/one")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "answer to /one over HTTP/1.1" {
		t.Fatalf("HTTP/1.1: %q", b)
	}
	if on, off := batched(); on != 0 || off != 1 {
		t.Fatalf("after an HTTP/1.1 request: %d batched, %d not; want 0 and 1", on, off)
	}

	h2tr := srv.Client().Transport.(*http.Transport).Clone()
	h2tr.TLSClientConfig.NextProtos = []string{"h2"}
	h2tr.ForceAttemptHTTP2 = true
	c := &http.Client{Transport: h2tr}
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(fmt.Sprintf("%s/r%d", srv.URL, i))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if want := fmt.Sprintf("answer to /r%d over HTTP/2.0", i); string(b) != want {
				errs <- fmt.Errorf("request %d: %q, want %q", i, b, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if on, _ := batched(); on == 0 {
		t.Errorf("no HTTP/2 connection was batched")
	}
}
