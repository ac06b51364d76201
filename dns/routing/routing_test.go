package routing

import (
	"net/netip"
	"testing"

	"github.com/edgestack/edgestack/dns/zone"
	"github.com/edgestack/edgestack/internal/health"
	"github.com/miekg/dns"
)

type states map[string]health.State

func (s states) State(id string) (health.State, bool) { st, ok := s[id]; return st, ok }

func set(id, ip string, p zone.Policy) *zone.RRSet {
	rr, _ := dns.NewRR("x.test. 60 IN A " + ip)
	p.SetID = id
	return &zone.RRSet{Name: "x.test.", Type: dns.TypeA, TTL: 60, RRs: []dns.RR{rr}, Policy: p}
}

func ip(rrs []dns.RR) string {
	if len(rrs) != 1 {
		return ""
	}
	return rrs[0].(*dns.A).A.String()
}

func w(n int) *int { return &n }

func TestPick(t *testing.T) {
	coll := NewCollection(map[string][]netip.Prefix{"a": {netip.MustParsePrefix("10.0.0.0/8")}, "b": {netip.MustParsePrefix("10.1.0.0/16")}})
	type tc struct {
		name   string
		health states
		sets   []*zone.RRSet
		client Client
		want   map[string]bool // acceptable single answers; empty: NODATA
	}
	cases := []tc{
		{name: "failover primary healthy", health: states{"p": health.Healthy},
			sets: []*zone.RRSet{set("p", "192.0.2.1", zone.Policy{Failover: "PRIMARY", HealthCheckID: "p"}), set("s", "192.0.2.2", zone.Policy{Failover: "SECONDARY"})}, want: map[string]bool{"192.0.2.1": true}},
		{name: "failover primary unknown counts healthy", health: states{},
			sets: []*zone.RRSet{set("p", "192.0.2.1", zone.Policy{Failover: "PRIMARY", HealthCheckID: "p"}), set("s", "192.0.2.2", zone.Policy{Failover: "SECONDARY"})}, want: map[string]bool{"192.0.2.1": true}},
		{name: "failover primary down", health: states{"p": health.Unhealthy},
			sets: []*zone.RRSet{set("p", "192.0.2.1", zone.Policy{Failover: "PRIMARY", HealthCheckID: "p"}), set("s", "192.0.2.2", zone.Policy{Failover: "SECONDARY"})}, want: map[string]bool{"192.0.2.2": true}},
		{name: "failover both down answers primary", health: states{"p": health.Unhealthy, "s": health.Unhealthy},
			sets: []*zone.RRSet{set("p", "192.0.2.1", zone.Policy{Failover: "PRIMARY", HealthCheckID: "p"}), set("s", "192.0.2.2", zone.Policy{Failover: "SECONDARY", HealthCheckID: "s"})}, want: map[string]bool{"192.0.2.1": true}},
		{name: "failover both down, primary fails closed", health: states{"p": health.Unhealthy, "s": health.Unhealthy},
			sets: []*zone.RRSet{set("p", "192.0.2.1", zone.Policy{Failover: "PRIMARY", HealthCheckID: "p", FailClosed: true}), set("s", "192.0.2.2", zone.Policy{Failover: "SECONDARY", HealthCheckID: "s"})}, want: map[string]bool{"192.0.2.2": true}},
		{name: "weighted all zero is uniform", sets: []*zone.RRSet{set("a", "192.0.2.1", zone.Policy{Weight: w(0)}), set("b", "192.0.2.2", zone.Policy{Weight: w(0)})}, want: map[string]bool{"192.0.2.1": true, "192.0.2.2": true}},
		{name: "weighted zero never chosen beside positive", sets: []*zone.RRSet{set("a", "192.0.2.1", zone.Policy{Weight: w(0)}), set("b", "192.0.2.2", zone.Policy{Weight: w(1)})}, want: map[string]bool{"192.0.2.2": true}},
		{name: "weighted all unhealthy fails open", health: states{"a": health.Unhealthy, "b": health.Unhealthy},
			sets: []*zone.RRSet{set("a", "192.0.2.1", zone.Policy{Weight: w(1), HealthCheckID: "a"}), set("b", "192.0.2.2", zone.Policy{Weight: w(1), HealthCheckID: "b"})}, want: map[string]bool{"192.0.2.1": true, "192.0.2.2": true}},
		{name: "weighted all unhealthy and fail closed", health: states{"a": health.Unhealthy},
			sets: []*zone.RRSet{set("a", "192.0.2.1", zone.Policy{Weight: w(1), HealthCheckID: "a", FailClosed: true})}},
		{name: "cidr longest prefix", client: Client{Addr: netip.MustParseAddr("10.1.2.3")},
			sets: []*zone.RRSet{set("a", "192.0.2.1", zone.Policy{CIDR: zone.CIDR{Collection: "c", Location: "a"}}), set("b", "192.0.2.2", zone.Policy{CIDR: zone.CIDR{Collection: "c", Location: "b"}})}, want: map[string]bool{"192.0.2.2": true}},
		{name: "cidr ECS wins over source", client: Client{Addr: netip.MustParseAddr("10.1.2.3"), ECS: netip.MustParsePrefix("10.9.0.0/16")},
			sets: []*zone.RRSet{set("a", "192.0.2.1", zone.Policy{CIDR: zone.CIDR{Collection: "c", Location: "a"}}), set("b", "192.0.2.2", zone.Policy{CIDR: zone.CIDR{Collection: "c", Location: "b"}})}, want: map[string]bool{"192.0.2.1": true}},
		{name: "cidr no match no default", client: Client{Addr: netip.MustParseAddr("192.168.1.1")},
			sets: []*zone.RRSet{set("a", "192.0.2.1", zone.Policy{CIDR: zone.CIDR{Collection: "c", Location: "a"}})}},
		{name: "cidr unhealthy match falls to default", health: states{"a": health.Unhealthy}, client: Client{Addr: netip.MustParseAddr("10.0.0.1")},
			sets: []*zone.RRSet{set("a", "192.0.2.1", zone.Policy{CIDR: zone.CIDR{Collection: "c", Location: "a"}, HealthCheckID: "a"}), set("d", "192.0.2.9", zone.Policy{CIDR: zone.CIDR{Collection: "c", Location: "*"}})}, want: map[string]bool{"192.0.2.9": true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &Router{Health: c.health, Collections: map[string]*Collection{"c": coll}}
			if c.health == nil {
				r.Health = states{}
			}
			seen := map[string]bool{}
			for range 200 {
				d := &Decision{}
				got := ip(r.Picker(nil, c.client, d)(c.sets))
				if len(c.want) == 0 {
					if got != "" {
						t.Fatalf("got %s, want NODATA", got)
					}
					continue
				}
				if !c.want[got] {
					t.Fatalf("got %q, want one of %v", got, c.want)
				}
				seen[got] = true
			}
			if len(c.want) > 1 && len(seen) != len(c.want) {
				t.Errorf("saw only %v of %v", seen, c.want)
			}
		})
	}
}
