package edge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
)

// streamBody is a test object of n pseudo-random bytes (so a misplaced
// part cannot pass for the right one).
func streamBody(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// slowOrigin sends /big's first part, then waits for release before the
// rest; with cut set, it closes the connection instead of sending the
// rest on its first request. /short is the first part alone.
type slowOrigin struct {
	*testOrigin
	body    []byte
	first   int
	release chan struct{}
	cut     bool
	chunked bool // no Content-Length: the body's length is unknown (set before the first request)
	sent    sync.Once
	reached chan struct{} // closed once the first part is sent
}

func newSlowOrigin(t *testing.T, body []byte, ctype string, first int, cut bool) *slowOrigin {
	so := &slowOrigin{body: body, first: first, release: make(chan struct{}), cut: cut, reached: make(chan struct{})}
	var n int
	var mu sync.Mutex
	so.testOrigin = newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		nth := n
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("ETag", `"big"`)
		if !so.chunked {
			w.Header().Set("Content-Length", strconv.Itoa(len(so.body)))
		}
		if r.URL.Path == "/short" {
			w.Write(so.body[:so.first]) // the first part alone, in one go
			return
		}
		w.Write(so.body[:so.first])
		w.(http.Flusher).Flush()
		if nth == 1 {
			so.sent.Do(func() { close(so.reached) })
			select {
			case <-so.release:
			case <-r.Context().Done():
				return
			}
			if so.cut {
				c, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					c.Close()
				}
				return
			}
		}
		w.Write(so.body[so.first:])
	})
	return so
}

// viewer is one way a viewer reaches the edge.
type viewer struct {
	name   string
	client *http.Client
	base   string
	proto  string
}

// streamViewers starts an edge in front of o for each viewer protocol.
func streamViewers(t *testing.T, o *slowOrigin, behavior string) []func() (*testEdge, viewer) {
	return []func() (*testEdge, viewer){
		func() (*testEdge, viewer) {
			te := startEdge(t, oneOrigin(o.testOrigin, behavior), nil)
			return te, viewer{"HTTP/1.1", client, te.base, "HTTP/1.1"}
		},
		func() (*testEdge, viewer) {
			dir := t.TempDir()
			c, k := writeCert(t, dir, "a", "a.example.test")
			bh := ""
			if behavior != "" {
				bh = behavior[len("      "):] // "      compress: true\n" → one flow field
				bh = bh[:len(bh)-1]
			}
			te := startEdge(t, httpsEdgeConfig(c, k, o.URL, bh), nil)
			tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "a.example.test", InsecureSkipVerify: true}, ForceAttemptHTTP2: true, DisableCompression: true}
			t.Cleanup(tr.CloseIdleConnections)
			return te, viewer{"HTTP/2", &http.Client{Transport: tr, Timeout: 20 * time.Second}, "https://" + te.svc.Addrs()[0].String(), "HTTP/2.0"}
		},
	}
}

// eachViewer runs test once per viewer protocol, against an edge in
// front of a slow origin of its own (newSlowOrigin).
func eachViewer(t *testing.T, size, first int, cut bool, test func(t *testing.T, te *testEdge, v viewer, o *slowOrigin)) {
	for i := range 2 {
		o := newSlowOrigin(t, streamBody(size), "application/octet-stream", first, cut)
		te, v := streamViewers(t, o, "")[i]()
		t.Run(v.name, func(t *testing.T) { test(t, te, v, o) })
	}
}

// openLeader sends the GET of o's /big that starts its fill and checks
// that it is a miss with the head's length want (-1: none), and that the
// origin's first part comes within 10 s; the rest of the body is unread.
func (v viewer) openLeader(t *testing.T, o *slowOrigin, want int64) *http.Response {
	t.Helper()
	leader := v.openStream(t, "/big")
	if leader.ContentLength != want || leader.Header.Get("X-Cache") != "Miss from edged" {
		leader.Body.Close()
		t.Fatalf("leader: length %d, X-Cache %q; want %d and a miss", leader.ContentLength, leader.Header.Get("X-Cache"), want)
	}
	if got := readWithin(t, leader.Body, o.first, 10*time.Second); !bytes.Equal(got, o.body[:o.first]) {
		leader.Body.Close()
		t.Fatal("leader: the first part differs from the origin's")
	}
	return leader
}

