package edge

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestServeInline: the HTTP/2 server's inline answers (Handler.ServeInline)
// take exactly what needs no origin request — fresh hits, refusals — and
// leave misses, passes, hit-for-miss keys and unsafe methods alone,
// having written nothing, so the handler's goroutine answers them.
func TestServeInline(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/private":
			w.Header().Set("Cache-Control", "private")
		default:
			w.Header().Set("Cache-Control", "max-age=60")
		}
		w.Write([]byte("body of " + r.URL.Path))
	})
	te := startEdge(t, oneOrigin(o, "      allowed_methods: [GET, HEAD, OPTIONS, PUT, POST, PATCH, DELETE]\n"), nil)
	h := te.svc.h
	inline := func(method, path, host string) (bool, *httptest.ResponseRecorder) {
		r := httptest.NewRequest(method, path, nil)
		if host != "" {
			r.Host = host
		}
		w := httptest.NewRecorder()
		return h.ServeInline(w, r), w
	}
	for _, tc := range []struct {
		name, method, path string
		before             func() // what the cache holds first
		taken              bool
		xcache             string
		code               int
	}{
		{name: "miss", method: "GET", path: "/a", taken: false},
		{name: "fresh hit", method: "GET", path: "/a", before: func() { te.get("/a"); te.wait() }, taken: true, xcache: "Hit from edged", code: 200},
		{name: "HEAD hit", method: "HEAD", path: "/a", taken: true, xcache: "Hit from edged", code: 200},
		{name: "refusal", method: "GET", path: "/" + strings.Repeat("x", 9000), taken: true, xcache: "Error from edged", code: http.StatusRequestURITooLong},
		{name: "hit-for-miss", method: "GET", path: "/private", before: func() { te.get("/private"); te.wait() }, taken: false},
		{name: "unsafe method", method: "DELETE", path: "/a", taken: false},
		{name: "query not in the cache", method: "GET", path: "/b?x=1", taken: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			before := o.total.Load()
			taken, w := inline(tc.method, tc.path, "")
			if taken != tc.taken {
				t.Fatalf("ServeInline = %v, want %v", taken, tc.taken)
			}
			if o.total.Load() != before {
				t.Errorf("ServeInline made an origin request")
			}
			if !taken {
				if w.Code != 200 || w.Body.Len() != 0 || len(w.Header()) != 0 || w.Flushed {
					t.Errorf("declined, but wrote: %d %v %q", w.Code, w.Header(), w.Body.String())
				}
				return
			}
			if got := w.Header().Get("X-Cache"); got != tc.xcache || w.Code != tc.code {
				t.Errorf("%d, X-Cache %q; want %d, %q", w.Code, got, tc.code, tc.xcache)
			}
			if tc.code == 200 && tc.method == "GET" && !strings.HasPrefix(w.Body.String(), "body of ") {
				t.Errorf("body %q", w.Body.String())
			}
		})
	}
}
