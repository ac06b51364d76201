package lb

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// backend is a real target: an HTTP server on loopback that names itself.
type backend struct {
	name string
	addr string
	hits atomic.Int64
	srv  *http.Server
	ln   net.Listener
	last atomic.Pointer[http.Request]
}

func newBackend(t *testing.T, name string, h http.HandlerFunc) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: ln.Addr().String(), ln: ln}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.last.Store(r)
		w.Header().Set("X-Backend", name)
		if h != nil {
			h(w, r)
			return
		}
		_, _ = io.WriteString(w, name)
	})}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// lbHarness is a running Service.
type lbHarness struct {
	t     *testing.T
	svc   *Service
	admin string
	token string
	dir   string
	reg   *prometheus.Registry
	fails chan error
}

// render fills a config template: {{.X}} from data, {{port "n"}} a free port.
func render(t *testing.T, text string, data any) string {
	t.Helper()
	ports := map[string]string{}
	var mu sync.Mutex
	tpl := template.Must(template.New("c").Funcs(template.FuncMap{"port": func(n string) string {
		mu.Lock()
		defer mu.Unlock()
		if p, ok := ports[n]; ok {
			return p
		}
		p := strconv.Itoa(apptest.FreePort(t))
		ports[n] = p
		return p
	}}).Parse(text))
	var b strings.Builder
	if err := tpl.Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func parseConfig(t *testing.T, yaml string) (*Config, error) {
	t.Helper()
	cfg := DefaultConfig()
	src, err := config.Decode("cfg.yaml", []byte(yaml), cfg)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, config.Annotate(err, src)
	}
	return cfg, nil
}

func startLB(t *testing.T, yaml string) *lbHarness {
	t.Helper()
	cfg, err := parseConfig(t, yaml)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	h := &lbHarness{t: t, token: "test-token", fails: make(chan error, 4), dir: t.TempDir()}
	cfg.Admin.Token = h.token
	var opts apptest.Options
	if os.Getenv("LB_TEST_LOG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	opts.Fail = func(err error) {
		select {
		case h.fails <- err:
		default:
		}
	}
	t.Cleanup(func() { // runs after the service has stopped
		select {
		case err := <-h.fails:
			t.Errorf("service reported a fatal error: %v", err)
		default:
		}
	})
	d := apptest.StartInProcess(t, "lbd", cfg, NewService, opts)
	h.svc, h.admin, h.reg = d.Service.(*Service), d.AdminURL, d.Registry
	return h
}

func (h *lbHarness) reload(yaml string) error {
	cfg, err := parseConfig(h.t, yaml)
	if err != nil {
		return err
	}
	cfg.Admin.Token = h.token
	return h.svc.Reload(context.Background(), cfg)
}

func (h *lbHarness) url(listener string) string {
	a := h.svc.Addr(listener)
	if a == nil {
		h.t.Fatalf("no listener %q", listener)
	}
	return "http://" + a.String()
}

// api calls the admin API.
func (h *lbHarness) api(method, path, body string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.admin+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *lbHarness) metrics() string {
	_, m := h.api("GET", "/metrics", "")
	return m
}

// get does one request with a fresh client and returns status and body.
func get(t *testing.T, c *http.Client, url string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var _ = fmt.Sprintf

// engines runs f once with each HTTP/1.1 engine of plain-http listeners.
func engines(t *testing.T, f func(t *testing.T)) {
	for _, e := range []string{"fast", "std"} {
		t.Run(e, func(t *testing.T) {
			testEngine = e
			defer func() { testEngine = "" }()
			f(t)
		})
	}
}