// openStream sends GET path and returns the response with its body
// unread.
func (v viewer) openStream(t *testing.T, path string, hdrs ...string) *http.Response {
	t.Helper()
	resp, err := v.get(path, hdrs...)
	if err != nil {
		t.Fatalf("%s GET %s: %v", v.name, path, err)
	}
	if resp.Proto != v.proto {
		t.Fatalf("%s GET %s: answered over %s", v.name, path, resp.Proto)
	}
	return resp
}

// readWithin reads n bytes of r, failing the test if they do not come
// within d (while the origin holds back the rest of the object).
func readWithin(t *testing.T, r io.Reader, n int, d time.Duration) []byte {
	t.Helper()
	type got struct {
		b   []byte
		err error
	}
	ch := make(chan got, 1)
	go func() {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		ch <- got{b, err}
	}()
	select {
	case g := <-ch:
		if g.err != nil {
			t.Fatalf("reading the first %d bytes: %v", n, g.err)
		}
		return g.b
	case <-time.After(d):
		t.Fatalf("the first %d bytes did not come while the origin held back the rest: the miss was not streamed", n)
		return nil
	}
}

// get sends GET path with the header fields hdrs (name, value, ...).
func (v viewer) get(path string, hdrs ...string) (*http.Response, error) {
	req, _ := http.NewRequest("GET", v.base+path, nil)
	for i := 0; i+1 < len(hdrs); i += 2 {
		req.Header.Set(hdrs[i], hdrs[i+1])
	}
	return v.client.Do(req)
}

// openLater sends GET path in the background; the response comes on the
// channel with its body unread (nil if the request failed).
func (v viewer) openLater(t *testing.T, path string, hdrs ...string) <-chan *http.Response {
	ch := make(chan *http.Response, 1)
	go func() {
		resp, err := v.get(path, hdrs...)
		if err != nil {
			t.Errorf("%s GET %s: %v", v.name, path, err)
			resp = nil
		}
		ch <- resp
	}()
	return ch
}

// expectRest reads the rest of r and checks that it is want.
func expectRest(t *testing.T, name string, r io.Reader, want []byte) {
	t.Helper()
	if rest, err := io.ReadAll(r); err != nil || !bytes.Equal(rest, want) {
		t.Errorf("%s: rest of the body: %d bytes, err %v, equal %v", name, len(rest), err, bytes.Equal(rest, want))
	}
}

