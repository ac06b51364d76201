package httpguard

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/httpguard/guardtest"
)

// guardedServer serves h behind the guard on loopback.
func guardedServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Wrap(h, Options{}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(NewListener(ln, Options{})) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func send(t *testing.T, addr string, raw []byte) (int, string) {
	t.Helper()
	code, body, err := guardtest.Send(addr, raw)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// TestListenerVectors replays every desync vector against a real server
// behind the guard: refused ones get 400 and never reach the handler;
// the others reach it.
func TestListenerVectors(t *testing.T) {
	vectors, err := guardtest.Load()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	addr := guardedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("X-Vector")] = true
		mu.Unlock()
		w.Header().Set("Connection", "close")
		w.WriteHeader(204)
	}))
	for i, v := range vectors {
		id := strings.Repeat("v", 1) + string(rune('a'+i%26)) + itoa(i)
		head := v.Head("example.test")
		// Tag the request so the handler can tell which one reached it.
		head = []byte(strings.Replace(string(head), "\r\n", "\r\nX-Vector: "+id+"\r\n", 1))
		code, body := send(t, addr, head)
		mu.Lock()
		reached := seen[id]
		mu.Unlock()
		if v.Refuse() {
			if code != 400 || reached {
				t.Errorf("%s: status %d (%q), reached handler %v; want 400 and not forwarded", v, code, body, reached)
			}
			continue
		}
		if code == 501 && codingsBeyondChunked(v) {
			// net/http refuses transfer codings other than a lone
			// "chunked" with 501: not forwarded, and said so.
			continue
		}
		if code != 204 || !reached {
			t.Errorf("%s: status %d (%q), reached handler %v; want forwarded", v, code, body, reached)
		}
	}
}

func codingsBeyondChunked(v guardtest.Vector) bool {
	n := 0
	for _, h := range v.Headers {
		if strings.EqualFold(h.Name, "Transfer-Encoding") {
			n++
			if strings.TrimSpace(h.Value) != "chunked" {
				return true
			}
		}
	}
	return n > 1
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// TestListenerKeepAlive checks bodies and pipelined requests on one
// connection: Content-Length and chunked bodies reach the handler intact,
// and a smuggled request after a bad chunk never does.
func TestListenerKeepAlive(t *testing.T) {
	var n atomic.Int32
	addr := guardedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		n.Add(1)
		_, _ = io.WriteString(w, r.URL.Path+":"+string(b))
	}))
	type tc struct {
		name   string
		raw    string
		bodies []string // expected response bodies, in order
		calls  int32
	}
	for _, c := range []tc{
		{name: "pipelined", raw: "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer-A: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			bodies: []string{"/a:hello", "/b:abcde", "/c:"}, calls: 3},
		{name: "smuggled after CL.TE", raw: "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
			bodies: nil, calls: 0},
		{name: "bad chunk size", raw: "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
			bodies: nil, calls: 0},
		// The guard stops checking after an upgrade request, so one not
		// switched ends the connection (Wrap adds Connection: close).
		{name: "request after an upgrade not switched", raw: "GET /a HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
			bodies: []string{"/a:"}, calls: 1},
		{name: "second request bad", raw: "GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
			bodies: []string{"/ok:"}, calls: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			n.Store(0)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(conn, c.raw); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			for i, want := range c.bodies {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != want {
					t.Errorf("response %d: %q, want %q", i, b, want)
				}
			}
			// Whatever follows is a refusal or the end of the connection.
			if resp, err := http.ReadResponse(br, nil); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode < 400 {
					t.Errorf("extra response %d %q", resp.StatusCode, b)
				}
			}
			if got := n.Load(); got != c.calls {
				t.Errorf("handler completed %d requests, want %d", got, c.calls)
			}
		})
	}
}

func TestForgedMarker(t *testing.T) {
	addr := guardedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	code, _ := send(t, addr, []byte("GET / HTTP/1.1\r\nHost: x\r\n"+markerHeader+": 00 status=200\r\n\r\n"))
	if code != 400 {
		t.Fatalf("forged marker: %d, want 400", code)
	}
}
