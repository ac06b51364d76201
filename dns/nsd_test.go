package dnsserver

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/miekg/dns"
)

const nsdPath = "/usr/sbin/nsd"

// startNSD runs NSD on a free loopback port serving the testdata zones
// with minimal-responses, and returns its address.
func startNSD(t *testing.T, zones []ZoneConfig, extra string) string {
	t.Helper()
	return startNSDPort(t, zones, extra, 0)
}

// startNSDPort is startNSD on a given port (0: a free one). Without zones
// it waits for any answer rather than for an SOA.
func startNSDPort(t *testing.T, zones []ZoneConfig, extra string, port int) string {
	t.Helper()
	if _, err := os.Stat(nsdPath); err != nil {
		t.Skipf("NSD is not installed (%s): apt-get install nsd to run the differential test", nsdPath)
	}
	dir := t.TempDir()
	if port == 0 {
		port = apptest.FreePort(t)
	}
	abs, _ := filepath.Abs("testdata")
	var zs strings.Builder
	for _, z := range zones {
		f, _ := filepath.Abs(z.File)
		fmt.Fprintf(&zs, "zone:\n  name: %q\n  zonefile: %q\n", z.Name, f)
	}
	conf := fmt.Sprintf(`server:
  ip-address: 127.0.0.1@%[2]d
  port: %[2]d
  zonesdir: %[3]q
  username: ""
  chroot: ""
  pidfile: %[1]q
  zonelistfile: "%[4]s/zone.list"
  xfrdfile: "%[4]s/xfrd.state"
  xfrdir: %[4]q
  logfile: "%[4]s/nsd.log"
  database: ""
  minimal-responses: yes
  hide-version: yes
  server-count: 1
  verbosity: 1
  refuse-any: no
  ipv4-edns-size: 1232
remote-control:
  control-enable: no
%[5]s%[6]s`, filepath.Join(dir, "nsd.pid"), port, abs, dir, zs.String(), extra)
	cf := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nsdPath, "-d", "-c", cf)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "nsd.log"))
			t.Logf("nsd output:\n%s\n%s", out.String(), log)
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := new(dns.Msg)
		m.SetQuestion("example.test.", dns.TypeSOA)
		if len(zones) > 0 {
			m.SetQuestion(zones[0].Name, dns.TypeSOA)
		}
		c := &dns.Client{Timeout: 200 * time.Millisecond}
		if r, _, err := c.Exchange(m, addr); err == nil && (r.Rcode == dns.RcodeSuccess || len(zones) == 0) {
			return addr
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "nsd.log"))
			t.Fatalf("NSD did not answer within 15s:\n%s\n%s", out.String(), log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// diffCase is one query sent to both servers.
type diffCase struct {
	name  string
	qname string
	qtype uint16
	edns  bool
	do    bool
	size  uint16 // EDNS payload size; 0 means 1232
	tcp   bool
	rd    bool
	cd    bool
	mod   func(*dns.Msg) // changes the query further
	// intended names a difference from NSD we mean to have, and why; the
	// case then only logs the difference.
	intended string
}

var diffCases = []diffCase{
	{name: "apex SOA", qname: "example.test.", qtype: dns.TypeSOA},
	{name: "apex NS", qname: "example.test.", qtype: dns.TypeNS},
	{name: "apex MX", qname: "example.test.", qtype: dns.TypeMX, edns: true},
	{name: "A two records", qname: "www.example.test.", qtype: dns.TypeA},
	{name: "question case preserved", qname: "WwW.ExAmPlE.TeSt.", qtype: dns.TypeA, edns: true},
	{name: "AAAA", qname: "www.example.test.", qtype: dns.TypeAAAA},
	{name: "NODATA", qname: "www.example.test.", qtype: dns.TypeMX},
	{name: "NXDOMAIN below existing name", qname: "nope.www.example.test.", qtype: dns.TypeA},
	{name: "NXDOMAIN with EDNS", qname: "nope.mail.example.test.", qtype: dns.TypeA, edns: true},
	{name: "CNAME", qname: "alias.example.test.", qtype: dns.TypeA},
	{name: "CNAME asked for CNAME", qname: "alias.example.test.", qtype: dns.TypeCNAME},
	{name: "CNAME chain", qname: "chain1.example.test.", qtype: dns.TypeA},
	{name: "CNAME chain NODATA at the end", qname: "chain1.example.test.", qtype: dns.TypeMX},
	{name: "CNAME to a missing name", qname: "dangling.example.test.", qtype: dns.TypeA},
	{name: "CNAME out of zone", qname: "outside.example.test.", qtype: dns.TypeA},
	{name: "CNAME loop", qname: "loop1.example.test.", qtype: dns.TypeA},
	{name: "wildcard A", qname: "x.wild.example.test.", qtype: dns.TypeA},
	{name: "wildcard deeper", qname: "x.y.wild.example.test.", qtype: dns.TypeTXT},
	{name: "wildcard NODATA", qname: "x.wild.example.test.", qtype: dns.TypeAAAA},
	{name: "wildcard does not cover existing name", qname: "sub.wild.example.test.", qtype: dns.TypeTXT},
	{name: "literal * owner", qname: "*.wild.example.test.", qtype: dns.TypeA},
	{name: "apex wildcard MX", qname: "random.example.test.", qtype: dns.TypeMX},
	{name: "apex wildcard NODATA", qname: "random.example.test.", qtype: dns.TypeA},
	{name: "empty non-terminal NODATA", qname: "b.ent.example.test.", qtype: dns.TypeA},
	{name: "empty non-terminal blocks wildcard", qname: "ent.example.test.", qtype: dns.TypeMX},
	{name: "below empty non-terminal", qname: "x.b.ent.example.test.", qtype: dns.TypeA},
	{name: "wildcard CNAME", qname: "foo.cname.example.test.", qtype: dns.TypeA},
	{name: "referral", qname: "child.example.test.", qtype: dns.TypeA},
	{name: "referral below cut", qname: "www.child.example.test.", qtype: dns.TypeA},
	{name: "referral NS at cut", qname: "child.example.test.", qtype: dns.TypeNS},
	{name: "referral with DO has DS", qname: "www.child.example.test.", qtype: dns.TypeA, edns: true, do: true},
	{name: "glue not answered authoritatively", qname: "ns1.child.example.test.", qtype: dns.TypeA},
	{name: "DS from the parent side", qname: "child.example.test.", qtype: dns.TypeDS},
	{name: "DS at a cut without DS", qname: "other.example.test.", qtype: dns.TypeDS},
	{name: "referral without glue", qname: "other.example.test.", qtype: dns.TypeA},
	{name: "child zone served here", qname: "host.sub.example.test.", qtype: dns.TypeA},
	{name: "child apex SOA", qname: "sub.example.test.", qtype: dns.TypeSOA},
	{name: "DS of a served child from the parent", qname: "sub.example.test.", qtype: dns.TypeDS},
	{name: "refused outside zones", qname: "example.org.", qtype: dns.TypeA},
	{name: "refused with EDNS", qname: "example.org.", qtype: dns.TypeA, edns: true},
	{name: "RD copied, RA clear", qname: "www.example.test.", qtype: dns.TypeA, rd: true},
	{name: "CD", qname: "www.example.test.", qtype: dns.TypeA, cd: true, edns: true},
	{name: "DO echoed", qname: "www.example.test.", qtype: dns.TypeA, edns: true, do: true},
	{name: "unknown type", qname: "unknown.example.test.", qtype: 65400},
	{name: "unknown type NODATA", qname: "www.example.test.", qtype: 65401},
	{name: "big TXT truncated without EDNS", qname: "big.example.test.", qtype: dns.TypeTXT},
	{name: "big TXT fits EDNS", qname: "big.example.test.", qtype: dns.TypeTXT, edns: true},
	{name: "big TXT small EDNS", qname: "big.example.test.", qtype: dns.TypeTXT, edns: true, size: 512},
	{name: "big TXT over TCP", qname: "big.example.test.", qtype: dns.TypeTXT, tcp: true},
	{name: "TCP", qname: "www.example.test.", qtype: dns.TypeA, tcp: true},
	{name: "$INCLUDE", qname: "included.example.test.", qtype: dns.TypeA},
	{name: "ANY (RFC 8482: one RRset)", qname: "www.example.test.", qtype: dns.TypeANY},
	{name: "ANY at the apex over TCP", qname: "example.test.", qtype: dns.TypeANY, tcp: true},
	{name: "ANY on a missing name", qname: "nope.www.example.test.", qtype: dns.TypeANY},
	{name: "class CH refused", qname: "version.bind.", qtype: dns.TypeTXT, mod: func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }},
	{name: "EDNS version 1 gets BADVERS", qname: "www.example.test.", qtype: dns.TypeA, edns: true, mod: func(m *dns.Msg) { m.IsEdns0().SetVersion(1) }},
	{name: "opcode STATUS not implemented", qname: "www.example.test.", qtype: dns.TypeA, mod: func(m *dns.Msg) { m.Opcode = dns.OpcodeStatus }},
	{name: "two questions", qname: "www.example.test.", qtype: dns.TypeA, mod: func(m *dns.Msg) {
		m.Question = append(m.Question, dns.Question{Name: "mail.example.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	}},
	{name: "unknown EDNS option ignored", qname: "www.example.test.", qtype: dns.TypeA, edns: true, mod: func(m *dns.Msg) {
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1, 2}})
	}},
	{name: "tiny EDNS size treated as 512", qname: "big.example.test.", qtype: dns.TypeTXT, edns: true, size: 100},
	{name: "AXFR over UDP", qname: "example.test.", qtype: dns.TypeAXFR},
}

func (c diffCase) msg() *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(c.qname, c.qtype)
	m.RecursionDesired = c.rd
	m.CheckingDisabled = c.cd
	defer func() {
		if c.mod != nil {
			c.mod(m)
		}
	}()
	if c.edns {
		size := c.size
		if size == 0 {
			size = 1232
		}
		m.SetEdns0(size, c.do)
	}
	return m
}