// TestStreamedMiss: a large cacheable miss reaches the leader, a request
// that joins the fill while it is arriving, and requests for one range
// as the origin sends it; a viewer that needs the whole object (two
// ranges) waits for it; one origin request serves them all and the
// object is stored whole.
func TestStreamedMiss(t *testing.T) {
	const size, first = 900 << 10, 128 << 10
	eachViewer(t, size, first, false, func(t *testing.T, te *testEdge, v viewer, o *slowOrigin) {
		leader := v.openLeader(t, o, size)
		defer leader.Body.Close()
		joiner := v.openStream(t, "/big")
		defer joiner.Body.Close()
		if got := readWithin(t, joiner.Body, first, 10*time.Second); !bytes.Equal(got, o.body[:first]) {
			t.Fatal("joiner: the first part differs from the origin's")
		}
		// Ranges stream too: one within what has arrived is answered at
		// once; one beyond it gets its head now and its bytes as they
		// come. Several ranges wait for the whole object.
		near := v.openStream(t, "/big", "Range", "bytes=1000-1999")
		if want := fmt.Sprintf("bytes 1000-1999/%d", size); near.StatusCode != http.StatusPartialContent || near.Header.Get("Content-Range") != want || near.ContentLength != 1000 {
			t.Errorf("range within the first part: %d, Content-Range %q, length %d", near.StatusCode, near.Header.Get("Content-Range"), near.ContentLength)
		}
		if got := readWithin(t, near.Body, 1000, 10*time.Second); !bytes.Equal(got, o.body[1000:2000]) {
			t.Error("range within the first part: wrong bytes")
		}
		near.Body.Close()
		far := v.openStream(t, "/big", "Range", "bytes=500000-500009")
		defer far.Body.Close()
		if far.StatusCode != http.StatusPartialContent || far.ContentLength != 10 {
			t.Errorf("range beyond the first part: %d, length %d", far.StatusCode, far.ContentLength)
		}
		multi := v.openLater(t, "/big", "Range", "bytes=0-0,500000-500000")
		select {
		case r := <-multi:
			t.Fatalf("a request for two ranges was answered before the object was whole: %v", r.Status)
		case <-time.After(100 * time.Millisecond):
		}
		close(o.release)
		for name, r := range map[string]*http.Response{"leader": leader, "joiner": joiner} {
			expectRest(t, name, r.Body, o.body[first:])
		}
		if b, err := io.ReadAll(far.Body); err != nil || !bytes.Equal(b, o.body[500000:500010]) {
			t.Errorf("range beyond the first part: %q, err %v", b, err)
		}
		if r := <-multi; r != nil {
			r.Body.Close()
			if r.StatusCode != http.StatusPartialContent || !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/byteranges") {
				t.Errorf("two ranges: %d %q", r.StatusCode, r.Header.Get("Content-Type"))
			}
		}
		v.afterFill(t, te, o, "Hit", 1)
	})
}

// afterFill waits for the fill of /big to end, then checks that the next
// GET gets the whole object with X-Cache xcache, and that the origin has
// had want requests for it in all.
func (v viewer) afterFill(t *testing.T, te *testEdge, o *slowOrigin, xcache string, want int) {
	t.Helper()
	waitStored(t, te, "/big")
	r := v.openStream(t, "/big")
	b, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil || !bytes.Equal(b, o.body) || r.Header.Get("X-Cache") != xcache+" from edged" {
		t.Errorf("after the fill: X-Cache %q, %d bytes, err %v; want %s and the whole object", r.Header.Get("X-Cache"), len(b), err, xcache)
	}
	if got := o.count("/big"); got != want {
		t.Errorf("origin requests: %d, want %d", got, want)
	}
}

// waitStored waits until no fill is in flight: a streamed fill stores
// its entry in the background once the body is complete, and is
// forgotten once the Set is applied.
func waitStored(t *testing.T, te *testEdge, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		te.wait()
		te.svc.h.mu.Lock()
		n := len(te.svc.h.flight)
		te.svc.h.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fill of %s never ended", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStreamedMissTruncated: an origin that closes the connection part
// way through a streamed body makes the viewers' responses end in an
// error, not a clean short end, and nothing is stored: the next request
// fetches again and gets the whole object.
func TestStreamedMissTruncated(t *testing.T) {
	const size, first = 600 << 10, 100 << 10
	eachViewer(t, size, first, true, func(t *testing.T, te *testEdge, v viewer, o *slowOrigin) {
		r := v.openStream(t, "/big")
		defer r.Body.Close()
		readWithin(t, r.Body, first, 10*time.Second)
		close(o.release)
		rest, err := io.ReadAll(r.Body)
		if err == nil {
			t.Fatalf("a truncated body ended cleanly after %d more bytes", len(rest))
		}
		v.afterFill(t, te, o, "Miss", 2)
	})
}

// TestStreamedMissViewerLeaves: the leader leaving part way does not end
// the fill; the object is stored whole for the next viewer. Of a known
// length and of an unknown one.
func TestStreamedMissViewerLeaves(t *testing.T) {
	const size, first = 700 << 10, 128 << 10
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("unknown length %v", chunked), func(t *testing.T) {
			o := newSlowOrigin(t, streamBody(size), "application/octet-stream", first, false)
			o.chunked = chunked
			te, v := streamViewers(t, o, "")[0]()
			r := v.openStream(t, "/big")
			readWithin(t, r.Body, 64<<10, 10*time.Second)
			r.Body.Close() // HTTP/1.1: the connection goes
			close(o.release)
			v.afterFill(t, te, o, "Hit", 1)
		})
	}
}

