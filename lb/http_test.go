package lb

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHTTPSemantics checks message framing end to end through each
// engine: bodies both ways (Content-Length, chunked, close-delimited),
// HEAD, 204/304, 100-continue, HTTP/1.0 clients, early answers, trailers.
func TestHTTPSemantics(t *testing.T) { engines(t, httpSemantics) }

func httpSemantics(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:8]) }
	target := newBackend(t, "t", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Sum", sum(b))
			w.Header().Set("X-Len", strconv.Itoa(len(b)))
			_, _ = w.Write(b)
		case "/big":
			_, _ = w.Write(big)
		case "/stream": // chunked
			for i := range 5 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
		case "/nocontent":
			w.WriteHeader(204)
		case "/notmodified":
			w.WriteHeader(304)
		case "/early": // answers without reading the body
			w.Header().Set("Connection", "close")
			w.WriteHeader(413)
		case "/trailer":
			w.Header().Set("Trailer", "X-T")
			_, _ = io.WriteString(w, "body")
			w.Header().Set("X-T", "done")
		case "/headers":
			fmt.Fprintf(w, "%s %s host=%s secret=%q", r.Method, r.RequestURI, r.Host, r.Header.Get("X-Secret"))
		default:
			_, _ = io.WriteString(w, "ok "+r.Proto)
		}
	})
	// A raw target whose responses end when it closes.
	closer := rawServer(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
	})
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: t
    targets: [{address: "`+target.addr+`"}]
    health_check: {disabled: true}
  - name: closer
    targets: [{address: "`+closer+`"}]
    health_check: {disabled: true}
listeners:
  - name: front
    listen: 127.0.0.1:0
    rules:
      - priority: 1
        conditions: {path: ["/closer"]}
        action: {forward: {target_group: closer}}
    default_action: {forward: {target_group: t}}