// describe renders the parts of an answer that must match.
func describe(r *dns.Msg) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rcode=%s aa=%v tc=%v rd=%v ra=%v ad=%v cd=%v\n", dns.RcodeToString[r.Rcode], r.Authoritative, r.Truncated, r.RecursionDesired, r.RecursionAvailable, r.AuthenticatedData, r.CheckingDisabled)
	for _, q := range r.Question {
		fmt.Fprintf(&b, "question %s %s\n", q.Name, dns.TypeToString[q.Qtype])
	}
	sec := func(name string, rrs []dns.RR) {
		var lines []string
		for _, rr := range rrs {
			if o, ok := rr.(*dns.OPT); ok {
				lines = append(lines, fmt.Sprintf("OPT size=%d do=%v version=%d", o.UDPSize(), o.Do(), o.Version()))
				continue
			}
			lines = append(lines, strings.ToLower(rr.String()))
		}
		slices.Sort(lines)
		for _, l := range lines {
			fmt.Fprintf(&b, "%s %s\n", name, l)
		}
	}
	sec("answer", r.Answer)
	sec("authority", r.Ns)
	sec("additional", r.Extra)
	return b.String()
}

// TestDifferentialNSD sends every case to NSD and to dnsd serving the same
// zone files and fails on any difference not listed as intended.
func TestDifferentialNSD(t *testing.T) {
	if testing.Short() {
		t.Skip("starts NSD")
	}
	cfg := testConfig(t)
	nsd := startNSD(t, cfg.Zones, "")
	srv := start(t, cfg)
	for _, c := range diffCases {
		t.Run(c.name, func(t *testing.T) {
			proto := "udp"
			if c.tcp {
				proto = "tcp"
			}
			want := exchange(t, proto, nsd, c.msg())
			got := exchange(t, proto, srv.Addr(), c.msg())
			// Ask twice: the second answer comes from the fast path.
			again := exchange(t, proto, srv.Addr(), c.msg())
			w, g, a := describe(want), describe(got), describe(again)
			if g != a {
				t.Errorf("fast path answer differs from the first:\nfirst:\n%s\nagain:\n%s", g, a)
			}
			if len(got.Question) == 1 && got.Question[0].Name != c.qname {
				t.Errorf("question case: got %q, want %q", got.Question[0].Name, c.qname)
			}
			if w == g {
				if c.intended != "" {
					t.Logf("listed as intended (%s) but no difference", c.intended)
				}
				return
			}
			if c.intended != "" {
				t.Logf("intended difference (%s):\nNSD:\n%s\ndnsd:\n%s", c.intended, w, g)
				return
			}
			t.Errorf("differs from NSD:\nNSD:\n%s\ndnsd:\n%s", w, g)
		})
	}
}