// TestStreamedUnknownLength: a cacheable answer of unknown length (no
// Content-Length) is streamed to the leader as it arrives, with no length
// in the head; a request that joins the fill waits for the whole object
// and gets it with its length; one origin request serves both, and the
// object is stored whole with its length.
func TestStreamedUnknownLength(t *testing.T) {
	const size, first = 600 << 10, 128 << 10
	eachViewer(t, size, first, false, func(t *testing.T, te *testEdge, v viewer, o *slowOrigin) {
		o.chunked = true
		leader := v.openLeader(t, o, -1) // no length yet
		defer leader.Body.Close()
		joined := v.openLater(t, "/big")
		select {
		case r := <-joined:
			t.Fatalf("a joiner was answered before the object of unknown length was whole: %v", r.Status)
		case <-time.After(100 * time.Millisecond):
		}
		close(o.release)
		expectRest(t, "leader", leader.Body, o.body[first:])
		if r := <-joined; r != nil {
			if r.ContentLength != size {
				t.Errorf("joiner: length %d, want %d", r.ContentLength, size)
			}
			expectRest(t, "joiner", r.Body, o.body)
			r.Body.Close()
		}
		v.afterFill(t, te, o, "Hit", 1)
		if r := v.openStream(t, "/big"); r.ContentLength != size {
			t.Errorf("stored object: length %d, want %d", r.ContentLength, size)
		} else {
			r.Body.Close()
		}
	})
}

// TestStreamedUnknownLengthEarlyFlush: an origin that flushes the first
// bytes of a body of unknown length (a page's head, flushed early) and
// takes its time over the rest has those bytes reach the viewer at once,
// not after 64 KiB nor after the whole body; the object is stored with
// its length. A short body that has ended with its first bytes is sent
// with its length at once.
func TestStreamedUnknownLengthEarlyFlush(t *testing.T) {
	const size, first = 40 << 10, 3 << 10 // 3 KiB: more than net/http buffers before it chunks
	eachViewer(t, size, first, false, func(t *testing.T, te *testEdge, v viewer, o *slowOrigin) {
		o.chunked = true
		leader := v.openStream(t, "/big")
		defer leader.Body.Close()
		if got := readWithin(t, leader.Body, first, 10*time.Second); !bytes.Equal(got, o.body[:first]) {
			t.Fatal("the first bytes differ from the origin's")
		}
		close(o.release)
		expectRest(t, "leader", leader.Body, o.body[first:])
		v.afterFill(t, te, o, "Hit", 1)
		if r := v.openStream(t, "/big"); r.ContentLength != size {
			t.Errorf("stored object: length %d, want %d", r.ContentLength, size)
		} else {
			r.Body.Close()
		}
		r := v.openStream(t, "/short") // the origin's first request was /big: /short is sent whole
		defer r.Body.Close()
		if r.ContentLength != first || r.Header.Get("X-Cache") != "Miss from edged" {
			t.Errorf("short body of unknown length: length %d, X-Cache %q; want %d and a miss", r.ContentLength, r.Header.Get("X-Cache"), first)
		}
	})
}

// TestStreamedShortKnownLength: a body shorter than streamFillMin whose
// origin sends the first bytes and takes its time over the rest is
// streamed, with its length, from those bytes on, not held back until it
// is whole; then stored.
func TestStreamedShortKnownLength(t *testing.T) {
	const size, first = 40 << 10, 3 << 10
	eachViewer(t, size, first, false, func(t *testing.T, te *testEdge, v viewer, o *slowOrigin) {
		leader := v.openLeader(t, o, size)
		defer leader.Body.Close()
		close(o.release)
		expectRest(t, "leader", leader.Body, o.body[first:])
		v.afterFill(t, te, o, "Hit", 1)
	})
}

