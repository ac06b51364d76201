// Package zone holds one authoritative zone in memory: record sets keyed by
// (name, type, set identifier) with their Route 53 routing attributes, a
// name tree that knows empty non-terminals, delegation points and
// wildcards, and the RFC 1034 §4.3.2 lookup that turns a question into the
// sections of an authoritative answer. A Zone is immutable once built;
// changes build a new one.
package zone

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// Alias points a record set at another record set (Route 53 alias records).
type Alias struct {
	// Zone is the hosted zone of the target; empty means the same zone.
	Zone string
	// Name is the target owner name (fully qualified).
	Name string
	// Type is the target type; zero means the alias record's own type.
	Type uint16
	// EvaluateTargetHealth makes the alias unhealthy when the target has no
	// healthy member.
	EvaluateTargetHealth bool
}

// CIDR ties a record set to a location of a CIDR collection (IP-based
// routing). Location "*" is the default location.
type CIDR struct {
	Collection string
	Location   string
}

// Policy is the Route 53 routing part of a record set. The zero value is a
// simple record set.
type Policy struct {
	SetID         string
	Weight        *int   // weighted routing when not nil (0..255)
	Failover      string // "PRIMARY" or "SECONDARY" for failover routing
	MultiValue    bool
	CIDR          CIDR // IP-based routing when Collection is set
	HealthCheckID string
	Alias         *Alias
	FailClosed    bool
}

// Kind names the routing policy of p.
func (p Policy) Kind() string {
	switch {
	case p.Weight != nil:
		return "weighted"
	case p.Failover != "":
		return "failover"
	case p.MultiValue:
		return "multivalue"
	case p.CIDR.Collection != "":
		return "cidr"
	default:
		return "simple"
	}
}

// RRSet is one record set. Records carry the set's owner name, class IN
// and TTL. An alias record set has no records.
type RRSet struct {
	Name   string // fully qualified, lower case
	Type   uint16
	TTL    uint32
	RRs    []dns.RR
	Policy Policy
}

// Key identifies a record set inside a zone.
type Key struct {
	Name  string
	Type  uint16
	SetID string
}

// Key returns s's key.
func (s *RRSet) Key() Key { return Key{s.Name, s.Type, s.Policy.SetID} }

// node is one name of the tree; an empty non-terminal has no groups.
type node struct {
	name     string
	groups   []group // a slice, not a map: nodes hold few types, and it is far smaller
	cut      bool    // holds NS and is not the apex: a delegation point
	children int32   // child nodes (to drop empty non-terminals in Apply)
}

// group is the record sets of one type at a node (several with set
// identifiers).
type group struct {
	t    uint16
	sets []*RRSet
}

func (n *node) get(t uint16) []*RRSet {
	for i := range n.groups {
		if n.groups[i].t == t {
			return n.groups[i].sets
		}
	}
	return nil
}

func (n *node) has(t uint16) bool { return n.get(t) != nil }

func (n *node) add(s *RRSet) {
	for i := range n.groups {
		if n.groups[i].t == s.Type {
			n.groups[i].sets = append(n.groups[i].sets, s)
			return
		}
	}
	n.groups = append(n.groups, group{t: s.Type, sets: []*RRSet{s}})
}

// Zone is an immutable zone.
type Zone struct {
	Origin string // fully qualified, lower case
	SOA    *dns.SOA
	nodes  map[string]*node
	sets   []*RRSet // every record set in canonical order
	size   int      // number of records
	signed bool     // has a DNSKEY at the apex
}

// Serial returns the SOA serial.
func (z *Zone) Serial() uint32 { return z.SOA.Serial }

// Sets returns every record set in canonical order (SOA first). The caller
// must not modify them.
func (z *Zone) Sets() []*RRSet { return z.sets }

// Records returns the number of records.
func (z *Zone) Records() int { return z.size }

// Lookup helpers used by the server for aliases and xfr.

// Find returns the record sets of (name, type), or nil.
func (z *Zone) Find(name string, t uint16) []*RRSet {
	n := z.nodes[strings.ToLower(name)]
	if n == nil {
		return nil
	}
	return n.get(t)
}

