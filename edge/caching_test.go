package edge

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestCachingSemantics runs request sequences against an origin answering
// with the given headers and checks status, X-Cache and origin hits.
func TestCachingSemantics(t *testing.T) {
	type step struct {
		method string
		hdrs   []string
		code   int
		xcache string
		hits   int // origin requests so far for the path
	}
	type tc struct {
		name     string
		behavior string
		origin   []string // response header lines
		status   int
		steps    []step
	}
	get := func(code int, xc string, hits int, hdrs ...string) step {
		return step{"GET", hdrs, code, xc, hits}
	}
	for _, c := range []tc{
		{name: "max-age cached", origin: []string{"Cache-Control: max-age=60"},
			steps: []step{get(200, "Miss", 1), get(200, "Hit", 1), get(200, "Hit", 1)}},
		{name: "default ttl without headers", origin: nil,
			steps: []step{get(200, "Miss", 1), get(200, "Hit", 1)}},
		{name: "no-store", origin: []string{"Cache-Control: no-store"},
			steps: []step{get(200, "Miss", 1), get(200, "Miss", 2)}},
		{name: "private", origin: []string{"Cache-Control: private, max-age=60"},
			steps: []step{get(200, "Miss", 1), get(200, "Miss", 2)}},
		{name: "set-cookie not stored", origin: []string{"Cache-Control: max-age=60", "Set-Cookie: a=b"},
			steps: []step{get(200, "Miss", 1), get(200, "Miss", 2)}},
		{name: "s-maxage over max-age", origin: []string{"Cache-Control: max-age=0, s-maxage=60"},
			steps: []step{get(200, "Miss", 1), get(200, "Hit", 1)}},
		{name: "no-cache revalidates", origin: []string{"Cache-Control: no-cache", `ETag: "v1"`},
			steps: []step{get(200, "Miss", 1), get(200, "RefreshHit", 2), get(200, "RefreshHit", 3)}},
		{name: "max-age=0 revalidates with last-modified", origin: []string{"Cache-Control: max-age=0", "Last-Modified: Mon, 02 Jan 2006 15:04:05 GMT"},
			steps: []step{get(200, "Miss", 1), get(200, "RefreshHit", 2)}},
		{name: "expires in the past", origin: []string{"Expires: Mon, 02 Jan 2006 15:04:05 GMT"},
			steps: []step{get(200, "Miss", 1), get(200, "Miss", 2)}},
		{name: "invalid expires is stale", origin: []string{"Expires: 0"},
			steps: []step{get(200, "Miss", 1), get(200, "Miss", 2)}},
		{name: "age from upstream counts", origin: []string{"Cache-Control: max-age=60", "Age: 100"},
			steps: []step{get(200, "Miss", 1), get(200, "Miss", 2)}},
		{name: "min ttl raises", behavior: "      min_ttl: 60s\n", origin: []string{"Cache-Control: max-age=0"},
			steps: []step{get(200, "Miss", 1), get(200, "Hit", 1)}},
		{name: "max ttl caps", behavior: "      max_ttl: 0s\n      default_ttl: 0s\n", origin: []string{"Cache-Control: max-age=600"},
			steps: []step{get(200, "Miss", 1), get(200, "Miss", 2)}},
		{name: "404 cached by default ttl", status: 404,
			steps: []step{get(404, "Miss", 1), get(404, "Hit", 1)}},
		{name: "500 not cached without explicit freshness", status: 500,
			steps: []step{get(500, "Miss", 1), get(500, "Miss", 2)}},
		{name: "client conditional answered from cache", origin: []string{"Cache-Control: max-age=60", `ETag: "abc"`},
			steps: []step{get(200, "Miss", 1), get(304, "Hit", 1, `If-None-Match: "abc"`), get(200, "Hit", 1, `If-None-Match: "zzz"`)}},
		{name: "if-modified-since from cache", origin: []string{"Cache-Control: max-age=60", "Last-Modified: Mon, 02 Jan 2006 15:04:05 GMT"},
			steps: []step{get(200, "Miss", 1), get(304, "Hit", 1, "If-Modified-Since: Tue, 03 Jan 2006 15:04:05 GMT")}},
		{name: "head after get is a hit", origin: []string{"Cache-Control: max-age=60"},
			steps: []step{get(200, "Miss", 1), {"HEAD", nil, 200, "Hit", 1}}},
		{name: "head fills with get", origin: []string{"Cache-Control: max-age=60"},
			steps: []step{{"HEAD", nil, 200, "Miss", 1}, get(200, "Hit", 1)}},
		{name: "range from cached object", origin: []string{"Cache-Control: max-age=60"},
			steps: []step{get(200, "Miss", 1), get(206, "Hit", 1, "Range: bytes=0-3")}},
		{name: "range on miss fills whole", origin: []string{"Cache-Control: max-age=60"},
			steps: []step{get(206, "Miss", 1, "Range: bytes=2-5"), get(200, "Hit", 1)}},
		{name: "viewer no-cache ignored", origin: []string{"Cache-Control: max-age=60"},
			steps: []step{get(200, "Miss", 1), get(200, "Hit", 1, "Cache-Control: no-cache", "Pragma: no-cache")}},
		{name: "unsafe method invalidates", behavior: "      allowed_methods: [GET, HEAD, POST]\n", origin: []string{"Cache-Control: max-age=60"},
			steps: []step{get(200, "Miss", 1), get(200, "Hit", 1), {"POST", nil, 200, "Pass", 2}, get(200, "Miss", 3)}},
		{name: "method not allowed", origin: []string{"Cache-Control: max-age=60"},
			steps: []step{{"DELETE", nil, 405, "Denied", 0}}},
		{name: "vary star not stored", origin: []string{"Cache-Control: max-age=60", "Vary: *"},
			steps: []step{get(200, "Miss", 1), get(200, "Miss", 2)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
				for _, h := range c.origin {
					k, v, _ := strings.Cut(h, ":")
					w.Header().Set(k, strings.TrimSpace(v))
				}
				if inm := r.Header.Get("If-None-Match"); inm != "" && inm == w.Header().Get("ETag") {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				if ims := r.Header.Get("If-Modified-Since"); ims != "" && w.Header().Get("Last-Modified") != "" {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				w.Header().Set("Content-Type", "text/plain")
				if c.status != 0 {
					w.WriteHeader(c.status)
				}
				fmt.Fprint(w, "0123456789")
			})
			te := startEdge(t, oneOrigin(o, c.behavior), nil)
			for i, s := range c.steps {
				r := te.do(s.method, "/x", s.hdrs...)
				if r.code != s.code || r.xcache() != s.xcache {
					t.Errorf("step %d %s: %d %q, want %d %q", i, s.method, r.code, r.xcache(), s.code, s.xcache)
				}
				if got := o.count("/x"); got != s.hits {
					t.Errorf("step %d: origin hits %d, want %d", i, got, s.hits)
				}
				if r.code == 206 && r.body != "0123" && r.body != "2345" {
					t.Errorf("step %d: range body %q", i, r.body)
				}
				te.wait()
			}
		})
	}
}