`)
	base := h.url("front")
	client := &http.Client{Timeout: 10 * time.Second}
	type tc struct {
		name    string
		method  string
		path    string
		body    io.Reader
		chunked bool
		code    int
		check   func(t *testing.T, resp *http.Response, body []byte)
	}
	for _, c := range []tc{
		{name: "upload 1 MiB with Content-Length", method: "POST", path: "/echo", body: bytes.NewReader(big), code: 200, check: func(t *testing.T, resp *http.Response, body []byte) {
			if resp.Header.Get("X-Sum") != sum(big) || sum(body) != sum(big) {
				t.Errorf("body changed on the way")
			}
		}},
		{name: "upload chunked", method: "POST", path: "/echo", body: io.MultiReader(strings.NewReader("abc"), strings.NewReader("def")), chunked: true, code: 200, check: func(t *testing.T, resp *http.Response, body []byte) {
			if string(body) != "abcdef" || resp.Header.Get("X-Len") != "6" {
				t.Errorf("got %q, len %s", body, resp.Header.Get("X-Len"))
			}
		}},
		{name: "download 1 MiB", method: "GET", path: "/big", code: 200, check: func(t *testing.T, resp *http.Response, body []byte) {
			if sum(body) != sum(big) {
				t.Errorf("download changed")
			}
		}},
		{name: "chunked response", method: "GET", path: "/stream", code: 200, check: func(t *testing.T, resp *http.Response, body []byte) {
			if string(body) != "part0;part1;part2;part3;part4;" {
				t.Errorf("got %q", body)
			}
		}},
		{name: "trailer", method: "GET", path: "/trailer", code: 200, check: func(t *testing.T, resp *http.Response, body []byte) {
			if string(body) != "body" || resp.Trailer.Get("X-T") != "done" {
				t.Errorf("body %q trailer %v", body, resp.Trailer)
			}
		}},
		{name: "head", method: "HEAD", path: "/big", code: 200, check: func(t *testing.T, resp *http.Response, body []byte) {
			if len(body) != 0 {
				t.Errorf("HEAD: body %d bytes", len(body))
			}
		}},
		{name: "204", method: "GET", path: "/nocontent", code: 204},
		{name: "304", method: "GET", path: "/notmodified", code: 304},
		{name: "close-delimited response", method: "GET", path: "/closer", code: 200, check: func(t *testing.T, resp *http.Response, body []byte) {
			if string(body) != "until close" {
				t.Errorf("got %q", body)
			}
		}},
		{name: "early answer to a large upload", method: "POST", path: "/early", body: bytes.NewReader(big), code: 413},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, base+c.path, c.body)
			if c.chunked {
				req.ContentLength = -1
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.code {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, c.code)
			}
			if c.check != nil {
				c.check(t, resp, body)
			}
		})
	}
	raw := func(t *testing.T, req string) string {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(conn, req)
		b, _ := io.ReadAll(conn)
		return string(b)
	}
	t.Run("HTTP/1.0 client", func(t *testing.T) {
		out := raw(t, "GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.") || !strings.Contains(out, "200") || !strings.HasSuffix(out, "ok HTTP/1.1") {
			t.Errorf("got %q", out)
		}
	})
	t.Run("HTTP/1.0 client, chunked response", func(t *testing.T) {
		out := raw(t, "GET /stream HTTP/1.0\r\nHost: a\r\n\r\n")
		if !strings.HasSuffix(out, "part0;part1;part2;part3;part4;") || strings.Contains(strings.ToLower(out), "transfer-encoding") {
			t.Errorf("got %q", out)
		}
	})
	t.Run("absolute-form URI, Connection-listed header", func(t *testing.T) {
		out := raw(t, "GET http://abs.test/headers?a=1 HTTP/1.1\r\nHost: other.test\r\nX-Secret: s\r\nConnection: close, X-Secret\r\n\r\n")
		if !strings.HasSuffix(out, `GET /headers?a=1 host=abs.test secret=""`) {
			t.Errorf("got %q", out)
		}
	})
	t.Run("20 KiB header line", func(t *testing.T) {
		out := raw(t, "GET /x HTTP/1.1\r\nHost: a\r\nX-Long: "+strings.Repeat("v", 20<<10)+"\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 200") {
			t.Errorf("got %.200q", out)
		}
	})
	t.Run("head over max_header_bytes", func(t *testing.T) {
		out := raw(t, "GET /x HTTP/1.1\r\nHost: a\r\nX-Long: "+strings.Repeat("v", 70<<10)+"\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 431") {
			t.Errorf("got %.200q", out)
		}
	})
	t.Run("two Host headers", func(t *testing.T) {
		out := raw(t, "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 400") {
			t.Errorf("got %q", out)
		}
	})
	t.Run("100-continue", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(conn, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
		br := bufio.NewReader(conn)
		line, _ := br.ReadString('\n')
		if !strings.Contains(line, "100") {
			t.Fatalf("first line %q, want 100 Continue", line)
		}
		_, _ = io.WriteString(conn, "hello")
		b, _ := io.ReadAll(br)
		if !strings.Contains(string(b), "200 OK") || !strings.HasSuffix(string(b), "hello") {
			t.Errorf("after continue: %q", b)
		}
	})
}

// TestStaleKeepAlive: a target that closes idle connections sooner than
// lbd does must not make uploads fail.
func TestStaleKeepAlive(t *testing.T) { engines(t, staleKeepAlive) }

func staleKeepAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{IdleTimeout: 100 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: t
    targets: [{address: "`+ln.Addr().String()+`"}]
    health_check: {disabled: true}
listeners:
  - name: front
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: t}}
`)
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 3 {
		resp, err := client.Post(h.url("front")+"/", "text/plain", strings.NewReader(fmt.Sprint("upload ", i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fmt.Sprint("upload ", i) {
			t.Fatalf("upload %d: %d %q", i, resp.StatusCode, b)
		}
		time.Sleep(300 * time.Millisecond) // the target closes the idle connection
	}
}
