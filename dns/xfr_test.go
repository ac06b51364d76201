package dnsserver

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/miekg/dns"
)

const xfrSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ=="

// TestNSDSecondary proves AXFR, IXFR, TSIG and NOTIFY with NSD as a real
// secondary: a change through the API shows up in NSD's answers.
func TestNSDSecondary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts NSD")
	}
	nsdPort := apptest.FreePort(t)
	cfg := testConfig(t)
	cfg.Transfer = TransferConfig{
		Allow:    []string{"127.0.0.0/8"},
		TSIGKeys: []TSIGKey{{Name: "xfr.", Secret: xfrSecret}},
		Notify:   []string{fmt.Sprintf("127.0.0.1:%d", nsdPort)},
	}
	srv := start(t, cfg)
	base := srv.adminURL
	if code, body := call(t, base, "POST", "/v1/zones", CreateZone{Name: "sec.test.", Nameservers: []string{"ns1.sec.test."}}, nil); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	mustChange(t, base, "sec.test", Change{"CREATE", a("www.sec.test.", 60, "192.0.2.1")}, Change{"CREATE", a("ns1.sec.test.", 60, "192.0.2.53")})
	_, dport, _ := net.SplitHostPort(srv.Addr())
	extra := fmt.Sprintf(`key:
  name: xfr.
  algorithm: hmac-sha256
  secret: %q
zone:
  name: sec.test.
  zonefile: %q
  request-xfr: 127.0.0.1@%s xfr.
  allow-notify: 127.0.0.1 xfr.
`, xfrSecret, filepath.Join(t.TempDir(), "sec.test.zone"), dport)
	nsd := startNSDPort(t, nil, extra, nsdPort)

	waitNSD := func(want string) time.Duration {
		t0 := time.Now()
		for {
			m := new(dns.Msg)
			m.SetQuestion("www.sec.test.", dns.TypeA)
			c := &dns.Client{Timeout: 500 * time.Millisecond}
			if r, _, err := c.Exchange(m, nsd); err == nil && strings.Join(answers(r), ",") == want {
				return time.Since(t0)
			}
			if time.Since(t0) > 30*time.Second {
				t.Fatalf("NSD never answered %s", want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("initial transfer after %v", waitNSD("192.0.2.1"))
	mustChange(t, base, "sec.test", Change{"UPSERT", a("www.sec.test.", 60, "192.0.2.2")})
	t.Logf("change seen by NSD after %v (NOTIFY + IXFR)", waitNSD("192.0.2.2"))
	mustChange(t, base, "sec.test", Change{"UPSERT", a("www.sec.test.", 60, "192.0.2.3")})
	t.Logf("second change seen by NSD after %v", waitNSD("192.0.2.3"))
	body := scrape(t, base)
	for _, w := range []string{`edgestack_dnsd_transfers_total{result="success",type="axfr"}`, `edgestack_dnsd_transfers_total{result="success",type="ixfr"}`} {
		if !strings.Contains(body, w) {
			t.Errorf("metrics lack %s", w)
		}
	}
}

func scrape(t *testing.T, base string) string {
	_, body := call(t, base, "GET", "/metrics", nil, nil)
	return body
}

// TestTransferACL checks that unsigned, badly signed and foreign requests
// are refused and a signed one gets the zone.
func TestTransferACL(t *testing.T) {
	cfg := testConfig(t)
	cfg.Transfer = TransferConfig{Allow: []string{"127.0.0.1/32"}, TSIGKeys: []TSIGKey{{Name: "xfr.", Secret: xfrSecret}}}
	srv := start(t, cfg)
	axfr := func(key, secret string, local net.IP) (int, int) {
		m := new(dns.Msg)
		m.SetAxfr("example.test.")
		tr := &dns.Transfer{}
		if key != "" {
			m.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
			tr.TsigSecret = map[string]string{key: secret}
		}
		d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: local}}
		conn, err := d.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		tr.Conn = &dns.Conn{Conn: conn}
		ch, err := tr.In(m, srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for env := range ch {
			if env.Error != nil {
				if strings.Contains(env.Error.Error(), "REFUSED") || strings.Contains(env.Error.Error(), "NOTAUTH") || strings.Contains(env.Error.Error(), "bad xfr rcode") {
					return -1, n
				}
				return -2, n
			}
			n += len(env.RR)
		}
		return 0, n
	}
	if code, n := axfr("xfr.", xfrSecret, net.IPv4(127, 0, 0, 1)); code != 0 || n < 30 {
		t.Errorf("signed AXFR: code %d, %d records", code, n)
	}
	if code, _ := axfr("", "", net.IPv4(127, 0, 0, 1)); code == 0 {
		t.Errorf("unsigned AXFR was served")
	}
	if code, _ := axfr("xfr.", "d3Jvbmc=", net.IPv4(127, 0, 0, 1)); code == 0 {
		t.Errorf("badly signed AXFR was served")
	}
	if code, _ := axfr("xfr.", xfrSecret, net.IPv4(127, 0, 0, 2)); code == 0 {
		t.Errorf("AXFR from outside transfer.allow was served")
	}
}

func TestIXFRFromJournal(t *testing.T) {
	cfg := testConfig(t)
	cfg.Transfer = TransferConfig{Allow: []string{"127.0.0.1/32"}}
	srv := start(t, cfg)
	var z zoneList
	call(t, srv.adminURL, "POST", "/v1/zones", CreateZone{Name: "ix.test."}, &z)
	mustChange(t, srv.adminURL, "ix.test", Change{"CREATE", a("www.ix.test.", 60, "192.0.2.1")})
	mustChange(t, srv.adminURL, "ix.test", Change{"UPSERT", a("www.ix.test.", 60, "192.0.2.2")}, Change{"CREATE", a("mail.ix.test.", 60, "192.0.2.9")})
	got := ixfr(t, srv.Addr(), "ix.test.", z.Serial+1)
	s1, s2 := z.Serial+1, z.Serial+2
	want := []string{fmt.Sprintf("SOA %d", s2), fmt.Sprintf("SOA %d", s1), "192.0.2.1", fmt.Sprintf("SOA %d", s2)}
	if len(got) != 7 || strings.Join(got[:4], ",") != strings.Join(want, ",") || got[6] != fmt.Sprintf("SOA %d", s2) {
		t.Fatalf("IXFR: %v", got)
	}
	if added := strings.Join(got[4:6], ","); !strings.Contains(added, "192.0.2.2") || !strings.Contains(added, "192.0.2.9") {
		t.Fatalf("IXFR additions: %v", got)
	}

	// A replacement by DELETE then CREATE in one batch: the difference is
	// the old set out, the new one in.
	mustChange(t, srv.adminURL, "ix.test", Change{"DELETE", a("www.ix.test.", 60, "192.0.2.2")}, Change{"CREATE", a("www.ix.test.", 60, "192.0.2.3")})
	got = ixfr(t, srv.Addr(), "ix.test.", s2)
	s3 := s2 + 1
	if want := []string{fmt.Sprintf("SOA %d", s3), fmt.Sprintf("SOA %d", s2), "192.0.2.2", fmt.Sprintf("SOA %d", s3), "192.0.2.3", fmt.Sprintf("SOA %d", s3)}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("IXFR of a DELETE then CREATE: %v, want %v", got, want)
	}
}

// ixfr asks addr for an IXFR of zone from serial and returns each record
// as "SOA serial" or its rdata.
func ixfr(t *testing.T, addr, zone string, serial uint32) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetIxfr(zone, serial, "ns1."+zone, "hostmaster."+zone)
	ch, err := (&dns.Transfer{}).In(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for env := range ch {
		if env.Error != nil {
			t.Fatal(env.Error)
		}
		for _, rr := range env.RR {
			if soa, ok := rr.(*dns.SOA); ok {
				got = append(got, fmt.Sprintf("SOA %d", soa.Serial))
			} else {
				got = append(got, strings.TrimPrefix(rr.String(), rr.Header().String()))
			}
		}
	}
	return got
}
