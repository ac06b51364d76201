package dnsserver

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/admin"
	"github.com/edgestack/edgestack/internal/app"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

const testToken = "test-token"

// testServer is a dnsd started in-process on loopback.
type testServer struct {
	*Service
	adminURL string
	reg      *prometheus.Registry
}

// start runs dnsd with cfg (defaults filled in by the caller through
// testConfig) and stops it when the test ends.
func start(t testing.TB, cfg *Config) *testServer {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	reg := prometheus.NewRegistry()
	adm, err := admin.New(cfg.Admin, admin.Options{Logger: slog.New(slog.DiscardHandler), Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("DNSD_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	deps := app.Deps{Logger: logger, Registry: reg, Admin: adm, Info: app.Info{Name: "dnsd"}, Fail: func(err error) { t.Errorf("fatal: %v", err) }}
	svc, err := newService(deps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = adm.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = adm.Shutdown(ctx)
		_ = svc.Shutdown(ctx)
	})
	return &testServer{Service: svc, adminURL: "http://" + ln.Addr().String(), reg: reg}
}

// testConfig is a config listening on a free loopback port serving the
// testdata zones.
func testConfig(t testing.TB) *Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Admin.Token = testToken
	cfg.TCP.IdleTimeout = config.Duration(2 * time.Second)
	cfg.Zones = []ZoneConfig{
		{Name: "example.test.", File: filepath.Join("testdata", "example.test.zone")},
		{Name: "sub.example.test.", File: filepath.Join("testdata", "sub.example.test.zone")},
	}
	return cfg
}

// exchange sends m over proto ("udp" or "tcp") to addr. It retries
// timeouts and send errors a few times: on this shared machine the
// conntrack table sometimes fills up and sendto fails with EPERM.
func exchange(t testing.TB, proto, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto, Timeout: 3 * time.Second, UDPSize: 65535}
	var err error
	for attempt := range 20 {
		var r *dns.Msg
		if r, _, err = c.Exchange(m, addr); err == nil {
			return r
		}
		time.Sleep(time.Duration(attempt+1) * 20 * time.Millisecond)
	}
	t.Fatalf("%s %s %s: %v", proto, m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], err)
	return nil
}
