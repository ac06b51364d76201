package edge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/httpguard/guardtest"
)

func rawSend(t *testing.T, base string, raw string) (int, string) {
	t.Helper()
	code, body, err := guardtest.Send(strings.TrimPrefix(base, "http://"), []byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// TestDesyncVectors replays the request-smuggling vectors against edged's
// front end: every refused one gets 400 and makes no origin request.
func TestDesyncVectors(t *testing.T) {
	vectors, err := guardtest.Load()
	if err != nil {
		t.Fatal(err)
	}
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, "origin")
	})
	te := startEdge(t, oneOrigin(o, "      allowed_methods: [GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS]\n"), nil)
	refused := 0
	for _, v := range vectors {
		if !v.Refuse() {
			continue
		}
		refused++
		before := o.total.Load()
		code, body := rawSend(t, te.base, string(v.Head("example.test")))
		if code != 400 {
			t.Errorf("%s: %d %q, want 400", v, code, body)
		}
		if o.total.Load() != before {
			t.Errorf("%s: reached the origin", v)
		}
	}
	if refused == 0 {
		t.Fatal("no refused vectors loaded")
	}
	t.Logf("%d smuggling vectors refused with 400, none reached the origin", refused)
}

func TestMalformedRequests(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "origin") })
	te := startEdge(t, "limits:\n  max_url_length: 100\n  max_header_bytes: 4KiB\n"+oneOrigin(o, ""), nil)
	for _, c := range []struct {
		name, raw string
		code      int
	}{
		{"garbage", "HELLO\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"long url", "GET /" + strings.Repeat("a", 200) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
		{"huge header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 8000) + "\r\n\r\n", 431},
		{"nul in header", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400},
		{"cl and te", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	} {
		code, body := rawSend(t, te.base, c.raw)
		if code != c.code {
			t.Errorf("%s: %d %q, want %d", c.name, code, body, c.code)
		}
	}
	if n := o.total.Load(); n != 0 {
		t.Errorf("origin saw %d requests", n)
	}
}

// TestBadOrigins: hanging, resetting and garbage-speaking origins give
// 502/504 promptly, never a stuck connection.
func TestBadOrigins(t *testing.T) {
	readHead := func(c net.Conn) { _, _ = http.ReadRequest(bufio.NewReader(c)) }
	for _, c := range []struct {
		name string
		f    func(c net.Conn)
		code int
	}{
		{"hang before headers", func(c net.Conn) { readHead(c) }, 504},
		{"reset", func(c net.Conn) {
			readHead(c)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}, 502},
		{"garbage", func(c net.Conn) { readHead(c); io.WriteString(c, "SSH-2.0-OpenSSH\r\n\r\n") }, 502},
		{"hang mid-body", func(c net.Conn) {
			readHead(c)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
		}, 504},
		{"short body then close", func(c net.Conn) {
			readHead(c)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
			c.Close()
		}, 502},
		{"bad content-length", func(c net.Conn) {
			readHead(c)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n")
		}, 502},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := serveRaw(t, c.f)
			te := startEdge(t, fmt.Sprintf(`distributions:
  - name: d
    domains: ["*"]
    origins:
      - {name: o, url: "%s", response_timeout: 300ms, read_timeout: 500ms}
    default_behavior: {origin: o}
`, addr), nil)
			start := time.Now()
			r := te.get("/x")
			if r.code != c.code {
				t.Errorf("%d %q, want %d", r.code, r.body, c.code)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestBodyLimitAndStaleOnHang(t *testing.T) {
	var hang atomicInt
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			_, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, "short", 400)
				return
			}
			fmt.Fprint(w, "posted")
			return
		}
		if hang.get() > 0 {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		w.Header().Set("Cache-Control", "max-age=1")
		fmt.Fprint(w, "fresh")
	})
	te := startEdge(t, "limits: {max_body_size: 1KiB}\n"+fmt.Sprintf(`distributions:
  - name: d
    domains: ["*"]
    origins: [{name: o, url: "%s", response_timeout: 300ms}]
    default_behavior:
      origin: o
      grace: 1h
      allowed_methods: [GET, HEAD, POST]
`, o.URL), nil)
	req, _ := http.NewRequest("POST", te.base+"/p", strings.NewReader(strings.Repeat("x", 4096)))
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 413 {
		t.Errorf("oversized body: %d", res.StatusCode)
	}
	req, _ = http.NewRequest("POST", te.base+"/p", strings.NewReader("small"))
	if res, err = client.Do(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("small body: %v %v", res, err)
	}
	res.Body.Close()
	te.get("/s")
	te.wait()
	time.Sleep(1100 * time.Millisecond)
	hang.add()
	start := time.Now()
	r := te.get("/s")
	if r.code != 200 || r.body != "fresh" || r.xcache() != "Stale" {
		t.Errorf("hanging origin: %d %q %q, want the stale copy", r.code, r.body, r.xcache())
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
}
