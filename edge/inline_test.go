package edge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rawConn is a keep-alive HTTP/1.1 connection to the edge that sends
// requests as written and reads each response whole.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, te *testEdge) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(te.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

type rawResp struct {
	code   int
	header http.Header
	body   string
	close  bool
	head   string // the raw head, for field order
}

func (rc *rawConn) do(method, target string, fields ...string) rawResp {
	rc.t.Helper()
	req := method + " " + target + " HTTP/1.1\r\nHost: x\r\n" + strings.Join(fields, "\r\n")
	if len(fields) > 0 {
		req += "\r\n"
	}
	if _, err := io.WriteString(rc.c, req+"\r\n"); err != nil {
		rc.t.Fatal(err)
	}
	var head strings.Builder
	for {
		line, err := rc.br.ReadString('\n')
		if err != nil {
			rc.t.Fatalf("%s %s: %v", method, target, err)
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	// The body is read before the next request is sent, so this reader
	// cannot take bytes of a later response.
	res, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(head.String()), rc.br)), &http.Request{Method: method})
	if err != nil {
		rc.t.Fatalf("%s %s: %v", method, target, err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		rc.t.Fatalf("%s %s: body: %v", method, target, err)
	}
	return rawResp{code: res.StatusCode, header: res.Header, body: string(body), close: res.Close, head: head.String()}
}

// send writes raw (a whole request, body included) and reads one
// response.
func (rc *rawConn) send(raw string) (code int, body string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, raw); err != nil {
		rc.t.Fatal(err)
	}
	res, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		rc.t.Fatalf("%.30q: %v", raw, err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res.StatusCode, string(b)
}

