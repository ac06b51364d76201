//go:build linux

package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProxy runs the probe over three targets: keep-alive requests go
// round robin and carry the X-Forwarded fields lbd adds.
func TestProxy(t *testing.T) {
	var targets []string
	for i := range 3 {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "t%d %s %s %s", i, r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Host"), r.URL.Path)
		}))
		defer ts.Close()
		targets = append(targets, `{address: "`+strings.TrimPrefix(ts.URL, "http://")+`"}`)
	}
	cfg := filepath.Join(t.TempDir(), "lbd.yaml")
	yaml := "target_groups:\n  - name: web\n    targets: [" + strings.Join(targets, ", ") + "]\nlisteners:\n  - name: http\n    listen: 127.0.0.1:0\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	listen, addrs, err := readConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := start(listen, addrs)
	if err != nil {
		t.Fatal(err)
	}
	defer p.wait()
	defer p.stop()

	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	seen := map[string]bool{}
	for i := range 6 {
		resp, err := client.Get(fmt.Sprintf("http://%s/p%d", p.addr, i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		f := strings.Fields(string(b))
		if len(f) != 4 || f[1] != "http" || f[2] != p.addr || f[3] != fmt.Sprintf("/p%d", i) {
			t.Fatalf("request %d: got %q", i, b)
		}
		seen[f[0]] = true
	}
	if len(seen) != 3 {
		t.Errorf("targets answering: %v, want all three", seen)
	}
}

func TestReadConfigErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "lbd.yaml")
	_ = os.WriteFile(cfg, []byte("listeners: []\n"), 0o644)
	if _, _, err := readConfig(cfg); err == nil || !strings.Contains(err.Error(), "listener named http") {
		t.Errorf("err = %v", err)
	}
}
