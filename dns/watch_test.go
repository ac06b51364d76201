package dnsserver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/config"
	"github.com/miekg/dns"
)

func TestZoneFileReloadKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "w.test.zone")
	head := "$ORIGIN w.test.\n$TTL 60\n@ IN SOA ns1 h %s 7200 900 1209600 60\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"
	write := func(serial, body string) {
		// A distinct size and time stamp make the change visible.
		if err := os.WriteFile(p, []byte(strings.Replace(head, "%s", serial, 1)+body), 0o644); err != nil {
			t.Fatal(err)
		}
		now := time.Now().Add(time.Duration(len(body)) * time.Second)
		_ = os.Chtimes(p, now, now)
	}
	write("1", "www IN A 192.0.2.1\n")
	cfg := testConfig(t)
	cfg.Zones = []ZoneConfig{{Name: "w.test.", File: p}}
	cfg.ZoneCheckInterval = config.Duration(50 * time.Millisecond)
	srv := start(t, cfg)
	waitAnswer(t, srv.Addr(), "www.w.test.", "192.0.2.1", 2*time.Second)
	write("2", "www IN A 192.0.2.2\nnew IN A 192.0.2.3\n")
	waitAnswer(t, srv.Addr(), "www.w.test.", "192.0.2.2", 5*time.Second)
	write("3", "www IN A 192.0.2.300\n; broken on line 6\n")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(scrape(t, srv.adminURL), `edgestack_dnsd_zone_loads_total{result="failure"} 1`) {
		if time.Now().After(deadline) {
			t.Fatal("broken zone file never noticed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := answers(query(t, srv.Addr(), "new.w.test.", dns.TypeA)); len(got) != 1 {
		t.Fatalf("last good version not kept: %v", got)
	}
}