// TestUnknownLengthReadWhileItComes: a body of unknown length whose
// bytes keep coming (here all in the origin's socket at once) is read
// whole and sent with its length, not streamed without one, also when a
// read of the origin's connection ends where a chunk does (its first
// chunk ends the edge's 16 KiB connection buffer: the body reader then
// returns what it has rather than wait for the next chunk's header);
// each of a hundred misses.
func TestUnknownLengthReadWhileItComes(t *testing.T) {
	body := streamBody(40 << 10)
	var resp bytes.Buffer
	resp.WriteString("HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
	first := 16<<10 - resp.Len() - len("3f00\r\n") - len("\r\n") // head, first chunk: 16 KiB
	fmt.Fprintf(&resp, "%x\r\n%s\r\n", first, body[:first])
	if resp.Len() != 16<<10 {
		t.Fatalf("head and first chunk: %d bytes", resp.Len())
	}
	for off := first; off < len(body); off += 1000 {
		part := body[off:min(off+1000, len(body))]
		fmt.Fprintf(&resp, "%x\r\n%s\r\n", len(part), part)
	}
	resp.WriteString("0\r\n\r\n")
	addr := serveRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if _, err := c.Write(resp.Bytes()); err != nil { // one write: every chunk there at once
				return
			}
		}
	})
	te := startEdge(t, fmt.Sprintf("distributions:\n  - name: d\n    domains: [\"*\"]\n    origins:\n      - {name: o, url: \"http://%s\"}\n    default_behavior: {origin: o}\n", addr), nil)
	for i := range 100 {
		r, err := client.Get(fmt.Sprintf("%s/p%d", te.base, i))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil || !bytes.Equal(got, body) || r.ContentLength != int64(len(body)) || r.Header.Get("X-Cache") != "Miss from edged" {
			t.Fatalf("miss %d: %v, %d bytes, length %d, X-Cache %q; want the %d-byte body with its length", i, err, len(got), r.ContentLength, r.Header.Get("X-Cache"), len(body))
		}
	}
}

// TestStreamedUnknownLengthTruncated: an origin that closes the
// connection part way through a body of unknown length cuts the leader's
// response off with an error, and nothing is stored.
func TestStreamedUnknownLengthTruncated(t *testing.T) {
	const size, first = 600 << 10, 100 << 10
	eachViewer(t, size, first, true, func(t *testing.T, te *testEdge, v viewer, o *slowOrigin) {
		o.chunked = true
		r := v.openStream(t, "/big")
		defer r.Body.Close()
		readWithin(t, r.Body, first, 10*time.Second)
		close(o.release)
		if rest, err := io.ReadAll(r.Body); err == nil {
			t.Fatalf("a truncated body ended cleanly after %d more bytes", len(rest))
		}
		v.afterFill(t, te, o, "Miss", 2)
	})
}

// TestStreamedUnknownLengthTooLarge: a body of unknown length that goes
// past cache.max_object_size while it is streamed still reaches its
// leader whole (the edge relays the rest instead of keeping it); a
// request that had joined the fill fetches on its own, and the object
// is not stored: the next request passes through to the origin too.
func TestStreamedUnknownLengthTooLarge(t *testing.T) {
	const size, first = 700 << 10, 128 << 10
	o := newSlowOrigin(t, streamBody(size), "application/octet-stream", first, false)
	o.chunked = true
	te := startEdge(t, "listeners:\n  - address: 127.0.0.1:0\ncache:\n  max_size: 64MiB\n  max_object_size: 256KiB\n"+oneOrigin(o.testOrigin, ""), nil)
	v := viewer{"HTTP/1.1", client, te.base, "HTTP/1.1"}
	leader := v.openStream(t, "/big")
	defer leader.Body.Close()
	if got := readWithin(t, leader.Body, first, 10*time.Second); !bytes.Equal(got, o.body[:first]) {
		t.Fatal("leader: the first part differs from the origin's")
	}
	joined := v.openLater(t, "/big")
	time.Sleep(50 * time.Millisecond) // let it join the fill
	close(o.release)
	expectRest(t, "leader", leader.Body, o.body[first:])
	if r := <-joined; r != nil {
		expectRest(t, "joiner", r.Body, o.body)
		r.Body.Close()
	}
	if got := o.count("/big"); got != 2 {
		t.Errorf("origin requests for the leader and the joiner: %d, want 2 (the joiner fetches on its own once the object is too large)", got)
	}
	waitStored(t, te, "/big")
	r := te.get("/big")
	if r.body != string(o.body) || r.xcache() == "Hit" {
		t.Errorf("after: X-Cache %q, %d bytes; want the whole object from the origin", r.xcache(), len(r.body))
	}
	if got := o.count("/big"); got != 3 {
		t.Errorf("origin requests in all: %d, want 3 (too large to store)", got)
	}
}

