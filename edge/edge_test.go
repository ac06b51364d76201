package edge

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"github.com/edgestack/edgestack/internal/admin"
	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// testEdge is a started edged on loopback.
type testEdge struct {
	t     testing.TB
	svc   *Service
	base  string // http://127.0.0.1:port
	admin *admin.Server
	reg   *prometheus.Registry
	adm   string
}

const testToken = "test-token-0123456789"

// startEdge renders cfgTmpl ({{.Origin}}, {{.Dir}} and any extra vars),
// validates it and starts a service.
func startEdge(t testing.TB, cfgTmpl string, vars map[string]string) *testEdge {
	t.Helper()
	if vars == nil {
		vars = map[string]string{}
	}
	if _, ok := vars["Dir"]; !ok {
		vars["Dir"] = t.TempDir()
	}
	var b bytes.Buffer
	head := "listeners:\n  - address: 127.0.0.1:0\ncache:\n  max_size: 64MiB\n  max_object_size: 1MiB\n"
	if strings.Contains(cfgTmpl, "listeners:") {
		head = ""
	}
	tpl := template.Must(template.New("cfg").Parse(head + cfgTmpl))
	if err := tpl.Execute(&b, vars); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Admin.Token = testToken
	src, err := config.Decode("test.yaml", b.Bytes(), cfg)
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, b.String())
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validate: %v\n%s", config.Annotate(err, src), b.String())
	}
	return startConfig(t, cfg)
}

func startConfig(t testing.TB, cfg *Config) *testEdge {
	t.Helper()
	var opts apptest.Options
	if testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d := apptest.StartInProcess(t, "edged", cfg, New, opts)
	te := &testEdge{t: t, svc: d.Service, admin: d.Admin, reg: d.Registry, adm: d.AdminURL}
	te.base = "http://" + d.Service.Addrs()[0].String()
	return te
}

type resp struct {
	code   int
	header http.Header
	body   string
}

func (r resp) xcache() string { return strings.TrimSuffix(r.header.Get("X-Cache"), " from edged") }

var client = &http.Client{
	Transport:     &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 100},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       20 * time.Second,
}

// do sends method path with header lines "K: V".
func (te *testEdge) do(method, path string, hdrs ...string) resp {
	te.t.Helper()
	req, err := http.NewRequest(method, te.base+path, nil)
	if err != nil {
		te.t.Fatal(err)
	}
	for _, h := range hdrs {
		k, v, _ := strings.Cut(h, ":")
		if strings.EqualFold(k, "Host") {
			req.Host = strings.TrimSpace(v)
			continue
		}
		req.Header.Add(k, strings.TrimSpace(v))
	}
	res, err := client.Do(req)
	if err != nil {
		te.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, string(body)}
}

func (te *testEdge) get(path string, hdrs ...string) resp { return te.do("GET", path, hdrs...) }

// wait lets ristretto apply pending sets.
func (te *testEdge) wait() { te.svc.Store().Wait() }

// origin is a scriptable test origin counting requests per path.
type testOrigin struct {
	*httptest.Server
	mu      sync.Mutex
	hits    map[string]int
	total   atomic.Int64
	handler http.HandlerFunc
	last    atomic.Pointer[http.Request]
}

func newOrigin(t testing.TB, h http.HandlerFunc) *testOrigin {
	o := &testOrigin{hits: map[string]int{}, handler: h}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.hits[r.URL.Path]++
		o.mu.Unlock()
		o.total.Add(1)
		o.last.Store(r)
		o.handler(w, r)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *testOrigin) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[path]
}

func oneOrigin(o *testOrigin, behavior string) string {
	return fmt.Sprintf(`distributions:
  - name: d
    domains: ["*"]
    origins:
      - name: o
        url: %s
    default_behavior:
      origin: o
%s`, o.URL, behavior)
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mustGather(t *testing.T, te *testEdge) []*dto.MetricFamily {
	t.Helper()
	mfs, err := te.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func TestMain(m *testing.M) {
	// Tests start many services in one process: leave the collector's
	// process-wide settings alone (the memory benchmark checks them).
	os.Setenv("GOGC", "100")
	os.Setenv("GOMEMLIMIT", "off")
	os.Exit(m.Run())
}
