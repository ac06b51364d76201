package dnsserver

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func TestMetricsLint(t *testing.T) {
	srv := start(t, testConfig(t))
	query(t, srv.Addr(), "www.example.test.", dns.TypeA)
	query(t, srv.Addr(), "www.example.test.", dns.TypeA)
	query(t, srv.Addr(), "example.org.", dns.TypeA)
	problems, err := promlint.NewWithMetricFamilies(must(srv.reg.Gather())).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	body := scrape(t, srv.adminURL)
	for _, w := range []string{
		`edgestack_dnsd_queries_total{proto="udp",rcode="NOERROR"} 2`,
		`edgestack_dnsd_queries_total{proto="udp",rcode="REFUSED"} 1`,
		`edgestack_dnsd_fast_path_hits_total 1`,
		`edgestack_dnsd_zones 2`,
		`edgestack_dnsd_zone_serial{view="",zone="example.test."} 2.026112601e+09`,
		`edgestack_dnsd_response_duration_seconds_bucket{proto="udp"`,
	} {
		if !strings.Contains(body, w) {
			t.Errorf("metrics lack %s", w)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