// TestStreamedMissCompressedWaits: with compression on, a viewer taking
// gzip waits for the whole object and gets it compressed; one taking
// identity is streamed.
func TestStreamedMissCompressedWaits(t *testing.T) {
	const size, first = 300 << 10, 64 << 10
	text := bytes.Repeat([]byte("compressible text "), size/18+1)[:size]
	o := newSlowOrigin(t, text, "text/plain", first, false)
	_, v := streamViewers(t, o, "      compress: true\n")[0]()
	gz := v.openLater(t, "/big", "Accept-Encoding", "gzip")
	<-o.reached
	select {
	case r := <-gz:
		t.Fatalf("the gzip viewer was answered before the object was whole: %v", r.Status)
	case <-time.After(100 * time.Millisecond):
	}
	id := v.openStream(t, "/big")
	defer id.Body.Close()
	if id.Header.Get("Content-Encoding") != "" {
		t.Fatalf("identity viewer got %q", id.Header.Get("Content-Encoding"))
	}
	readWithin(t, id.Body, first, 10*time.Second)
	close(o.release)
	expectRest(t, "identity viewer", id.Body, text[first:])
	r := <-gz
	if r == nil {
		return
	}
	defer r.Body.Close()
	if r.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip viewer: Content-Encoding %q", r.Header.Get("Content-Encoding"))
	}
	b, err := io.ReadAll(r.Body)
	if err != nil || len(b) >= size {
		t.Errorf("gzip viewer: %d bytes, err %v", len(b), err)
	}
	if got := o.count("/big"); got != 1 {
		t.Errorf("origin requests: %d, want 1", got)
	}
}

// TestStreamedErrorPage: a custom error page large enough to be streamed
// when fetched is served whole, not as far as it had arrived.
func TestStreamedErrorPage(t *testing.T) {
	page := streamBody(200 << 10)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/404.html":
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Content-Length", strconv.Itoa(len(page)))
			w.Write(page[:64<<10])
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
			w.Write(page[64<<10:])
		default:
			http.Error(w, "ugly", http.StatusNotFound)
		}
	})
	te := startEdge(t, oneOrigin(o, "      error_responses:\n        - {status: 404, page: /404.html, response_code: 404}\n"), nil)
	r := te.get("/missing")
	if r.code != http.StatusNotFound || r.body != string(page) {
		t.Errorf("error page: %d, %d bytes, whole page %v", r.code, len(r.body), r.body == string(page))
	}
}

// handOverFill is a growing body read from a pipe, with its ends and
// goroutine starts recorded.
type handOverFill struct {
	*growing
	pw      *io.PipeWriter
	endsMu  sync.Mutex
	ends    []error
	spawned chan int
}

func newHandOverFill(size int) *handOverFill {
	pr, pw := io.Pipe()
	f := &handOverFill{growing: newGrowing(make([]byte, size), 0), pw: pw, spawned: make(chan int, 4)}
	f.src = pr
	f.end = func(err error) {
		f.endsMu.Lock()
		f.ends = append(f.ends, err)
		f.endsMu.Unlock()
		close(f.finished)
	}
	f.later = func(fn func()) { go fn() }
	f.spawn = func(n int) {
		f.spawned <- n
		go func() {
			for ended := false; !ended; {
				n, ended = f.readPart(n, false)
			}
		}()
	}
	return f
}

