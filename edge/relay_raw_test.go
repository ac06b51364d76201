package edge

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// rawRelayBehavior is a behavior as the raw relay meets them: added
// response headers, with or without compression.
func rawRelayBehavior(compress bool) *behavior {
	d := &dist{name: "d"}
	for i := range d.counters {
		d.counters[i] = prometheus.NewCounter(prometheus.CounterOpts{Name: "c"})
	}
	d.bytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "b"})
	b := compileBehavior(d, &Behavior{Compress: compress, ResponseHeaders: map[string]string{"X-Added": "yes", "x-frame-options": "DENY"}})
	d.def = b
	return b
}

// handlerPathResponse is what the handler's path sends a viewer for an
// origin answer (head and body): ReadResponse, the entry, deliver through
// the inline writer. stored tells whether the entry could be stored.
func handlerPathResponse(t testing.TB, b *behavior, method string, answer []byte, reqTime, respTime time.Time) (out []byte, stored bool, ok bool) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(answer)), &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, false, false
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.Close {
		return nil, false, false
	}
	req := &http.Request{Method: method, URL: &url.URL{Path: "/a"}, Host: "x", Header: emptyHeader, RequestURI: "/a", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	st := &reqState{r: req, b: b, s: &snapshot{maxObject: 1 << 20}, now: reqTime}
	h := &Handler{}
	e, stored := h.newEntry(st, resp.StatusCode, resp.Header, body, reqTime, respTime, 1, 1)
	st.status = stMiss
	c := &bufConn{}
	w := &inlineWriter{}
	w.reset(c, req)
	h.deliver(w, st, e, "k", e.Age(respTime))
	if err := w.finish(); err != nil {
		t.Fatalf("inline writer: %v", err)
	}
	return c.out.Bytes(), stored, true
}

var dateLine = regexp.MustCompile(`(?m)^Date: [^\r]*\r\n`)

// compareRawRelay runs one origin answer through the raw relay and, when
// it takes it, through the handler's path, and fails on any difference
// (a Date the edge adds is the clock's, so Date lines are compared only
// for their presence).
func compareRawRelay(t testing.TB, b *behavior, method, head string) (taken bool) {
	r := &rawHead{limit: rawRelayMax, compress: b.compress}
	n, taken := r.take([]byte(head))
	if !taken {
		return false
	}
	body := strings.Repeat("b", int(n))
	reqTime := time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)
	respTime := reqTime.Add(1500 * time.Millisecond)
	got := r.appendResponse(nil, b, r.initialAge(reqTime, respTime), false, respTime)
	if method != http.MethodHead {
		got = append(got, body...)
	}
	want, stored, ok := handlerPathResponse(t, b, method, []byte(head+body), reqTime, respTime)
	switch {
	case !ok:
		t.Fatalf("raw relay took an answer net/http refuses:\n%q", head)
	case stored:
		t.Fatalf("raw relay took an answer the handler would store:\n%q", head)
	}
	got, want = dateLine.ReplaceAll(got, []byte("Date: -\r\n")), dateLine.ReplaceAll(want, []byte("Date: -\r\n"))
	if !bytes.Equal(got, want) {
		t.Fatalf("%s of\n%q\nraw relay:\n%s\nhandler's path:\n%s", method, head, got, want)
	}
	return true
}

