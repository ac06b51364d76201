package edge

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seenRequest is what an origin saw of one request.
type seenRequest struct {
	uri, host string
	header    http.Header
}

// TestPassRelayMatchesFullPath: a GET for an uncacheable object (a
// hit-for-miss marker in the cache) is relayed by the fast server, and
// both the origin and the viewer see what the full handler gives them (a
// request goes to the full handler through net/http when it carries a
// framing field, Content-Length: 0), with compression on and off; the
// plainly uncacheable answers take the raw relay.
func TestPassRelayMatchesFullPath(t *testing.T) {
	t.Run("compress", func(t *testing.T) { passRelayMatchesFullPath(t, true) })
	t.Run("raw", func(t *testing.T) { passRelayMatchesFullPath(t, false) })
}

func passRelayMatchesFullPath(t *testing.T, compress bool) {
	var mu sync.Mutex
	seen := map[string][]seenRequest{}
	cacheable := false
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = append(seen[r.URL.Path], seenRequest{r.RequestURI, r.Host, r.Header.Clone()})
		nowCacheable := cacheable
		mu.Unlock()
		h := w.Header()
		switch strings.TrimSuffix(r.URL.Path, "-2") {
		case "/json", "/head":
			h.Set("Cache-Control", "no-store")
			h.Set("Content-Type", "application/json")
			io.WriteString(w, `{"ok":true}`)
		case "/sniffed":
			h.Set("Cache-Control", "private")
			io.WriteString(w, "<html><body>no type given</body></html>")
		case "/fields":
			h.Set("Cache-Control", "no-store, no-cache")
			h.Set("Surrogate-Key", "a b")
			h.Set("Surrogate-Control", "max-age=60")
			h.Add("Set-Cookie", "a=1")
			h.Add("Set-Cookie", "b=2")
			h.Set("Connection", "X-Hop")
			h.Set("X-Hop", "only for this hop")
			h.Set("Keep-Alive", "timeout=5")
			h.Set("X-Custom", "kept")
			h.Set("Age", "7")
			h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
			h.Set("Content-Type", "text/plain")
			io.WriteString(w, "fields")
		case "/raw":
			// Field names as an origin may send them (lower case, odd
			// spacing), written past net/http's canonical writer.
			c, brw, _ := w.(http.Hijacker).Hijack()
			body := "raw body"
			fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\ncache-control:  no-store\r\ncontent-type: text/plain\r\nx-lower:v1\r\nX-LOWER: v2\r\ncontent-length: %d\r\n\r\n%s", len(body), body)
			brw.Flush()
			c.Close()
		case "/chunked":
			h.Set("Cache-Control", "no-store")
			h.Set("Content-Type", "application/octet-stream")
			w.(http.Flusher).Flush()
			io.WriteString(w, strings.Repeat("c", 100<<10))
		case "/missing":
			h.Set("Cache-Control", "no-store")
			http.NotFound(w, r)
		case "/redirect", "/hredirect":
			h.Set("Cache-Control", "no-store")
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/empty":
			h.Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNoContent)
		case "/vary":
			h.Set("Cache-Control", "private")
			h.Set("Vary", "User-Agent")
			h.Set("Content-Type", "text/plain")
			io.WriteString(w, "varies")
		case "/large":
			h.Set("Cache-Control", "no-store")
			h.Set("Content-Type", "application/octet-stream")
			io.WriteString(w, strings.Repeat("L", 2<<20)) // above max_object_size
		case "/flip":
			if nowCacheable {
				h.Set("Cache-Control", "max-age=60")
			} else {
				h.Set("Cache-Control", "no-store")
			}
			h.Set("Content-Type", "text/plain")
			io.WriteString(w, "flip")
		}
	})
	logPath := filepath.Join(t.TempDir(), "access.log")
	// Compression on: not for these viewers, who send no Accept-Encoding,
	// but compressible answers get a Vary: Accept-Encoding both ways.
	te := startEdge(t, "access_log: {path: "+logPath+", format: json}\n"+
		oneOrigin(o, "      response_headers: {X-Added: yes}\n      compress: "+strconv.FormatBool(compress)+"\n"), nil)
	relayed := func() float64 { return float64(counterValue(te.svc.h.m.relayed)) }
	rawRelayed := func() float64 { return float64(counterValue(te.svc.h.m.rawRelay)) }
	relay, full := dialRaw(t, te), dialRaw(t, te)
	fields := []string{"User-Agent: relay-test", "Accept: */*", "X-Ignored: 1"}
	for _, c := range []struct {
		name, method, path string
		code               int
		body               string
	}{
		{"no-store JSON", "GET", "/json", 200, `{"ok":true}`},
		{"private, type sniffed", "GET", "/sniffed", 200, "<html><body>no type given</body></html>"},
		{"fields to drop and keep", "GET", "/fields", 200, "fields"},
		{"raw field names", "GET", "/raw", 200, "raw body"},
		{"origin without length", "GET", "/chunked", 200, strings.Repeat("c", 100<<10)},
		{"404", "GET", "/missing", 404, "404 page not found\n"},
		{"redirect", "GET", "/redirect", 302, "<a href=\"/elsewhere\">Found</a>.\n\n"},
		{"204", "GET", "/empty", 204, ""},
		{"Vary", "GET", "/vary", 200, "varies"},
		{"HEAD", "HEAD", "/head", 200, ""},
		{"HEAD of a redirect", "HEAD", "/hredirect", 302, ""},
		// Not relayed: the first answer left a too-large marker, which
		// the handler's pass-through serves.
		{"too large to cache", "GET", "/large", 200, strings.Repeat("L", 2<<20)},
	} {
		// The first request leaves the marker; a second path (-2) gets
		// the full handler's answer for comparison.
		relay.do(c.method, c.path, fields...)
		te.wait()
		full.do(c.method, c.path+"-2", fields...)
		te.wait()
		before, beforeRaw := relayed(), rawRelayed()
		got := relay.do(c.method, c.path, fields...)
		want := full.do(c.method, c.path+"-2", append(fields, "Content-Length: 0")...)
		wantRelayed, wantRaw := 1.0, 0.0
		if c.path == "/large" {
			wantRelayed = 0
		}
		if slices.Contains([]string{"/json", "/sniffed", "/fields", "/raw", "/head"}, c.path) {
			wantRaw = 1
		}
		if n, raw := relayed()-before, rawRelayed()-beforeRaw; n != wantRelayed || raw != wantRaw {
			t.Errorf("%s: %v requests relayed (%v raw), want %v (%v)", c.name, n, raw, wantRelayed, wantRaw)
		}
		want.body = strings.ReplaceAll(want.body, c.path+"-2", c.path)
		if got.code != c.code || got.body != c.body {
			t.Errorf("%s: relayed %d %.40q, want %d %.40q", c.name, got.code, got.body, c.code, c.body)
		}
		if got.code != want.code || got.body != want.body {
			t.Errorf("%s: relayed %d %.40q, full handler %d %.40q", c.name, got.code, got.body, want.code, want.body)
		}
		delete(got.header, "Date")
		delete(want.header, "Date")
		if c.path == "/fields" && !reflect.DeepEqual(got.header["Age"], []string{"7"}) {
			t.Errorf("%s: Age %q", c.name, got.header["Age"])
		}
		// Age counts from the origin's Date, whole seconds: the two
		// requests may fall on either side of a second's boundary.
		if ga, wa := got.header.Get("Age"), want.header.Get("Age"); ga != wa {
			g, gerr := strconv.Atoi(ga)
			w, werr := strconv.Atoi(wa)
			if gerr == nil && werr == nil && (g-w == 1 || w-g == 1) {
				want.header["Age"] = got.header["Age"]
			}
		}
		if !reflect.DeepEqual(got.header, want.header) {
			t.Errorf("%s: fields differ\nrelayed:      %v\nfull handler: %v", c.name, got.header, want.header)
		}
		mu.Lock()
		r, f := seen[c.path], seen[c.path+"-2"]
		mu.Unlock()
		if len(r) != 2 || len(f) != 2 {
			t.Fatalf("%s: origin saw %d and %d requests, want 2 each", c.name, len(r), len(f))
		}
		gr, fr := r[1], f[1]
		if gr.uri != c.path || fr.uri != c.path+"-2" || gr.host != fr.host || !reflect.DeepEqual(gr.header, fr.header) {
			t.Errorf("%s: origin saw %q %q %v from the relay, %q %q %v from the full handler", c.name, gr.uri, gr.host, gr.header, fr.uri, fr.host, fr.header)
		}
		if got.close {
			t.Errorf("%s: connection closed", c.name)
		}
	}

	// The access log has the same entry for both (but for timings).
	entries := map[string]map[string]any{}
	waitFor(t, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), "\n") >= 48 // 12 cases × 4 requests
	})
	b, _ := os.ReadFile(logPath)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		for _, k := range []string{"time", "duration_ms", "upstream_duration_ms"} {
			delete(e, k)
		}
		entries[e["uri"].(string)] = e // the last one for each path
	}
	for uri, e := range entries {
		if strings.HasSuffix(uri, "-2") {
			continue
		}
		full := entries[uri+"-2"]
		full["uri"] = uri
		if !reflect.DeepEqual(e, full) {
			t.Errorf("access log entries differ\nrelayed:      %v\nfull handler: %v", e, full)
		}
	}

	// An object that turns cacheable: relayed once more, stored, then a hit.
	relay.do("GET", "/flip")
	te.wait()
	mu.Lock()
	cacheable = true
	mu.Unlock()
	if r := relay.do("GET", "/flip"); r.code != 200 || r.header.Get("X-Cache") != "Miss from edged" {
		t.Errorf("flip: %d %q", r.code, r.header.Get("X-Cache"))
	}
	te.wait()
	if r := relay.do("GET", "/flip"); r.header.Get("X-Cache") != "Hit from edged" || r.body != "flip" {
		t.Errorf("after flip: %q %q", r.header.Get("X-Cache"), r.body)
	}

	// Requests the relay leaves to the full handler.
	before := relayed()
	relay.do("GET", "/json", "Via: 1.1 upstream")
	relay.do("GET", "/json?x=1")
	if n := relayed() - before; n != 1 {
		t.Errorf("%v of Via, and a query ignored by the key relayed, want 1 (the query)", n)
	}
}