// check waits for the fill to end and checks that it ended once,
// complete, with one goroutine of its own started, at from (none when
// from is negative).
func (f *handOverFill) check(t *testing.T, body []byte, from int) {
	t.Helper()
	if err := f.wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.body, body) {
		t.Error("the filled body differs from the origin's")
	}
	f.background() // late viewers start nothing more
	if from >= 0 {
		if got := <-f.spawned; got != from {
			t.Errorf("the fill's goroutine started at %d, want %d", got, from)
		}
	}
	f.endsMu.Lock()
	defer f.endsMu.Unlock()
	if len(f.ends) != 1 || f.ends[0] != nil || len(f.spawned) != 0 {
		t.Errorf("the fill ended %d times (%v), extra goroutines %d", len(f.ends), f.ends, len(f.spawned))
	}
}

// TestGrowingHandOver: the leader's goroutine reads the origin until
// another viewer wants the body; the fill's own goroutine then reads on
// from where the leader stopped: at once if the leader is between reads
// (sending), after its read if it is in one. The fill ends once.
func TestGrowingHandOver(t *testing.T) {
	body := streamBody(4 * growChunk)
	t.Run("alone", func(t *testing.T) {
		f := newHandOverFill(len(body))
		go f.pw.Write(body)
		f.lead()
		parts := 0
		for leading := true; leading; parts++ {
			var err error
			if _, err, leading = f.leadPart(); err != nil {
				t.Fatal(err)
			}
		}
		if parts != 4 {
			t.Errorf("the leader read %d parts, want 4", parts)
		}
		f.check(t, body, -1)
	})
	t.Run("between reads", func(t *testing.T) {
		f := newHandOverFill(len(body))
		go f.pw.Write(body)
		if !f.lead() {
			t.Fatal("the leader could not claim the reading of a fill nobody reads")
		}
		n, err, leading := f.leadPart()
		if err != nil || !leading || n != growChunk {
			t.Fatalf("the leader's first part: n %d, err %v, leading %v", n, err, leading)
		}
		if f.lead() {
			t.Error("a second leader claimed the reading")
		}
		f.background() // a joiner comes while the leader sends its part
		// The fill's own goroutine may have read on already: n2 is at
		// least where the leader stopped (check sees where it started).
		if n2, err, leading := f.leadPart(); err != nil || leading || n2 < n {
			t.Errorf("after a joiner came: n %d, err %v, leading %v; want the reading taken over at %d", n2, err, leading, n)
		}
		f.check(t, body, growChunk)
	})
	t.Run("in a read", func(t *testing.T) {
		f := newHandOverFill(len(body))
		f.lead()
		type part struct {
			n       int
			err     error
			leading bool
		}
		got := make(chan part, 1)
		go func() {
			n, err, leading := f.leadPart()
			got <- part{n, err, leading}
		}()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			f.mu.Lock()
			reading := f.reading
			f.mu.Unlock()
			if reading {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the leader never started its read")
			}
		}
		f.background() // a joiner comes while the leader waits for the origin
		select {
		case n := <-f.spawned:
			t.Fatalf("the fill's goroutine started at %d during the leader's read", n)
		default:
		}
		go f.pw.Write(body)
		if p := <-got; p.err != nil || p.leading || p.n != growChunk {
			t.Errorf("the leader's read: %+v, want the reading handed over after %d bytes", p, growChunk)
		}
		f.check(t, body, growChunk)
	})
}

// pieceReader returns b in pieces of pseudo-random sizes up to max, as an
// origin's body arrives, then io.EOF.
type pieceReader struct {
	b   []byte
	r   *rand.Rand
	max int
}

func (p *pieceReader) Read(buf []byte) (int, error) {
	if len(p.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(buf), len(p.b), 1+p.r.IntN(p.max))
	copy(buf, p.b[:n])
	p.b = p.b[n:]
	return n, nil
}

