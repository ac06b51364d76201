package edge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/edgestack/edgestack/internal/config"
	"golang.org/x/net/http2"
)

// TestReloadListeners: a reload re-creates the listeners whose settings
// changed on their own sockets (a request in flight on the old server
// finishes; new connections get the new settings), binds added ones,
// closes removed ones, keeps unchanged ones as they are, and a listener
// that cannot bind rejects the whole reload.
func TestReloadListeners(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "a", "a.example.test")
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, "path="+r.URL.Path)
	})
	web, tlsPort, extra := apptest.FreePort(t), apptest.FreePort(t), apptest.FreePort(t)
	render := func(streams int, idle string, withExtra bool, dist string) *Config {
		t.Helper()
		text := fmt.Sprintf(`listeners:
  - name: web
    address: 127.0.0.1:%d
  - name: tls
    address: 127.0.0.1:%d
    tls: {certificates: [{cert_file: %s, key_file: %s}]}
`, web, tlsPort, cert, key)
		if withExtra {
			text += fmt.Sprintf("  - name: extra\n    address: 127.0.0.1:%d\n", extra)
		}
		text += fmt.Sprintf(`cache: {max_size: 8MiB, max_object_size: 1MiB}
http2: {max_concurrent_streams: %d}
timeouts: {idle: %s}
distributions:
  - name: %s
    domains: ["*"]
    origins: [{name: o, url: "%s"}]
    default_behavior: {origin: o}
`, streams, idle, dist, o.URL)
		cfg := DefaultConfig()
		cfg.Admin.Listen = "127.0.0.1:0"
		if _, err := config.Decode("reload.yaml", []byte(text), cfg); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	te := startConfig(t, render(50, "60s", false, "d"))
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	streams := func() uint32 {
		return apptest.H2Settings(t, tlsAddr, "a.example.test")[http2.SettingMaxConcurrentStreams]
	}
	if got := streams(); got != 50 {
		t.Fatalf("max concurrent streams before reload: %d, want 50", got)
	}
	running := func() map[string]*edgeListener {
		te.svc.mu.Lock()
		defer te.svc.mu.Unlock()
		out := map[string]*edgeListener{}
		for _, l := range te.svc.listeners {
			out[l.name] = l
		}
		return out
	}
	before := running()

	// A request in flight on the old server of the plain listener.
	slow := make(chan string, 1)
	go func() {
		r := te.get("/slow")
		slow <- fmt.Sprint(r.code, " ", r.body)
	}()
	time.Sleep(100 * time.Millisecond) // let it reach the origin

	reload := func(cfg *Config) error { return te.svc.Reload(context.Background(), cfg) }
	if err := reload(render(77, "30s", true, "d")); err != nil {
		t.Fatal(err)
	}
	after := running()
	if after["web"] == before["web"] || after["tls"] == before["tls"] {
		t.Error("listeners with changed timeouts and http2 settings were kept")
	}
	if got := streams(); got != 77 {
		t.Errorf("max concurrent streams after reload: %d, want 77", got)
	}
	if r := te.get("/new"); r.code != 200 || r.body != "path=/new" {
		t.Errorf("new connection after reload: %d %q", r.code, r.body)
	}
	extraURL := fmt.Sprintf("http://127.0.0.1:%d/x", extra)
	if body := getBody(t, extraURL); body != "path=/x" {
		t.Errorf("added listener: %q", body)
	}
	close(release)
	select {
	case got := <-slow:
		if got != "200 path=/slow" {
			t.Errorf("request in flight across the reload: %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request in flight across the reload never finished")
	}

	// Only a distribution changes: every listener is kept.
	if err := reload(render(77, "30s", true, "d2")); err != nil {
		t.Fatal(err)
	}
	kept := running()
	for name, l := range after {
		if kept[name] != l {
			t.Errorf("listener %s re-created by a reload that did not change it", name)
		}
	}

	// A listener that cannot bind rejects the reload: nothing changes.
	squat, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer squat.Close()
	bad := render(99, "30s", false, "d2")
	bad.Listeners = append(bad.Listeners, Listener{Name: "taken", Address: squat.Addr().String()})
	if err := reload(bad); err == nil || !strings.Contains(err.Error(), "taken") {
		t.Errorf("reload with an address in use: %v, want an error naming the listener", err)
	}
	if got := streams(); got != 77 {
		t.Errorf("max concurrent streams after a rejected reload: %d, want 77", got)
	}
	if body := getBody(t, extraURL); body != "path=/x" {
		t.Errorf("listener after a rejected reload: %q", body)
	}

	// Removed: the extra listener's socket closes.
	if err := reload(render(77, "30s", false, "d2")); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", extra), time.Second); err == nil {
		c.Close()
		t.Error("removed listener still accepts connections")
	}
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
