package dnsserver

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/miekg/dns"
)

// target is a real HTTP server that can be stopped and started on the
// same port. Its port is below the ephemeral range and it answers a token
// of its own, so that while it is stopped no other test's server or
// outgoing connection can pass for it.
type target struct {
	addr  string
	token string
	srv   *http.Server
}

func newTarget(t *testing.T) *target {
	tg := &target{token: fmt.Sprintf("target-%d", rand.Int64())}
	tg.addr = fmt.Sprintf("127.0.0.1:%d", apptest.FreePort(t))
	tg.start(t)
	t.Cleanup(tg.stop)
	return tg
}

func (tg *target) serve(ln net.Listener) {
	tg.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, tg.token) })}
	go tg.srv.Serve(ln)
}

func (tg *target) stop() {
	if tg.srv != nil {
		tg.srv.Close()
		tg.srv = nil
	}
}

func (tg *target) start(t *testing.T) {
	ln, err := net.Listen("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	tg.serve(ln)
}

func mustChange(t *testing.T, base, zone string, changes ...Change) {
	t.Helper()
	path := "/v1/zones/" + zone + "/changes"
	if z, view, ok := strings.Cut(zone, "?"); ok {
		path = "/v1/zones/" + z + "/changes?" + view
	}
	if code, body := call(t, base, "POST", path, ChangeBatch{Changes: changes}, nil); code != 200 {
		t.Fatalf("change: %d %s", code, body)
	}
}

func mustCheck(t *testing.T, base, id, cfg string) {
	t.Helper()
	if code, body := call(t, base, "POST", "/v1/healthchecks", HealthCheck{ID: id, Config: json.RawMessage(cfg)}, nil); code != 201 {
		t.Fatalf("health check: %d %s", code, body)
	}
}

func intp(i int) *int { return &i }

// waitAnswer polls until the answer's first record equals want, and
// returns how long it took.
func waitAnswer(t *testing.T, addr, name, want string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		r := query(t, addr, name, dns.TypeA)
		if got := strings.Join(answers(r), ","); got == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s did not become %s within %v (last %v)", name, want, limit, answers(r))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFailoverFollowsHealth(t *testing.T) {
	srv := start(t, testConfig(t))
	base := srv.adminURL
	call(t, base, "POST", "/v1/zones", CreateZone{Name: "r.test."}, nil)
	primary := newTarget(t)
	const interval, threshold = 200 * time.Millisecond, 2
	mustCheck(t, base, "primary", fmt.Sprintf(`{"kind":"http","address":%q,"body_contains":%q,"interval":"%s","timeout":"100ms","healthy_threshold":%d,"unhealthy_threshold":%d}`, primary.addr, primary.token, interval, threshold, threshold))
	p := a("www.r.test.", 60, "192.0.2.1")
	p.SetIdentifier, p.Failover, p.HealthCheckID = "p", "PRIMARY", "primary"
	s := a("www.r.test.", 60, "192.0.2.2")
	s.SetIdentifier, s.Failover = "s", "SECONDARY"
	mustChange(t, base, "r.test", Change{"CREATE", p}, Change{"CREATE", s})
	waitAnswer(t, srv.Addr(), "www.r.test.", "192.0.2.1", 5*time.Second)
	// Generous deadline; the measured time is logged, not asserted.
	bound := interval*threshold + 250*time.Millisecond
	primary.stop()
	down := waitAnswer(t, srv.Addr(), "www.r.test.", "192.0.2.2", 20*time.Second)
	primary.start(t)
	up := waitAnswer(t, srv.Addr(), "www.r.test.", "192.0.2.1", 20*time.Second)
	t.Logf("failover after stop: %v, failback after start: %v (interval %v x threshold %d + 250ms = %v)", down, up, interval, threshold, bound)
}

func TestRoutingPolicies(t *testing.T) {
	cfg := testConfig(t)
	cfg.CIDRCollections = map[string]map[string][]string{"net": {"lan": {"10.0.0.0/8"}, "lab": {"10.1.0.0/16"}}}
	cfg.Views = []ViewConfig{{Name: "inside", Sources: []string{"127.0.0.2/32"}}}
	srv := start(t, cfg)
	base := srv.adminURL
	call(t, base, "POST", "/v1/zones", CreateZone{Name: "r.test."}, nil)
	call(t, base, "POST", "/v1/zones", CreateZone{Name: "r.test.", View: "inside"}, nil)
	mustCheck(t, base, "down", `{"kind":"tcp","address":"127.0.0.1:1","interval":"100ms","timeout":"50ms","unhealthy_threshold":1}`)

	w := func(id string, weight int, ip, hc string) RRSet {
		s := a("w.r.test.", 60, ip)
		s.SetIdentifier, s.Weight, s.HealthCheckID = id, intp(weight), hc
		return s
	}
	mustChange(t, base, "r.test", Change{"CREATE", w("a", 1, "192.0.2.1", "")}, Change{"CREATE", w("b", 0, "192.0.2.2", "")}, Change{"CREATE", w("c", 3, "192.0.2.3", "")}, Change{"CREATE", w("d", 50, "192.0.2.4", "down")})
	var mv []Change
	for i := range 10 {
		s := a("mv.r.test.", 60, fmt.Sprintf("192.0.2.%d", 10+i))
		s.SetIdentifier, s.MultiValue = fmt.Sprint(i), true
		if i == 0 {
			s.HealthCheckID = "down"
		}
		mv = append(mv, Change{"CREATE", s})
	}
	mustChange(t, base, "r.test", mv...)
	cidr := func(id, loc, ip string) RRSet {
		s := a("geo.r.test.", 60, ip)
		s.SetIdentifier, s.CIDR = id, CIDRJSON{"net", loc}
		return s
	}
	mustChange(t, base, "r.test", Change{"CREATE", cidr("lan", "lan", "192.0.2.31")}, Change{"CREATE", cidr("lab", "lab", "192.0.2.32")}, Change{"CREATE", cidr("def", "*", "192.0.2.33")})
	closed := a("closed.r.test.", 60, "192.0.2.40")
	closed.HealthCheckID, closed.FailClosed = "down", true
	open := a("open.r.test.", 60, "192.0.2.41")
	open.HealthCheckID = "down"
	mustChange(t, base, "r.test", Change{"CREATE", closed}, Change{"CREATE", open},
		Change{"CREATE", a("target.r.test.", 30, "192.0.2.50")},
		Change{"CREATE", RRSet{Name: "r.test.", Type: "A", Alias: AliasJSON{Name: "target.r.test."}}},
		Change{"CREATE", RRSet{Name: "al.r.test.", Type: "A", Alias: AliasJSON{Name: "w.r.test.", EvaluateTargetHealth: true}}},
		Change{"CREATE", RRSet{Name: "other.r.test.", Type: "A", Alias: AliasJSON{Zone: "example.test.", Name: "www.example.test."}}})
	// Failover between an alias whose target is down (evaluated) and a plain record.
	fp := RRSet{Name: "fo.r.test.", Type: "A", SetIdentifier: "p", Failover: "PRIMARY", Alias: AliasJSON{Name: "closed.r.test.", EvaluateTargetHealth: true}}
	fs := a("fo.r.test.", 60, "192.0.2.60")
	fs.SetIdentifier, fs.Failover = "s", "SECONDARY"
	mustChange(t, base, "r.test", Change{"CREATE", fp}, Change{"CREATE", fs})
	mustChange(t, base, "r.test?view=inside", Change{"CREATE", a("w.r.test.", 60, "10.9.9.9")})

	// Let the "down" check reach unhealthy.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var list []HealthCheck
		call(t, base, "GET", "/v1/healthchecks", nil, &list)
		if len(list) == 1 && list[0].State == "unhealthy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check never went unhealthy: %+v", list)
		}
		time.Sleep(50 * time.Millisecond)
	}

	t.Run("weighted", func(t *testing.T) {
		counts := map[string]int{}
		for range 300 {
			r := query(t, srv.Addr(), "w.r.test.", dns.TypeA)
			if len(r.Answer) != 1 {
				t.Fatalf("weighted answer has %d records", len(r.Answer))
			}
			counts[answers(r)[0]]++
		}
		if counts["192.0.2.2"] != 0 || counts["192.0.2.4"] != 0 || counts["192.0.2.1"] == 0 || counts["192.0.2.3"] < counts["192.0.2.1"] {
			t.Fatalf("weighted counts %v: want weight 0 and unhealthy never, 3:1 otherwise", counts)
		}
		t.Logf("weighted 1:0:3 (+ unhealthy 50): %v", counts)
	})
	t.Run("multivalue", func(t *testing.T) {
		orders := map[string]bool{}
		for range 20 {
			r := query(t, srv.Addr(), "mv.r.test.", dns.TypeA)
			got := answers(r)
			if len(got) != 8 {
				t.Fatalf("multivalue: %d records, want 8", len(got))
			}
			for _, g := range got {
				if g == "192.0.2.10" {
					t.Fatalf("unhealthy value answered")
				}
			}
			orders[strings.Join(got, ",")] = true
		}
		if len(orders) < 2 {
			t.Errorf("multivalue order never changes")
		}
	})
	t.Run("cidr with ECS", func(t *testing.T) {
		for _, c := range []struct {
			subnet string
			want   string
			scope  uint8
		}{{"10.2.3.0/24", "192.0.2.31", 8}, {"10.1.3.0/24", "192.0.2.32", 16}, {"198.51.100.0/24", "192.0.2.33", 24}} {
			m := new(dns.Msg)
			m.SetQuestion("geo.r.test.", dns.TypeA)
			m.SetEdns0(1232, false)
			p := netip.MustParsePrefix(c.subnet)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(p.Bits()), Address: p.Addr().AsSlice()})
			r := exchange(t, "udp", srv.Addr(), m)
			if got := strings.Join(answers(r), ","); got != c.want {
				t.Errorf("ECS %s: %s, want %s", c.subnet, got, c.want)
			}
			var scope uint8 = 255
			for _, o := range r.IsEdns0().Option {
				if e, ok := o.(*dns.EDNS0_SUBNET); ok {
					scope = e.SourceScope
				}
			}
			if scope != c.scope {
				t.Errorf("ECS %s: scope %d, want %d", c.subnet, scope, c.scope)
			}
		}
		// Without ECS the source (127.0.0.1) matches nothing: the default.
		if got := answers(query(t, srv.Addr(), "geo.r.test.", dns.TypeA)); len(got) != 1 || got[0] != "192.0.2.33" {
			t.Errorf("no ECS: %v", got)
		}
	})
	t.Run("fail closed and fail open", func(t *testing.T) {
		if r := query(t, srv.Addr(), "closed.r.test.", dns.TypeA); len(r.Answer) != 0 || r.Rcode != dns.RcodeSuccess || len(r.Ns) != 1 {
			t.Errorf("fail closed: %v", r)
		}
		if got := answers(query(t, srv.Addr(), "open.r.test.", dns.TypeA)); len(got) != 1 {
			t.Errorf("fail open: %v", got)
		}
	})
	t.Run("alias", func(t *testing.T) {
		r := query(t, srv.Addr(), "r.test.", dns.TypeA)
		if len(r.Answer) != 1 || r.Answer[0].Header().Name != "r.test." || r.Answer[0].Header().Ttl != 30 || answers(r)[0] != "192.0.2.50" {
			t.Errorf("apex alias: %v", r)
		}
		if got := answers(query(t, srv.Addr(), "al.r.test.", dns.TypeA)); len(got) != 1 || got[0] == "192.0.2.2" {
			t.Errorf("alias to weighted: %v", got)
		}
		r = query(t, srv.Addr(), "other.r.test.", dns.TypeA)
		if got := strings.Join(answers(r), ","); got != "192.0.2.1,192.0.2.2" || r.Answer[0].Header().Ttl != 300 {
			t.Errorf("alias to another zone: %v", r)
		}
		if got := answers(query(t, srv.Addr(), "fo.r.test.", dns.TypeA)); len(got) != 1 || got[0] != "192.0.2.60" {
			t.Errorf("failover from an alias with an unhealthy target: %v", got)
		}
	})
	t.Run("view", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("w.r.test.", dns.TypeA)
		c := &dns.Client{Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}}}
		r, _, err := c.Exchange(m, srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if got := answers(r); len(got) != 1 || got[0] != "10.9.9.9" {
			t.Errorf("private view: %v", got)
		}
		if got := answers(query(t, srv.Addr(), "w.r.test.", dns.TypeA)); len(got) != 1 || got[0] == "10.9.9.9" {
			t.Errorf("public view: %v", got)
		}
	})
}