// TestPassRelayOriginDown: a relayed request whose origin refuses
// connections gets the full handler's 502.
func TestPassRelayOriginDown(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "up")
	})
	te := startEdge(t, oneOrigin(o, ""), nil)
	c := dialRaw(t, te)
	if r := c.do("GET", "/a"); r.body != "up" {
		t.Fatalf("first: %d %q", r.code, r.body)
	}
	te.wait()
	o.Close()
	before := float64(counterValue(te.svc.h.m.relayed))
	got := c.do("GET", "/a")
	want := c.do("GET", "/a", "Content-Length: 0")
	if float64(counterValue(te.svc.h.m.relayed))-before != 1 {
		t.Errorf("not relayed")
	}
	if got.code != 502 || got.code != want.code || got.body != want.body || got.header.Get("X-Cache") != want.header.Get("X-Cache") {
		t.Errorf("relayed %d %q %q, full handler %d %q %q", got.code, got.body, got.header.Get("X-Cache"), want.code, want.body, want.header.Get("X-Cache"))
	}
}

// TestRawRelayCutBody: an answer the raw relay took whose body the origin
// cuts short gets the handler's 502, and the next request is served.
func TestRawRelayCutBody(t *testing.T) {
	var cut atomic.Bool
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if !cut.Load() {
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "whole")
			return
		}
		c, brw, _ := w.(http.Hijacker).Hijack()
		brw.WriteString("HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nabc")
		brw.Flush()
		c.Close()
	})
	te := startEdge(t, oneOrigin(o, ""), nil)
	c := dialRaw(t, te)
	if r := c.do("GET", "/a"); r.body != "whole" {
		t.Fatalf("first: %d %q", r.code, r.body)
	}
	te.wait()
	if r := c.do("GET", "/a"); r.body != "whole" || counterValue(te.svc.h.m.rawRelay) != 1 {
		t.Fatalf("relayed: %d %q, %v raw", r.code, r.body, counterValue(te.svc.h.m.rawRelay))
	}
	cut.Store(true)
	got := c.do("GET", "/a")
	want := c.do("GET", "/a", "Content-Length: 0")
	if got.code != 502 || got.code != want.code || got.body != want.body || got.header.Get("X-Cache") != want.header.Get("X-Cache") {
		t.Errorf("cut body: relayed %d %q %q, full handler %d %q %q", got.code, got.body, got.header.Get("X-Cache"), want.code, want.body, want.header.Get("X-Cache"))
	}
	cut.Store(false)
	if r := c.do("GET", "/a"); r.code != 200 || r.body != "whole" {
		t.Errorf("after the cut: %d %q", r.code, r.body)
	}
}
