package edge

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	"github.com/prometheus/client_golang/prometheus"
)

// bufConn is a net.Conn that records writes.
type bufConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *bufConn) Write(p []byte) (int, error)     { return c.out.Write(p) }
func (c *bufConn) RemoteAddr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *bufConn) SetReadDeadline(time.Time) error { return nil }

// FuzzFastPathHead feeds arbitrary request heads to the fast path: it must
// never panic, and may answer only a GET or HEAD for the stored object
// (everything else is left to net/http).
func FuzzFastPathHead(f *testing.F) {
	for _, s := range []string{
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"GET /a?q=1 HTTP/1.1\r\nhost: x\r\nUser-Agent: u\r\nReferer: r\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n",
		"GET /a HTTP/1.0\r\n\r\n",
		"GET  /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"GET /%2e%2e HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add(s)
	}
	d := &dist{name: "d"}
	b := compileBehavior(d, &Behavior{})
	d.def = b
	for i := range d.counters {
		d.counters[i] = prometheus.NewCounter(prometheus.CounterOpts{Name: "c"})
	}
	d.bytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "b"})
	store, err := cache.New(cache.Options{MaxBytes: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	defer store.Close()
	hdr := http.Header{"Content-Type": {"text/plain"}, "Date": {"Thu, 26 Nov 2026 00:00:00 GMT"}}
	e := &cache.Entry{Status: 200, Header: hdr, Body: []byte("hello"), ResponseTime: time.Now(), Fresh: time.Hour,
		ContentLength: []string{"5"}, Wire: cache.WireHeader(hdr, "5"), Seq: store.Seq()}
	store.Set("d\x00/a", e)
	store.Wait()
	h := &Handler{store: store}
	h.snap.Store(&snapshot{exact: map[string]*dist{}, any: d, dists: []*dist{d}, maxURL: 8192})
	fs := &fastServer{h: h}
	f.Fuzz(func(t *testing.T, head string) {
		if !strings.HasSuffix(head, "\r\n\r\n") || strings.Count(head, "\r\n\r\n") != 1 || len(head) > 4096 {
			return
		}
		br := bufio.NewReaderSize(strings.NewReader(head), 4096)
		peeked, _ := br.Peek(len(head))
		c := &bufConn{}
		scratch := make([]byte, 0, 64)
		served, _ := fs.serveHit(c, peeked, br, &scratch, &connCtx{raw: c})
		if !served {
			if c.out.Len() != 0 {
				t.Fatalf("wrote without serving: %q", c.out.String())
			}
			return
		}
		if !strings.HasPrefix(head, "GET ") && !strings.HasPrefix(head, "HEAD ") {
			t.Fatalf("served a non-GET/HEAD: %q", head)
		}
		if !strings.HasPrefix(c.out.String(), "HTTP/1.1 200 OK\r\n") || !strings.Contains(c.out.String(), "X-Cache: Hit from edged\r\n") {
			t.Fatalf("bad response %q for %q", c.out.String(), head)
		}
		resp, err := http.ReadResponse(bufio.NewReader(&c.out), nil)
		if err != nil {
			t.Fatalf("unparsable response for %q: %v", head, err)
		}
		resp.Body.Close()
	})
}

// FuzzFastPathConn sends any bytes, in two writes with a pause between
// them, to a real edged listener (the read loop, the guard, the hit and
// inline paths, net/http for the rest) and half-closes: the connection
// must end (no request left waiting for bytes that were sent), and a
// request answered in the first part must not be answered twice.
func FuzzFastPathConn(f *testing.F) {
	for _, s := range []string{
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.0\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	} {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	o := newOrigin(f, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("body"))
	})
	te := startEdge(f, oneOrigin(o, "      allowed_methods: [GET, HEAD, OPTIONS, PUT, POST, PATCH, DELETE]\n"), nil)
	te.get("/a")
	te.wait()
	addr := strings.TrimPrefix(te.base, "http://")
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		if len(in) > 16<<10 {
			return
		}
		cut := min(int(split), len(in))
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			_, _ = c.Write(in[:cut])
			time.Sleep(2 * time.Millisecond)
			_, _ = c.Write(in[cut:])
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		_, err = io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the connection did not end within 10 s (%d bytes, cut at %d): %q", len(in), cut, in)
		}
	})
}
