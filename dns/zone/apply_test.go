package zone

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// dump renders everything about a zone's tree that lookups depend on.
func dump(z *Zone) string {
	var names []string
	for n := range z.nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		n := z.nodes[name]
		var gs []string
		for _, g := range n.groups {
			var ids []string
			for _, s := range g.sets {
				ids = append(ids, fmt.Sprintf("%s/%d", s.Policy.SetID, len(s.RRs)))
			}
			slices.Sort(ids)
			gs = append(gs, fmt.Sprintf("%d%v", g.t, ids))
		}
		slices.Sort(gs)
		fmt.Fprintf(&b, "%s children=%d cut=%v %v\n", name, n.children, n.cut, gs)
	}
	for _, s := range z.sets {
		fmt.Fprintf(&b, "set %s %d %s\n", s.Name, s.Type, s.Policy.SetID)
	}
	fmt.Fprintf(&b, "size=%d serial=%d signed=%v\n", z.size, z.SOA.Serial, z.signed)
	return b.String()
}

func rrset(name string, t uint16, rdata string) *RRSet {
	rr, err := dns.NewRR(fmt.Sprintf("%s 60 IN %s %s", name, dns.TypeToString[t], rdata))
	if err != nil {
		panic(err)
	}
	return &RRSet{Name: name, Type: t, TTL: 60, RRs: []dns.RR{rr}}
}

// TestApplyMatchesBuild applies random changes with Apply and checks the
// result against a zone built from scratch with the same record sets.
func TestApplyMatchesBuild(t *testing.T) {
	rrs, err := Parse(strings.NewReader(head+"www IN A 192.0.2.1\na.b.c IN A 192.0.2.2\nsub IN NS ns.sub\nns.sub IN A 192.0.2.3\n"), "example.test.", "t")
	if err != nil {
		t.Fatal(err)
	}
	z, err := Build("example.test.", Group(rrs))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	labels := []string{"a", "b", "c", "www", "sub", "x"}
	types := []uint16{dns.TypeA, dns.TypeTXT, dns.TypeNS}
	rdata := map[uint16]string{dns.TypeA: "192.0.2.9", dns.TypeTXT: `"t"`, dns.TypeNS: "ns1.example.test."}
	for step := range 400 {
		var name string
		for range 1 + r.IntN(3) {
			name += labels[r.IntN(len(labels))] + "."
		}
		name += "example.test."
		typ := types[r.IntN(len(types))]
		var remove []Key
		var add []*RRSet
		if existing := z.Find(name, typ); len(existing) > 0 && r.IntN(2) == 0 {
			remove = append(remove, existing[0].Key())
		} else if len(existing) == 0 {
			add = append(add, rrset(name, typ, rdata[typ]))
		} else {
			remove = append(remove, existing[0].Key())
			add = append(add, rrset(name, typ, "192.0.2.77"))
			if typ != dns.TypeA {
				add[0] = rrset(name, typ, rdata[typ])
			}
		}
		nz, err := z.Apply(remove, add)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		want, err := Build("example.test.", slices.Clone(nz.Sets()))
		if err != nil {
			t.Fatalf("step %d: rebuild: %v", step, err)
		}
		if g, w := dump(nz), dump(want); g != w {
			t.Fatalf("step %d (remove %v add %v): Apply and Build differ:\nApply:\n%s\nBuild:\n%s", step, remove, add, g, w)
		}
		z = nz
	}
	// The old zone is never modified.
	old := z
	before := dump(old)
	z2, err := old.Apply([]Key{{Name: "www.example.test.", Type: dns.TypeA}}, []*RRSet{rrset("new.deep.example.test.", dns.TypeA, "192.0.2.8")})
	if err != nil && !strings.Contains(err.Error(), "no such") {
		t.Fatal(err)
	}
	if z2 == nil {
		z2, _ = old.Apply(nil, []*RRSet{rrset("new.deep.example.test.", dns.TypeA, "192.0.2.8")})
	}
	if dump(old) != before || z2 == nil {
		t.Fatal("Apply changed the zone it started from")
	}
}