// rawRelayHeads are origin answers (heads) and whether the raw relay
// takes them.
var rawRelayHeads = []struct {
	head  string
	taken bool
}{
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n", true},
	{"HTTP/1.1 200 OK\r\nDate: Fri, 27 Nov 2026 05:59:58 GMT\r\nCache-Control: private, max-age=60\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Type: text/html\r\nContent-Length: 3\r\n\r\n", true},
	{"HTTP/1.1 200 OK\r\ncache-control:  no-store \r\ncontent-type: text/plain\r\nx-lower:v1\r\nX-LOWER: v2\r\ncontent-length: 8\r\n\r\n", true},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store, no-cache\r\nSurrogate-Key: a b\r\nSurrogate-Control: max-age=60\r\nConnection: X-Hop, keep-alive\r\nX-Hop: only this hop\r\nKeep-Alive: timeout=5\r\nX-Custom: kept\r\nAge: 7\r\nX-Cache: HIT\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\n", true},
	{"HTTP/1.1 200\r\nCACHE-CONTROL: NO-STORE\r\nContent-Type: a/b\r\nX-Empty:\r\nX-Frame-Options: SAMEORIGIN\r\nX-Added: from origin\r\nContent-Length: 0\r\n\r\n", true},
	{"HTTP/1.1 200 Fine\r\nCache-Control: no-store\r\nDate: Fri, 27 Nov 2026 05:50:00 GMT\r\nAge: 30\r\nAge: 40\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n", true},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nCache-Control: max-age=5\r\nProxy-Authenticate: Basic\r\nTe: trailers\r\nContent-Type: text/plain\r\nx-tab:\tv\t\r\nContent-Length: 1\r\n\r\n", true},
	{"HTTP/1.1 200 OK\r\nCache-Control: private, no-transform\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 4\r\n\r\n", true},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: application/problem+json\r\nContent-Type: image/png\r\nContent-Length: 4\r\n\r\n", true},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: image/png\r\nContent-Length: 4\r\n\r\n", true},
	// Not taken: what the handler's path has to interpret.
	{"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 5\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nVary: Accept\r\nContent-Type: a/b\r\nContent-Length: 1\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: a/b\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: a/b\r\nTransfer-Encoding: chunked\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: a/b\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: a/b\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: a/b\r\n folded\r\nContent-Length: 1\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent Type: a/b\r\nContent-Length: 1\r\n\r\n", false},
	{"HTTP/1.1 200 OK\nCache-Control: no-store\nContent-Type: a/b\nContent-Length: 1\n\n", false},
	{"HTTP/1.0 200 OK\r\nCache-Control: no-store\r\nContent-Type: a/b\r\nContent-Length: 1\r\n\r\n", false},
	{"HTTP/1.1 404 Not Found\r\nCache-Control: no-store\r\nContent-Type: a/b\r\nContent-Length: 1\r\n\r\n", false},
	{"HTTP/1.1 2000 OK\r\nCache-Control: no-store\r\nContent-Type: a/b\r\nContent-Length: 1\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: a/b\r\nContent-Length: 99999999\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: a\x01b\r\nContent-Length: 1\r\n\r\n", false},
}

// TestRawRelayMatchesHandlerPath: for every answer the raw relay takes, the
// viewer gets byte for byte what the handler's path sends (GET and HEAD),
// and the answer is one the handler would not store; the others are left
// to the handler's path.
func TestRawRelayMatchesHandlerPath(t *testing.T) {
	for _, b := range []*behavior{rawRelayBehavior(false), rawRelayBehavior(true)} {
		for _, c := range rawRelayHeads {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				if taken := compareRawRelay(t, b, method, c.head); taken != c.taken {
					t.Errorf("compress %v: taken %v, want %v:\n%q", b.compress, taken, c.taken, c.head)
				}
			}
		}
	}
}

// FuzzRawRelayHead: whatever head the raw relay takes, net/http reads it,
// the handler would not store it, and the viewer gets the same bytes both
// ways.
func FuzzRawRelayHead(f *testing.F) {
	for _, c := range rawRelayHeads {
		f.Add(c.head)
	}
	plain, compress := rawRelayBehavior(false), rawRelayBehavior(true)
	f.Fuzz(func(t *testing.T, head string) {
		if i := strings.Index(head, "\r\n\r\n"); len(head) > 8192 || i < 0 || i+4 != len(head) {
			return // the relay is given exactly a head
		}
		if n := strings.Index(head, "Content-Length:"); n >= 0 {
			// Keep bodies small.
			if v, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(head[n+15:], "\r", 2)[0])); err == nil && v > 4096 {
				return
			}
		}
		compareRawRelay(t, plain, http.MethodGet, head)
		compareRawRelay(t, compress, http.MethodGet, head)
	})
}
