package admin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgestack/edgestack/internal/obs"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func start(t *testing.T, cfg Config, logs io.Writer) (*Server, string) {
	t.Helper()
	reg := obs.NewRegistry(obs.BuildInfo{Daemon: "test", Version: "v0"})
	obs.NewReloadMetrics(reg)
	s, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s, "http://" + ln.Addr().String()
}

func call(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestTokenAuth(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte("file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type tc struct {
		name   string
		cfg    Config
		header string
		want   int
	}
	cases := []tc{
		{"no token configured", Config{Listen: ":0"}, "anything", http.StatusForbidden},
		{"missing", Config{Listen: ":0", Token: "t0k"}, "", http.StatusUnauthorized},
		{"wrong", Config{Listen: ":0", Token: "t0k"}, "nope-secret", http.StatusUnauthorized},
		{"prefix of right", Config{Listen: ":0", Token: "t0k"}, "t0", http.StatusUnauthorized},
		{"right", Config{Listen: ":0", Token: "t0k"}, "t0k", http.StatusOK},
		{"from file", Config{Listen: ":0", TokenFile: tokFile}, "file-token", http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			s, base := start(t, c.cfg, &logs)
			s.HandleAuth("POST /v1/thing", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, 200, "done") }))
			s.Handle("GET /v1/thing", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, 200, "read") }))
			code, body := call(t, "POST", base+"/v1/thing", c.header)
			if code != c.want {
				t.Errorf("POST: %d %s, want %d", code, body, c.want)
			}
			if code >= 400 && !strings.Contains(body, `"error"`) {
				t.Errorf("error body is not JSON: %s", body)
			}
			if c.header != "" && strings.Contains(logs.String(), c.header) {
				t.Errorf("token was logged: %s", logs.String())
			}
			if code, _ := call(t, "GET", base+"/v1/thing", ""); code != 200 {
				t.Errorf("read endpoint needs no token, got %d", code)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("  \n"), 0o600)
	type tc struct {
		cfg  Config
		want string
	}
	for _, c := range []tc{
		{Config{Listen: "127.0.0.1:9101"}, ""},
		{Config{Listen: "nohost"}, "listen"},
		{Config{Listen: ":1", Token: "a", TokenFile: empty}, "token_file"},
		{Config{Listen: ":1", TokenFile: filepath.Join(dir, "missing")}, "token_file"},
		{Config{Listen: ":1", TokenFile: empty}, "empty"},
	} {
		err := c.cfg.Validate()
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: err %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestReadiness(t *testing.T) {
	s, base := start(t, Config{Listen: ":0"}, io.Discard)
	if code, _ := call(t, "GET", base+"/readyz", ""); code != 200 {
		t.Fatalf("readyz with no checks: %d", code)
	}
	zonesErr := errors.New("2 zones still loading")
	s.AddReadiness("zones", func() error { return zonesErr })
	s.AddReadiness("listener", func() error { return nil })
	code, body := call(t, "GET", base+"/readyz", "")
	if code != 503 || !strings.Contains(body, "zones: 2 zones still loading") || strings.Contains(body, "listener") {
		t.Errorf("readyz: %d %q", code, body)
	}
	zonesErr = nil
	if code, _ := call(t, "GET", base+"/readyz", ""); code != 200 {
		t.Errorf("readyz after recovery: %d", code)
	}
	s.SetDraining()
	if code, body := call(t, "GET", base+"/readyz", ""); code != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("readyz while draining: %d %q", code, body)
	}
	if code, _ := call(t, "GET", base+"/livez", ""); code != 200 {
		t.Errorf("livez while draining: %d", code)
	}
}

func TestMetricsLint(t *testing.T) {
	_, base := start(t, Config{Listen: ":0"}, io.Discard)
	code, body := call(t, "GET", base+"/metrics", "")
	if code != 200 || !strings.Contains(body, `edgestack_build_info{daemon="test"`) || !strings.Contains(body, "edgestack_config_last_reload_success_timestamp_seconds") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "edgestack_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestPprofOptional(t *testing.T) {
	_, off := start(t, Config{Listen: ":0"}, io.Discard)
	if code, _ := call(t, "GET", off+"/debug/pprof/", ""); code != 404 {
		t.Errorf("pprof off: %d", code)
	}
	_, on := start(t, Config{Listen: ":0", Pprof: true}, io.Discard)
	if code, _ := call(t, "GET", on+"/debug/pprof/", ""); code != 200 {
		t.Errorf("pprof on: %d", code)
	}
}