// TestInlineMatchesNetHTTP: requests the hit path does not answer are
// served in place on the fast server's connection, with the same status,
// fields and body as net/http's server gives them (a request is sent to
// net/http by adding a framing field, Content-Length: 0, which keeps it
// away from the fast server).
func TestInlineMatchesNetHTTP(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/private"):
			w.Header().Set("Cache-Control", "private")
			fmt.Fprint(w, "private ", r.URL.Path)
		case strings.HasPrefix(r.URL.Path, "/nostore"):
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
		case strings.HasPrefix(r.URL.Path, "/redirect"):
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/empty"):
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNoContent)
		case strings.HasPrefix(r.URL.Path, "/large"):
			w.Header().Set("Cache-Control", "max-age=60")
			io.WriteString(w, strings.Repeat("L", 2<<20)) // above max_object_size: streamed
		case strings.HasPrefix(r.URL.Path, "/chunked"):
			w.Header().Set("Cache-Control", "no-store")
			w.(http.Flusher).Flush()
			io.WriteString(w, strings.Repeat("c", 100<<10)) // no length from the origin
		default:
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
			fmt.Fprint(w, "cached body of ", r.URL.Path)
		}
	})
	te := startEdge(t, oneOrigin(o, "      response_headers: {X-Added: yes}\n"), nil)
	te.get("/cached")
	te.wait()
	inline, full := dialRaw(t, te), dialRaw(t, te)
	for _, c := range []struct {
		name, method, target string
		fields               []string
		code                 int
		body                 string
	}{
		{"miss", "GET", "/miss", nil, 200, "cached body of /miss-viaB"},
		{"private", "GET", "/private", nil, 200, "private /private"},
		{"no-store", "GET", "/nostore", nil, 200, `{"path":"/nostore"}`},
		{"HEAD of a pass", "HEAD", "/nostore", nil, 200, ""},
		{"origin redirect", "GET", "/redirect", nil, 302, "<a href=\"/elsewhere\">Found</a>.\n\n"},
		{"204", "GET", "/empty", nil, 204, ""},
		{"conditional", "GET", "/cached", []string{`If-None-Match: "v1"`}, 304, ""},
		{"conditional, no match", "GET", "/cached", []string{`If-None-Match: "v0"`}, 200, "cached body of /cached"},
		{"range", "GET", "/cached", []string{"Range: bytes=7-10"}, 206, "body"},
		{"field outside the key", "GET", "/", []string{"X-Ignored: 1"}, 200, "cached body of /"},
		{"too large to cache", "GET", "/large", nil, 200, strings.Repeat("L", 2<<20)},
		{"origin without length", "GET", "/chunked", nil, 200, strings.Repeat("c", 100<<10)},
		{"HEAD of too large", "HEAD", "/large", nil, 200, ""},
	} {
		// Twice through net/http first, so both ways see the same cache
		// state (a cacheable response is a hit by then, a too-large one
		// a pass); a miss needs paths of its own.
		full.do(c.method, c.target, append(slices.Clone(c.fields), "Content-Length: 0")...)
		te.wait() // the cache applies a store asynchronously
		want := full.do(c.method, c.target, append(slices.Clone(c.fields), "Content-Length: 0")...)
		got := inline.do(c.method, c.target, c.fields...)
		if c.name == "miss" {
			want = full.do(c.method, c.target+"-viaA", append(slices.Clone(c.fields), "Content-Length: 0")...)
			got = inline.do(c.method, c.target+"-viaB", c.fields...)
			want.body = strings.Replace(want.body, "-viaA", "-viaB", 1)
		}
		if got.code != c.code || got.body != c.body {
			t.Errorf("%s: inline %d %.40q, want %d %.40q", c.name, got.code, got.body, c.code, c.body)
		}
		if got.code != want.code || got.body != want.body {
			t.Errorf("%s: inline %d %.40q, net/http %d %.40q", c.name, got.code, got.body, want.code, want.body)
		}
		for _, k := range []string{"Content-Type", "Content-Length", "Transfer-Encoding", "Cache-Control", "Etag", "Last-Modified",
			"Location", "Content-Range", "Accept-Ranges", "X-Cache", "X-Added", "Vary"} {
			if g, w := strings.Join(got.header[k], ","), strings.Join(want.header[k], ","); g != w {
				t.Errorf("%s: %s inline %q, net/http %q", c.name, k, g, w)
			}
		}
		if got.header.Get("Date") == "" {
			t.Errorf("%s: no Date", c.name)
		}
		if got.close {
			t.Errorf("%s: connection closed", c.name)
		}
	}
}

// TestInlineKeepsConnection: after a miss served in place, the next hit
// on the same connection comes from the hit path (its fixed field order:
// Age after the stored fields), and requests with a body or a protocol
// switch still go to net/http, which keeps the connection from then on.
func TestInlineKeepsConnection(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "text/plain")
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})
	te := startEdge(t, oneOrigin(o, "      allowed_methods: [GET, HEAD, OPTIONS, PUT, POST, PATCH, DELETE]\n"), nil)
	c := dialRaw(t, te)
	// The hit path writes the stored fields first, then Age; net/http and
	// the in-place writer sort them.
	hitPath := func(r rawResp) bool {
		return strings.Index(r.head, "\r\nAge:") > strings.Index(r.head, "\r\nContent-Type:")
	}
	if r := c.do("GET", "/a"); r.code != 200 || r.header.Get("X-Cache") != "Miss from edged" {
		t.Fatalf("miss: %d %q", r.code, r.header.Get("X-Cache"))
	}
	te.wait()
	if r := c.do("GET", "/a"); r.code != 200 || r.header.Get("X-Cache") != "Hit from edged" || r.body != "GET /a " {
		t.Fatalf("hit: %d %q %q", r.code, r.header.Get("X-Cache"), r.body)
	} else if !hitPath(r) {
		t.Errorf("the hit after an in-place miss did not come from the hit path:\n%s", r.head)
	}
	// A body of a declared length: served in place too, and the
	// connection stays.
	if code, body := c.send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\ndata"); code != 200 || body != "POST /a data" {
		t.Errorf("POST: %d %q", code, body)
	}
	c.do("GET", "/a") // the POST invalidated it: a miss
	te.wait()
	if r := c.do("GET", "/a"); r.code != 200 || r.body != "GET /a " || r.header.Get("X-Cache") != "Hit from edged" {
		t.Errorf("after POST: %d %q %q", r.code, r.body, r.header.Get("X-Cache"))
	} else if !hitPath(r) {
		t.Errorf("the hit after a POST served in place did not come from the hit path:\n%s", r.head)
	}
	// A chunked body: net/http serves it and the rest of the connection.
	if code, body := c.send("PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nmore\r\n0\r\n\r\n"); code != 200 || body != "PUT /a more" {
		t.Errorf("chunked PUT: %d %q", code, body)
	}
	c.do("GET", "/a")
	te.wait()
	if r := c.do("GET", "/a"); r.code != 200 || r.body != "GET /a " || r.header.Get("X-Cache") != "Hit from edged" {
		t.Errorf("after PUT: %d %q %q", r.code, r.body, r.header.Get("X-Cache"))
	} else if hitPath(r) {
		t.Errorf("the fast server answered on a handed-over connection:\n%s", r.head)
	}
}

