package edge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestFastPathMatchesHandler: a hit answered by the fast path carries the
// same status, headers and body as one answered by the full handler.
func TestFastPathMatchesHandler(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"e1"`)
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		fmt.Fprint(w, "<html>body</html>")
	})
	te := startEdge(t, oneOrigin(o, "      response_headers: {X-Extra: yes}\n"), nil)
	te.get("/p")
	te.wait()
	fast := te.get("/p")                               // fast path
	full := te.get("/p", "X-Forwarded-Proto: http")    // still fast: unknown headers are harmless
	slow := te.get("/p", "If-None-Match: \"nomatch\"") // full handler (conditional)
	for _, r := range []resp{fast, full, slow} {
		if r.code != 200 || r.body != "<html>body</html>" || r.xcache() != "Hit" {
			t.Fatalf("%d %q %q", r.code, r.body, r.xcache())
		}
	}
	for _, k := range []string{"Cache-Control", "Etag", "Content-Type", "Content-Length", "X-Extra", "Date", "Age"} {
		if fast.header.Get(k) != slow.header.Get(k) {
			t.Errorf("%s: fast %q, full handler %q", k, fast.header.Get(k), slow.header.Get(k))
		}
	}
	if strings.Join(fast.header.Values("X-Multi"), ",") != "a,b" {
		t.Errorf("X-Multi %q", fast.header.Values("X-Multi"))
	}
}

// TestFastPathPipelining sends hits, a miss and a conditional request on
// one connection in one write: answers come back in order (the miss and
// the conditional request are served in place through the full handler).
func TestFastPathPipelining(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"`+r.URL.Path+`"`)
		fmt.Fprint(w, "body of ", r.URL.Path)
	})
	te := startEdge(t, oneOrigin(o, ""), nil)
	te.get("/a")
	te.wait()
	c, err := net.Dial("tcp", strings.TrimPrefix(te.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	reqs := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
		"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /b HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /a HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"/a\"\r\n\r\n" +
		"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, reqs); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	type want struct {
		method string
		code   int
		body   string
		xc     string
	}
	for i, w := range []want{
		{"GET", 200, "body of /a", "Hit"},
		{"HEAD", 200, "", "Hit"},
		{"GET", 200, "body of /b", "Miss"},
		{"GET", 304, "", "Hit"},
		{"GET", 200, "body of /a", "Hit"},
	} {
		res, err := http.ReadResponse(br, &http.Request{Method: w.method})
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != w.code || string(body) != w.body || !strings.HasPrefix(res.Header.Get("X-Cache"), w.xc) {
			t.Errorf("response %d: %d %q %q, want %d %q %s", i, res.StatusCode, body, res.Header.Get("X-Cache"), w.code, w.body, w.xc)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("connection not closed after Connection: close: %v", err)
	}
}

// TestFastPathRequestDuringRequest: requests that arrive while the one
// before them is at a slow origin (after its read found the socket empty)
// are answered, whichever path served the one before: a body-less miss
// (the read loop), a POST (the inline path with a body), a hit.
func TestFastPathRequestDuringRequest(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow") {
			time.Sleep(50 * time.Millisecond)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "body of ", r.URL.Path)
	})
	te := startEdge(t, oneOrigin(o, "      allowed_methods: [GET, HEAD, OPTIONS, PUT, POST, PATCH, DELETE]\n"), nil)
	te.get("/hit")
	te.wait()
	rc := dialRaw(t, te)
	steps := []struct{ req, method, body string }{
		{"GET /slow1 HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "body of /slow1"},
		{"POST /slow2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", "POST", "body of /slow2"},
		{"GET /hit HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "body of /hit"},
		{"GET /slow3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "GET", "body of /slow3"},
	}
	for _, st := range steps {
		if _, err := io.WriteString(rc.c, st.req); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Millisecond) // the one before is at the origin now
	}
	for i, st := range steps {
		res, err := http.ReadResponse(rc.br, &http.Request{Method: st.method})
		if err != nil {
			t.Fatalf("response %d: %v (a request was left waiting)", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != st.body {
			t.Errorf("response %d: %d %q, want 200 %q", i, res.StatusCode, body, st.body)
		}
	}
}

// TestFastPathPipelinedPastTheBuffer: pipelined requests that the
// request guard has taken from the socket but the 4 KiB reader has not
// yet seen are answered without waiting for more bytes: here the second
// read (one short recvfrom) completes one request and brings two more,
// the reader's buffer ends exactly after the third, and the fourth stays
// with the guard.
func TestFastPathPipelinedPastTheBuffer(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "body of ", r.URL.Path)
	})
	te := startEdge(t, oneOrigin(o, ""), nil)
	te.get("/a")
	te.wait()
	req := func(pad int) string {
		return "GET /a HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", pad) + "\r\n\r\n"
	}
	base := len(req(0))
	req2, req3 := req(2000-base), req(4096-2000-base)
	if len(req2)+len(req3) != 4096 {
		t.Fatalf("requests of %d bytes, want 4096", len(req2)+len(req3))
	}
	rc := dialRaw(t, te)
	io.WriteString(rc.c, req(10)+req2[:1000])
	time.Sleep(30 * time.Millisecond) // the first is answered, the edge waits
	io.WriteString(rc.c, req2[1000:]+req3+"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	for i := range 4 {
		res, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("response %d: %v (a request was left waiting)", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != "body of /a" {
			t.Fatalf("response %d: %d %q", i, res.StatusCode, body)
		}
	}
}

func TestFastPathConnectionClose(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "x")
	})
	te := startEdge(t, oneOrigin(o, ""), nil)
	te.get("/a")
	te.wait()
	c, err := net.Dial("tcp", strings.TrimPrefix(te.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	all, _ := io.ReadAll(c)
	if n := strings.Count(string(all), "HTTP/1.1 200"); n != 1 || !strings.Contains(string(all), "Connection: close") {
		t.Errorf("%d responses:\n%s", n, all)
	}
}

// TestFastPathShutdown: idle keep-alive connections are closed promptly on
// shutdown; the host match is the same as the full handler's.
func TestFastPathShutdownAndHostCase(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "dist www")
	})
	other := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "catch-all")
	})
	te := startEdge(t, fmt.Sprintf(`distributions:
  - name: www
    domains: [www.example.test]
    origins: [{name: o, url: "%s"}]
    default_behavior: {origin: o}
  - name: any
    domains: ["*"]
    origins: [{name: o, url: "%s"}]
    default_behavior: {origin: o}
`, o.URL, other.URL), nil)
	for range 2 {
		if r := te.get("/x", "Host: WWW.Example.Test"); r.body != "dist www" {
			t.Errorf("upper-case host: %q", r.body)
		}
		if r := te.get("/x", "Host: www.example.test:80"); r.body != "dist www" {
			t.Errorf("host with port: %q", r.body)
		}
		if r := te.get("/x", "Host: elsewhere.test"); r.body != "catch-all" {
			t.Errorf("other host: %q", r.body)
		}
		te.wait()
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(te.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
	br := bufio.NewReader(c)
	if res, err := http.ReadResponse(br, nil); err != nil || res.Header.Get("X-Cache") != "Hit from edged" {
		t.Fatalf("%v %v", res, err)
	} else {
		io.Copy(io.Discard, res.Body)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := te.svc.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Error("idle connection still open")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
}