// Build checks sets and builds a zone. Records are grouped by the caller.
// It rejects: no SOA or several, CNAME beside other data, record sets
// whose owner lies outside origin, data below a delegation other than
// glue, mixed routing policies at one (name, type).
func Build(origin string, sets []*RRSet) (*Zone, error) {
	origin = dns.CanonicalName(origin)
	z := &Zone{Origin: origin, nodes: map[string]*node{}}
	var errs []error
	for _, s := range sets {
		if !dns.IsSubDomain(origin, s.Name) {
			errs = append(errs, fmt.Errorf("%s %s: owner is outside the zone %s", s.Name, dns.TypeToString[s.Type], origin))
			continue
		}
		n := z.ensure(s.Name)
		for _, o := range n.get(s.Type) {
			if o.Policy.SetID == s.Policy.SetID {
				errs = append(errs, fmt.Errorf("%s %s: duplicate record set (set identifier %q)", s.Name, dns.TypeToString[s.Type], s.Policy.SetID))
			}
			if o.Policy.Kind() != s.Policy.Kind() {
				errs = append(errs, fmt.Errorf("%s %s: routing policy %s mixed with %s", s.Name, dns.TypeToString[s.Type], s.Policy.Kind(), o.Policy.Kind()))
			}
		}
		n.add(s)
		z.sets = append(z.sets, s)
		z.size += len(s.RRs)
	}
	apex := z.nodes[origin]
	if apex == nil || len(apex.get(dns.TypeSOA)) != 1 || len(apex.get(dns.TypeSOA)[0].RRs) != 1 {
		errs = append(errs, fmt.Errorf("zone %s: exactly one SOA record at the apex is required", origin))
	} else {
		z.SOA = apex.get(dns.TypeSOA)[0].RRs[0].(*dns.SOA)
		z.signed = apex.has(dns.TypeDNSKEY)
	}
	for name, n := range z.nodes {
		if n.has(dns.TypeCNAME) && len(n.groups) > 1 {
			for _, g := range n.groups {
				if t := g.t; t != dns.TypeCNAME && t != dns.TypeRRSIG && t != dns.TypeNSEC {
					errs = append(errs, fmt.Errorf("%s: CNAME and other data (%s)", name, dns.TypeToString[t]))
					break
				}
			}
		}
		if n.has(dns.TypeNS) && name != origin {
			n.cut = true
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortStableFunc(z.sets, compareSets(origin))
	return z, nil
}

// compareSets orders the SOA first, then by canonical name and type.
func compareSets(origin string) func(a, b *RRSet) int {
	return func(a, b *RRSet) int {
		if as, bs := a.Type == dns.TypeSOA && a.Name == origin, b.Type == dns.TypeSOA && b.Name == origin; as != bs {
			if as {
				return -1
			}
			return 1
		}
		if c := CompareNames(a.Name, b.Name); c != 0 {
			return c
		}
		if a.Type != b.Type {
			return int(a.Type) - int(b.Type)
		}
		return strings.Compare(a.Policy.SetID, b.Policy.SetID)
	}
}

// CompareNames orders names canonically (RFC 4034 §6.1) for lower-case
// names, label by label from the right, without allocating.
func CompareNames(a, b string) int {
	a, b = strings.TrimSuffix(a, "."), strings.TrimSuffix(b, ".")
	for {
		if a == "" || b == "" {
			return len(a) - len(b)
		}
		i, j := strings.LastIndexByte(a, '.'), strings.LastIndexByte(b, '.')
		if c := strings.Compare(a[i+1:], b[j+1:]); c != 0 {
			return c
		}
		if i < 0 {
			a = ""
		} else {
			a = a[:i]
		}
		if j < 0 {
			b = ""
		} else {
			b = b[:j]
		}
	}
}

// ensure adds name and its ancestors up to the origin as nodes.
func (z *Zone) ensure(name string) *node {
	n := z.nodes[name]
	if n != nil {
		return n
	}
	n = &node{name: name}
	z.nodes[name] = n
	for p := name; p != z.Origin; {
		off, end := dns.NextLabel(p, 0)
		if end {
			break
		}
		p = p[off:]
		if pn, ok := z.nodes[p]; ok {
			pn.children++
			break
		}
		z.nodes[p] = &node{name: p, children: 1}
	}
	return n
}

// HasName reports whether name exists in the zone (possibly as an empty
// non-terminal).
func (z *Zone) HasName(name string) bool { return z.nodes[strings.ToLower(name)] != nil }
