package origin

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHTTPOrigin(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", r.Host, r.URL.Path, r.URL.RawQuery)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, c := range []struct {
		url, hostHeader, want string
	}{
		{srv.URL, "", host + " /a/b q=1"},
		{host + "/prefix/", "", host + " /prefix/a/b q=1"},
		{srv.URL, "origin.internal", "origin.internal /a/b q=1"},
		{srv.URL, "viewer", "www.example.test /a/b q=1"},
	} {
		o, err := NewHTTP(HTTPOptions{Name: "o", URL: c.url, HostHeader: c.hostHeader})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", "/a/b?q=1", nil)
		req.Host = "www.example.test"
		resp, err := o.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != c.want {
			t.Errorf("%s/%s: %q, want %q", c.url, c.hostHeader, b, c.want)
		}
		o.Close()
	}
	for _, bad := range []string{"ftp://x", "http://", "http://x?y=1", "://"} {
		if _, err := NewHTTP(HTTPOptions{URL: bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestResponseTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	o, _ := NewHTTP(HTTPOptions{Name: "slow", URL: srv.URL, ResponseTimeout: 100 * time.Millisecond})
	req, _ := http.NewRequest("GET", "/", nil)
	start := time.Now()
	if _, err := o.RoundTrip(req); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

func TestBucketAndHandlerTransport(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("home"), 0o644)
	os.WriteFile(filepath.Join(dir, "big.txt"), []byte(strings.Repeat("z", 1<<20)), 0o644)
	b, err := NewBucket(BucketOptions{Name: "b", Dir: dir, CacheControl: "max-age=5"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	get := func(method, path string, hdr ...string) *http.Response {
		req, _ := http.NewRequest(method, path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := b.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get("GET", "/")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "home" || resp.Header.Get("Cache-Control") != "max-age=5" || resp.ContentLength != 4 {
		t.Errorf("index: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	etag := resp.Header.Get("ETag")
	if resp := get("GET", "/", "If-None-Match", etag); resp.StatusCode != 304 {
		t.Errorf("conditional: %d", resp.StatusCode)
	}
	if resp := get("HEAD", "/big.txt"); resp.StatusCode != 200 || resp.ContentLength != 1<<20 {
		t.Errorf("head: %d %d", resp.StatusCode, resp.ContentLength)
	}
	if resp := get("POST", "/"); resp.StatusCode != 405 {
		t.Errorf("post: %d", resp.StatusCode)
	}
	// An abandoned body stops the handler goroutine (no leak, no hang).
	resp = get("GET", "/big.txt")
	buf := make([]byte, 10)
	io.ReadFull(resp.Body, buf)
	resp.Body.Close()
	if resp := get("GET", "/nope"); resp.StatusCode != 404 {
		t.Errorf("missing: %d", resp.StatusCode)
	}
	if _, err := NewBucket(BucketOptions{Dir: filepath.Join(dir, "nope")}); err == nil {
		t.Error("missing folder accepted")
	}
}