// TestInlineBodies: requests with a body of a declared length are served
// in place: the origin gets the body; a body the handler leaves unread is
// dropped when small (the connection stays) and closes the connection
// when large; a slow body meets the read timeout.
func TestInlineBodies(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d", r.Method, len(b))
	})
	te := startEdge(t, "limits: {max_body_size: 64KiB}\ntimeouts: {read: 500ms}\n"+
		oneOrigin(o, "      allowed_methods: [GET, HEAD, OPTIONS, PUT, POST, PATCH, DELETE]\n"), nil)
	c := dialRaw(t, te)
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		if code, got := c.send(m + " /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("b", 1000)); code != 200 || got != m+" 1000" {
			t.Errorf("%s: %d %q", m, code, got)
		}
	}
	// The same as net/http's answer (a chunked body goes to net/http).
	c3 := dialRaw(t, te)
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		wantCode, wantBody := c3.send(m + " /y HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
		code, got := c.send(m + " /y HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
		if code != wantCode || got != wantBody || got != m+" 3" {
			t.Errorf("%s: in place %d %q, net/http %d %q", m, code, got, wantCode, wantBody)
		}
	}
	// Over max_body_size: 413 without reading it. 100 KiB is dropped and
	// the connection kept...
	if code, _ := c.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 102400\r\n\r\n" + strings.Repeat("x", 100<<10)); code != 413 {
		t.Errorf("100 KiB over the limit: %d", code)
	}
	if code, got := c.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"); code != 200 || got != "POST 2" {
		t.Errorf("after a dropped body: %d %q", code, got)
	}
	// ...1 MiB is not: the connection closes after the 413.
	big := bytes.Repeat([]byte("y"), 1<<20)
	go c.c.Write(append([]byte("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"), big...))
	res, err := http.ReadResponse(c.br, nil)
	if err != nil || res.StatusCode != 413 {
		t.Fatalf("1 MiB over the limit: %v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	// Closed: an end of stream, or a reset for the unread bytes.
	if _, err := io.Copy(io.Discard, c.br); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after 1 MiB left unread: %v, want the connection closed", err)
	}
	// A body that stops arriving: the read timeout ends it.
	c2 := dialRaw(t, te)
	io.WriteString(c2.c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
	c2.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	all, _ := io.ReadAll(c2.c)
	if time.Since(start) > 4*time.Second {
		t.Errorf("a stalled body held the connection %v: %q", time.Since(start), all)
	}
}

// TestInlineBadRequests: heads the fast server reads but net/http's checks
// refuse are refused the same way in place: 400 and the connection closed.
func TestInlineBadRequests(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	te := startEdge(t, oneOrigin(o, ""), nil)
	for _, head := range []string{
		"GET / HTTP/1.1\r\n\r\n",                       // no Host
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", // two
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",          // malformed
		"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",        // bad target
	} {
		c := dialRaw(t, te)
		before := o.total.Load()
		io.WriteString(c.c, head)
		all, _ := io.ReadAll(c.c)
		if !strings.HasPrefix(string(all), "HTTP/1.1 400 ") {
			t.Errorf("%q: %.60q, want a 400 and close", head, all)
		}
		if o.total.Load() != before {
			t.Errorf("%q reached the origin", head)
		}
	}
}

// FuzzInlineHead feeds arbitrary request heads to the in-place path: it
// must never panic; a head it takes must reach the handler with one Host,
// as a GET or HEAD with no body or another method with a body of a
// declared length (never chunked), and the answer written must be one
// well-formed HTTP/1.1 response (a 400 for heads http.ReadRequest
// refuses).
func FuzzInlineHead(f *testing.F) {
	for _, s := range []string{
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"GET /a?q=1 HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"e\"\r\nRange: bytes=0-1\r\n\r\n",
		"GET /big HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n X: folded\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n",
		"DELETE /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
	} {
		f.Add(s)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An empty Host is accepted, as net/http's server accepts it.
		bodyless := r.Method == "GET" || r.Method == "HEAD"
		if r.Header["Host"] != nil || (bodyless && r.Body != http.NoBody) || (!bodyless && (r.ContentLength < 0 || r.Header["Transfer-Encoding"] != nil)) {
			panic(fmt.Sprintf("handler got %s %q host %q body %T length %d", r.Method, r.RequestURI, r.Host, r.Body, r.ContentLength))
		}
		n := len(r.URL.Path) * 1000 // small bodies buffered, long paths chunked
		if r.URL.Path == "/big" {
			n = 200 << 10
		}
		w.Header().Set("X-Path", r.URL.EscapedPath()) // a decoded path may hold bytes no field value may (NUL)
		io.WriteString(w, strings.Repeat("b", n))
	})
	fs := &fastServer{h: &Handler{log: slog.New(slog.DiscardHandler)}, full: handler}
	f.Fuzz(func(t *testing.T, head string) {
		if !strings.HasSuffix(head, "\r\n\r\n") || strings.Count(head, "\r\n\r\n") != 1 || len(head) > 4096 || !inlineable([]byte(head)) {
			return
		}
		br := bufio.NewReaderSize(strings.NewReader(head), 4096)
		c := &bufConn{}
		fs.serveInline(c, br, &inlineConn{remote: "127.0.0.1:1"}, nil)
		method := strings.SplitN(head, " ", 2)[0]
		resp, err := http.ReadResponse(bufio.NewReader(&c.out), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("unparsable response for %q: %v\n%q", head, err, c.out.String())
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatalf("bad body for %q: %v", head, err)
		}
		resp.Body.Close()
		if c.out.Len() != 0 {
			t.Fatalf("%d bytes after the response for %q", c.out.Len(), head)
		}
		if resp.StatusCode != 200 && resp.StatusCode != 400 {
			t.Fatalf("status %d for %q", resp.StatusCode, head)
		}
	})
}

// TestInlineShutdownClosesAfterResponse: a request served in place while
// the edge shuts down gets its whole response, marked Connection: close,
// and Shutdown waits for it.
func TestInlineShutdownClosesAfterResponse(t *testing.T) {
	started := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, "slow answer")
	})
	te := startEdge(t, oneOrigin(o, ""), nil)
	c := dialRaw(t, te)
	io.WriteString(c.c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- te.svc.Shutdown(ctx)
	}()
	res, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("in-flight request lost on shutdown: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if string(body) != "slow answer" || !res.Close {
		t.Errorf("%q, Connection: close %v", body, res.Close)
	}
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}
