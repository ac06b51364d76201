package lb

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/edgestack/edgestack/internal/apptest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestH2RequestLineInjection: HTTP/2 requests whose pseudo-header fields
// would inject into the HTTP/1.1 request line or Host that lbd writes to
// its target ("HTTP/2: The Sequel is Always Worse") are refused, with
// either HTTP/2 server, and the target never gets them.
func TestH2RequestLineInjection(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	target := rawServer(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			head := ""
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == "\r\n" {
					break
				}
				head += l
			}
			mu.Lock()
			lines = append(lines, head)
			mu.Unlock()
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	dir := t.TempDir()
	cert, key, _ := writeCert(t, dir, "one", "one.test")
	for _, server := range []string{"edgestack", "net/http"} {
		t.Run(strings.ReplaceAll(server, "/", "_"), func(t *testing.T) {
			listen := "127.0.0.1:" + render(t, `{{port "secure"}}`, nil)
			startLB(t, httpsConfig(listen, "{server: "+server+"}", target, [2]string{cert, key}))
			for _, c := range []struct {
				name   string
				fields []string
				ok     bool
			}{
				{"plain", []string{":method", "GET", ":scheme", "https", ":authority", "one.test", ":path", "/fine"}, true},
				{"method with a request line", []string{":method", "GET /admin HTTP/1.1", ":scheme", "https", ":authority", "one.test", ":path", "/"}, false},
				{"method not a token", []string{":method", "G(T", ":scheme", "https", ":authority", "one.test", ":path", "/"}, false},
				{"authority with a space", []string{":method", "GET", ":scheme", "https", ":authority", "one.test evil", ":path", "/"}, false},
			} {
				mu.Lock()
				lines = nil
				mu.Unlock()
				status := h2Raw(t, listen, c.fields...)
				mu.Lock()
				got := lines
				mu.Unlock()
				if c.ok != (status == 200) || c.ok != (len(got) == 1) {
					t.Errorf("%s: status %d (0: reset), target got %q; want it forwarded: %v", c.name, status, got, c.ok)
				}
			}
		})
	}
}

// h2Raw sends one request made of fields over a new HTTP/2 connection to
// addr, written frame by frame (clients refuse to send malformed ones),
// and returns the response's status, 0 when the stream was reset.
func h2Raw(t *testing.T, addr string, fields ...string) int {
	t.Helper()
	fr := apptest.H2Dial(t, addr, "one.test")
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				n, _ := strconv.Atoi(f.PseudoValue("status"))
				return n
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return 0
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v", f.ErrCode)
		}
	}
}
