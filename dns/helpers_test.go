package dnsserver

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
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
	var opts apptest.Options
	if os.Getenv("DNSD_TEST_LOG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	d := apptest.StartInProcess(t, "dnsd", cfg, newService, opts)
	return &testServer{Service: d.Service, adminURL: d.AdminURL, reg: d.Registry}
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
