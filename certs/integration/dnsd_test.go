package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgestack/edgestack/certs/certsource"
	"github.com/edgestack/edgestack/certs/libdnsprovider"
	"github.com/edgestack/edgestack/certs/manager"
	"github.com/edgestack/edgestack/certs/pebbletest"
	dnsserver "github.com/edgestack/edgestack/dns"
	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/libdns/libdns"
)

const token = "dnsd-token"

// startDNSD runs a real dnsd in process with an API-managed zone.
func startDNSD(t *testing.T, zone string) (dnsAddr, adminURL string) {
	t.Helper()
	cfg := dnsserver.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Admin.Token = token
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d := apptest.StartInProcess(t, "dnsd", cfg, dnsserver.NewService, apptest.Options{})
	adminURL = d.AdminURL
	body, _ := json.Marshal(map[string]any{"name": zone, "soa_email": "hostmaster." + zone, "nameservers": []string{"ns1." + zone}})
	req, _ := http.NewRequest(http.MethodPost, adminURL+"/v1/zones", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		t.Fatalf("create zone: %s", resp.Status)
	}
	return d.Service.(interface{ Addr() string }).Addr(), adminURL
}

func rrsets(t *testing.T, adminURL, zone string) string {
	t.Helper()
	resp, err := http.Get(adminURL + "/v1/zones/" + zone + "/rrsets")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return buf.String()
}

// TestDNS01ThroughDNSD orders a wildcard and its apex at once through a
// real dnsd: certd's libdns provider publishes both TXT values through
// the change API, pebble's VA reads them from dnsd over DNS, and they are
// removed afterwards. A name outside dnsd's zones fails clearly.
func TestDNS01ThroughDNSD(t *testing.T) {
	dnsAddr, adminURL := startDNSD(t, "example.test.")
	peb := pebbletest.Start(t, pebbletest.Options{DNSServer: dnsAddr})
	dir := t.TempDir()
	mgr, err := manager.New(manager.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	settings := manager.Settings{
		Issuers:  []manager.Issuer{{Name: "pebble", Type: "acme", Directory: peb.URL, Roots: peb.Roots, Profile: "shortlived"}},
		DNS01:    manager.DNS01{URL: adminURL, Token: token, DNSServer: dnsAddr, Timeout: 5 * time.Second},
		RetryMin: time.Hour, RetryMax: time.Hour,
	}
	specs := []manager.Spec{
		{Name: "*.example.test", Challenge: manager.ChallengeDNS01, Source: manager.SourceConfig},
		{Name: "example.test", Challenge: manager.ChallengeDNS01, Source: manager.SourceConfig},
		{Name: "www.outside.test", Challenge: manager.ChallengeDNS01, Source: manager.SourceConfig},
	}
	if err := mgr.Start(context.Background(), settings, specs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = mgr.Stop(ctx)
	})
	wait := func(name string, ok func(manager.Record) bool) manager.Record {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r, _ := mgr.Record(name)
			if ok(r) {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v", name, r)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, n := range []string{"*.example.test", "example.test"} {
		r := wait(n, func(r manager.Record) bool { return r.State == manager.StateIssued || r.State == manager.StateFailed })
		if r.State != manager.StateIssued {
			t.Fatalf("%s: %s: %s", n, r.State, r.LastError)
		}
	}
	r := wait("www.outside.test", func(r manager.Record) bool { return r.State == manager.StateFailed })
	t.Logf("outside dnsd's zones: %s", r.LastError)
	if !strings.Contains(r.LastError, "dnsd") {
		t.Errorf("outside name: %q", r.LastError)
	}
	src, err := certsource.New(certsource.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if src.Lookup("a.example.test") == nil || src.Lookup("example.test") == nil {
		t.Fatalf("reader does not serve the new certificates: %v", src.Names())
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Contains(rrsets(t, adminURL, "example.test."), "_acme-challenge") {
		if time.Now().After(deadline) {
			t.Fatalf("challenge TXT left in dnsd: %s", rrsets(t, adminURL, "example.test."))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConcurrentProvidersKeepEachOthersValues: certd builds one libdns
// provider per certificate, so a wildcard and its apex (both
// _acme-challenge.<domain>) are written by different providers at once.
// Against the real dnsd, several such writers appending and then removing
// their own values concurrently lose none: every value is published while
// its writer's order would be validated, and nothing is left at the end.
// With a read-then-UPSERT provider, values went missing in most runs.
func TestConcurrentProvidersKeepEachOthersValues(t *testing.T) {
	_, adminURL := startDNSD(t, "example.test.")
	const writers, rounds = 6, 5
	// all runs op (append or delete) for every writer's own value at
	// once, each through a provider of its own, as certd's certificates
	// have.
	all := func(round int, op string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := &libdnsprovider.Provider{URL: adminURL, Token: token}
				rec := []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: fmt.Sprintf("round%d-writer%d", round, w)}}
				var err error
				if op == "append" {
					_, err = p.AppendRecords(context.Background(), "example.test.", rec)
				} else {
					_, err = p.DeleteRecords(context.Background(), "example.test.", rec)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %s: %v", round, op, err)
			}
		}
	}
	for round := range rounds {
		all(round, "append")
		sets := rrsets(t, adminURL, "example.test.")
		for w := range writers {
			if v := fmt.Sprintf("round%d-writer%d", round, w); !strings.Contains(sets, v) {
				t.Fatalf("round %d: value %s lost:\n%s", round, v, sets)
			}
		}
		all(round, "delete")
		if sets := rrsets(t, adminURL, "example.test."); strings.Contains(sets, "_acme-challenge") {
			t.Fatalf("round %d: values left after every writer removed its own:\n%s", round, sets)
		}
	}
}
