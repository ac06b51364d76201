package edge

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkHitPath measures the handler's own cost for a 1 KiB cache hit
// (no network): lookup, freshness, header copy, write.
func BenchmarkHitPath(b *testing.B) {
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("ETag", `"x"`)
		w.Write([]byte(strings.Repeat("a", 1024)))
	}))
	defer o.Close()
	t := &testing.T{}
	te := startEdge(t, oneOrigin(&testOrigin{Server: o}, ""), nil)
	h := te.svc.Handler()
	req := httptest.NewRequest("GET", "/obj", nil)
	h.ServeHTTP(&nopWriter{h: http.Header{}}, req)
	te.wait()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h.ServeHTTP(&nopWriter{h: make(http.Header, 8)}, req)
	}
}