func TestAgeHeader(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Age", "30")
		fmt.Fprint(w, "x")
	})
	te := startEdge(t, oneOrigin(o, ""), nil)
	r := te.get("/a")
	te.wait()
	if r.header.Get("Age") != "30" {
		t.Errorf("miss Age %q, want 30", r.header.Get("Age"))
	}
	r = te.get("/a")
	if r.xcache() != "Hit" || (r.header.Get("Age") != "30" && r.header.Get("Age") != "31") {
		t.Errorf("hit: %q Age %q", r.xcache(), r.header.Get("Age"))
	}
}

func TestRevalidationRefreshesHeaders(t *testing.T) {
	var n int
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		n++
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Cache-Control", "max-age=0")
		w.Header().Set("X-Version", fmt.Sprint(n))
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.Header().Set("Cache-Control", "max-age=60")
			w.WriteHeader(304)
			return
		}
		fmt.Fprint(w, "body-v1")
	})
	te := startEdge(t, oneOrigin(o, ""), nil)
	te.get("/r")
	te.wait()
	r := te.get("/r")
	if r.xcache() != "RefreshHit" || r.body != "body-v1" || r.header.Get("X-Version") != "2" {
		t.Fatalf("refresh: %q %q X-Version %q", r.xcache(), r.body, r.header.Get("X-Version"))
	}
	te.wait()
	r = te.get("/r")
	if r.xcache() != "Hit" || r.header.Get("X-Version") != "2" || o.count("/r") != 2 {
		t.Fatalf("after refresh: %q X-Version %q hits %d", r.xcache(), r.header.Get("X-Version"), o.count("/r"))
	}
}