// TestGrowingUnknownLength drives the fill of bodies of unknown length
// around the limit, the leader reading and sending (copying) each part as
// serveGrowing does, leaving part way or not, while a joiner waits: the
// leader gets every byte in order whether or not the body is too large
// to keep, the joiner gets the whole body or errTooLarge, the fill ends
// once and marks the key too large once when it is.
func TestGrowingUnknownLength(t *testing.T) {
	const limit = 300 << 10
	tests := []struct {
		size, leaveAt int // leaveAt < 0: the leader stays to the end
	}{
		{100 << 10, -1},
		{limit, -1},
		{limit + 1, -1},
		{limit + 70000, -1},
		{3 * limit, -1},
		{200 << 10, 100 << 10},
		{3 * limit, 100 << 10},
		{3 * limit, limit + 100000},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("size %d leave at %d", tt.size, tt.leaveAt), func(t *testing.T) {
			body := streamBody(tt.size)
			head := bytes.Clone(body[:streamFillMin])
			g := newGrowingUnknown(head, len(head), limit)
			g.src = &pieceReader{b: body[streamFillMin:], r: rand.New(rand.NewPCG(uint64(i), 7)), max: 100 << 10}
			var mu sync.Mutex
			var ends []error
			marked := 0
			g.overLimit = func() {
				mu.Lock()
				marked++
				mu.Unlock()
			}
			g.end = func(err error) {
				mu.Lock()
				ends = append(ends, err)
				mu.Unlock()
				g.mu.Lock()
				relay, n := g.relay, g.n
				g.mu.Unlock()
				if relay {
					return // finished was closed when it went past the limit
				}
				if err == nil {
					g.complete(&cache.Entry{}, n, false, nil)
				}
				close(g.finished)
			}
			g.later = func(fn func()) { go fn() }
			g.spawn = func(n int) {
				go func() {
					for ended := false; !ended; {
						n, ended = g.readPart(n, false)
					}
				}()
			}
			joined := make(chan error, 1)
			go func() { joined <- g.wait(t.Context()) }()

			if !g.lead() {
				t.Fatal("the leader could not claim the reading of its unknown length")
			}
			got := bytes.Clone(head)
			pos, left := len(head), false
			for {
				if to := g.total(); to >= 0 && pos >= to {
					break
				}
				if tt.leaveAt >= 0 && pos >= tt.leaveAt {
					g.leave()
					left = true
					break
				}
				n, err, _ := g.leadPart()
				if err != nil {
					t.Fatalf("leader at %d: %v", pos, err)
				}
				if n <= pos && g.total() < 0 {
					t.Fatalf("leader at %d: a read that ended nothing brought nothing", pos)
				}
				got = append(got, g.bytes(pos, n)...)
				pos = n
			}
			if !left && !bytes.Equal(got, body) {
				t.Errorf("the leader got %d bytes, equal %v; want all %d in order", len(got), bytes.Equal(got, body), len(body))
			}
			if left && !bytes.Equal(got, body[:len(got)]) {
				t.Errorf("the leader's %d bytes before it left differ from the origin's", len(got))
			}
			tooLarge := tt.size > limit
			var err error
			select {
			case err = <-joined:
			case <-time.After(10 * time.Second):
				t.Fatal("the joiner is still waiting for a fill that has ended")
			}
			switch {
			case tooLarge && err != errTooLarge:
				t.Errorf("joiner: %v, want errTooLarge", err)
			case !tooLarge && err != nil:
				t.Errorf("joiner: %v", err)
			case !tooLarge:
				if e := g.entry(nil); e == nil || !bytes.Equal(e.Body, body) || e.ContentLength[0] != strconv.Itoa(tt.size) {
					t.Error("joiner: the stored entry is not the whole body with its length")
				}
			}
			// The fill ends once; a relay (or the fill's own goroutine at
			// the limit) ends too, without closing finished again.
			deadline := time.Now().Add(5 * time.Second)
			for {
				mu.Lock()
				n := len(ends)
				mu.Unlock()
				if n > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(10 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			if len(ends) != 1 {
				t.Errorf("the fill ended %d times: %v", len(ends), ends)
			}
			if want := map[bool]int{false: 0, true: 1}[tooLarge]; marked != want {
				t.Errorf("marked too large %d times, want %d", marked, want)
			}
		})
	}
}
