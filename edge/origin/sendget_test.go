package origin

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// headRecorder is an origin that records each request head it reads, byte
// for byte, and answers "ok".
func headRecorder(t *testing.T) (addr string, heads <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var head strings.Builder
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					ch <- head.String()
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// TestSendGetMatchesRoundTrip: SendGet sends the same bytes as RoundTrip
// for a GET built as the edge builds its fills (for the pass relay).
func TestSendGetMatchesRoundTrip(t *testing.T) {
	addr, heads := headRecorder(t)
	for _, hostHeader := range []string{"", "viewer", "origin.example.test"} {
		for _, base := range []string{"", "/prefix", "/a/b"} {
			o, err := NewHTTP(HTTPOptions{Name: "o", URL: "http://" + addr + base, HostHeader: hostHeader})
			if err != nil {
				t.Fatal(err)
			}
			if !o.Lean() {
				t.Fatalf("base %q: not lean", base)
			}
			for _, target := range []string{"/", "/api/items", "/a(b)!*'~$&+,;=:@", "/x.json"} {
				u, err := url.ParseRequestURI(target)
				if err != nil {
					t.Fatal(err)
				}
				fields := http.Header{}
				fields.Set("X-Forwarded-For", "192.0.2.1")
				fields.Set("X-Forwarded-Proto", "http")
				fields.Set("X-Forwarded-Host", "www.example.test:8080")
				fields.Set("Via", "1.1 edged")
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				req := (&http.Request{Method: http.MethodGet, URL: u, Header: fields, Host: "www.example.test:8080",
					Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
				resp, err := o.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				cancel()
				want := <-heads

				var buf []byte
				hdr := []byte("Via: 1.1 edged\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Host: www.example.test:8080\r\nX-Forwarded-Proto: http\r\n")
				resp, _, ok, err := o.SendGet(&buf, target, "", "www.example.test:8080", hdr, time.Now().Add(5*time.Second), nil)
				if !ok || err != nil {
					t.Fatalf("SendGet: %v %v", ok, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if got := <-heads; got != want || string(b) != "ok" {
					t.Errorf("host_header %q, base %q, %s:\nSendGet   %q\nRoundTrip %q", hostHeader, base, target, got, want)
				}
			}
			o.Close()
		}
	}
	// Origins SendGet does not serve: HTTPS, a connection cap, a base
	// path that needs escaping.
	for _, o := range []HTTPOptions{
		{Name: "tls", URL: "https://" + addr},
		{Name: "capped", URL: "http://" + addr, MaxConnsPerHost: 4},
		{Name: "escaped", URL: "http://" + addr + "/a b"},
	} {
		h, err := NewHTTP(o)
		if err != nil {
			t.Fatal(err)
		}
		var buf []byte
		if _, _, ok, _ := h.SendGet(&buf, "/", "", "x", nil, time.Now().Add(time.Second), nil); ok || h.Lean() {
			t.Errorf("%s: SendGet sent", o.Name)
		}
	}
}
