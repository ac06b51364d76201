package origin

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
)

// scriptedOrigin answers the requests of each connection with the given
// answers in turn, each written in the given parts (a pause between
// them), and closes the connection after an answer marked close. It
// counts the connections it accepted.
func scriptedOrigin(t *testing.T, answers [][]string) (addr string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int32)
	var next atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if line == "\r\n" {
							break
						}
					}
					i := int(next.Add(1)) - 1
					if i >= len(answers) {
						return
					}
					for j, part := range answers[i] {
						if part == "<close>" {
							return
						}
						if j > 0 {
							time.Sleep(20 * time.Millisecond)
						}
						if _, err := io.WriteString(c, part); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), conns
}

// takeOK is a taker for the tests: an HTTP/1.1 200 with CRLF lines and
// one Content-Length.
func takeOK(head []byte) (int64, bool) {
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")) || bytes.Count(head, []byte("\n")) != bytes.Count(head, []byte("\r\n")) {
		return 0, false
	}
	for line := range strings.SplitSeq(string(head), "\r\n") {
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// TestSendGetRaw: answers a taker takes come back raw (head as received,
// body of the length it gave, the connection pooled once the body is
// read); the others, and heads the edge cannot see whole, come back as an
// http.Response read from the same bytes, as without a taker.
func TestSendGetRaw(t *testing.T) {
	bigHead := "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", 20000) + "\r\nContent-Length: 2\r\n\r\nok"
	cases := []struct {
		name     string
		answer   []string
		raw      bool
		status   int // for answers not taken
		body     string
		wantErr  bool // reading the body fails
		newConns int32
	}{
		{name: "taken", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: no-store\r\n\r\nhello"}, raw: true, body: "hello", newConns: 1},
		{name: "taken, reused connection", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"}, raw: true, body: "abc"},
		{name: "taken, empty body", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"}, raw: true, body: ""},
		{name: "taken, head and body in parts", answer: []string{"HTTP/1.1 200 OK\r\nConte", "nt-Length: 4\r\n\r", "\nab", "cd"}, raw: true, body: "abcd"},
		{name: "not taken: 404", answer: []string{"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"}, status: 404, body: "nope"},
		{name: "not taken: interim answer first", answer: []string{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"}, status: 200, body: "ok"},
		{name: "not taken: bare LF lines", answer: []string{"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"}, status: 200, body: "ok"},
		{name: "not taken: head larger than the buffer", answer: []string{bigHead}, status: 200, body: "ok"},
		{name: "taken, body cut short", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "<close>"}, raw: true, wantErr: true, newConns: 0},
		{name: "after a cut: a new connection", answer: []string{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"}, raw: true, body: "x", newConns: 1},
	}
	answers := make([][]string, len(cases))
	for i, c := range cases {
		answers[i] = c.answer
	}
	addr, conns := scriptedOrigin(t, answers)
	o, err := NewHTTP(HTTPOptions{Name: "o", URL: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var buf []byte
	before := conns.Load()
	for _, c := range cases {
		resp, raw, ok, err := o.SendGet(&buf, "/x", "", "h", nil, time.Now().Add(5*time.Second), takeOK)
		if !ok || err != nil {
			t.Fatalf("%s: SendGet: %v %v", c.name, ok, err)
		}
		var body io.ReadCloser
		switch {
		case raw.Taken() != c.raw:
			t.Fatalf("%s: taken %v, want %v", c.name, raw.Taken(), c.raw)
		case raw.Taken():
			if n, _ := takeOK(raw.Head); !bytes.HasSuffix(raw.Head, []byte("\r\n\r\n")) || n != int64(len(c.body)) && !c.wantErr {
				t.Errorf("%s: head %q", c.name, raw.Head)
			}
			body = raw.Body
		default:
			if resp.StatusCode != c.status {
				t.Errorf("%s: status %d, want %d", c.name, resp.StatusCode, c.status)
			}
			body = resp.Body
		}
		b, err := io.ReadAll(body)
		body.Close()
		switch {
		case c.wantErr:
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s: body error %v, want unexpected EOF", c.name, err)
			}
		case err != nil || string(b) != c.body:
			t.Errorf("%s: body %q (%v), want %q", c.name, b, err, c.body)
		}
		// The pool hands the connection back before the next request
		// (reading the body to its end released it).
		time.Sleep(5 * time.Millisecond)
		if got := conns.Load() - before; got != c.newConns {
			t.Errorf("%s: %d new connections, want %d", c.name, got, c.newConns)
		}
		before = conns.Load()
	}
}

func TestHeadEnd(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody", 25},
		{"HTTP/1.1 200 OK\r\n\r\n", 19},
		{"HTTP/1.1 200 OK\n\nbody", 17},
		{"HTTP/1.1 200 OK\r\nA: b\n\r\n", 24},
		{"HTTP/1.1 200 OK\r\nA: b\r\n\r", 0},
		{"HTTP/1.1 200 OK\r\nA: b\r\n", 0},
		{"HTTP/1.1 200 OK", 0},
		{"", 0},
	} {
		if got := headEnd([]byte(c.in)); got != c.want {
			t.Errorf("headEnd(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// TestOriginClosedWhileIdle: a pooled connection whose origin closed its
// side while it sat idle, and then answers nothing (as a stopped
// container's address does), is found closed by the next request's read
// at once; the GET goes out again on a new connection instead of waiting
// for its deadline.
func TestOriginClosedWhileIdle(t *testing.T) {
	addr := apptest.SilentAfterAnswer(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	o, err := NewHTTP(HTTPOptions{Name: "o", URL: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var buf []byte
	for i := range 2 {
		start := time.Now()
		_, raw, ok, err := o.SendGet(&buf, "/x", "", "h", nil, time.Now().Add(3*time.Second), takeOK)
		if !ok || err != nil {
			t.Fatalf("request %d: %v %v after %v", i, ok, err, time.Since(start))
		}
		b, err := io.ReadAll(raw.Body)
		raw.Body.Close()
		if err != nil || string(b) != "ok" {
			t.Fatalf("request %d: body %q, %v", i, b, err)
		}
		time.Sleep(20 * time.Millisecond) // the close arrives; the connection sits idle
	}
}