func TestVary(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		fmt.Fprint(w, "lang=", r.Header.Get("Accept-Language"))
	})
	te := startEdge(t, oneOrigin(o, "      cache_key:\n        headers: [Accept-Language]\n"), nil)
	for i, c := range []struct{ lang, body, xc string }{
		{"en", "lang=en", "Miss"}, {"fr", "lang=fr", "Miss"}, {"en", "lang=en", "Hit"}, {"fr", "lang=fr", "Hit"},
	} {
		r := te.get("/v", "Accept-Language: "+c.lang)
		if r.body != c.body || r.xcache() != c.xc {
			t.Errorf("%d: %q %q, want %q %q", i, r.body, r.xcache(), c.body, c.xc)
		}
		te.wait()
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	var version atomicInt
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
		fmt.Fprint(w, "v", version.add())
	})
	te := startEdge(t, oneOrigin(o, ""), nil)
	if r := te.get("/s"); r.body != "v1" {
		t.Fatal(r.body)
	}
	te.wait()
	time.Sleep(1100 * time.Millisecond)
	r := te.get("/s")
	if r.xcache() != "Stale" || r.body != "v1" {
		t.Fatalf("want stale v1, got %q %q", r.xcache(), r.body)
	}
	waitFor(t, func() bool { te.wait(); r := te.get("/s"); return r.body != "v1" && r.code == 200 })
}

func TestStaleIfErrorAndGrace(t *testing.T) {
	type tc struct {
		name, behavior, cc string
		stale              bool
	}
	for _, c := range []tc{
		{"stale-if-error", "", "max-age=1, stale-if-error=60", true},
		{"grace", "      grace: 1h\n", "max-age=1", true},
		{"no grace", "", "max-age=1", false},
		{"must-revalidate beats grace", "      grace: 1h\n", "max-age=1, must-revalidate", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var fail atomicInt
			o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
				if fail.get() > 0 {
					http.Error(w, "down", 503)
					return
				}
				w.Header().Set("Cache-Control", c.cc)
				fmt.Fprint(w, "good")
			})
			te := startEdge(t, oneOrigin(o, c.behavior), nil)
			te.get("/e")
			te.wait()
			time.Sleep(1100 * time.Millisecond)
			fail.add()
			r := te.get("/e")
			if c.stale && (r.code != 200 || r.body != "good" || r.xcache() != "Stale") {
				t.Errorf("origin 503: %d %q %q, want stale", r.code, r.body, r.xcache())
			}
			if !c.stale && r.code != 503 {
				t.Errorf("origin 503: %d %q, want 503", r.code, r.xcache())
			}
			// Origin gone altogether.
			o.Close()
			r = te.get("/e")
			if c.stale && (r.code != 200 || r.xcache() != "Stale") {
				t.Errorf("origin down: %d %q, want stale", r.code, r.xcache())
			}
			if !c.stale && r.code != 502 {
				t.Errorf("origin down: %d, want 502", r.code)
			}
		})
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNoContentFromBeforeInvalidation: a GET right after an unsafe method
// invalidated the URL must not get the object fetched before, even when
// the fill that fetched it has only just finished (its result stays
// visible to joiners until the store has applied it). 100 rounds of GET,
// POST, GET with no pause; the origin numbers its answers.
func TestNoContentFromBeforeInvalidation(t *testing.T) {
	var n atomic.Int64
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, n.Add(1))
	})
	te := startEdge(t, oneOrigin(o, "      allowed_methods: [GET, HEAD, POST]\n"), nil)
	for i := range 100 {
		path := fmt.Sprintf("/u%d", i)
		first := te.do("GET", path)
		if r := te.do("POST", path); r.code != 200 {
			t.Fatalf("round %d: POST %d", i, r.code)
		}
		again := te.do("GET", path)
		if again.body == first.body {
			t.Fatalf("round %d: GET after the POST got %q (%s), the answer fetched before it", i, again.body, again.xcache())
		}
	}
}
