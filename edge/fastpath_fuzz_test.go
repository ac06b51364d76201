package edge

import (
	"bufio"
	"bytes"
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
