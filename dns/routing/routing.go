// Package routing implements Route 53 routing policies over the record
// sets of one (name, type): simple, weighted, failover, multivalue answer
// and IP-based (CIDR collections, with EDNS Client Subnet), aliases, health
// checks with fail-open and fail-closed.
package routing

import (
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/edgestack/edgestack/dns/zone"
	"github.com/edgestack/edgestack/internal/health"
	"github.com/miekg/dns"
)

// MaxMultiValue is how many records a multivalue answer holds at most.
const MaxMultiValue = 8

// Health reads the state of a health check. Unknown counts as healthy.
type Health interface {
	State(id string) (health.State, bool)
}

// Collection is a named CIDR collection: prefixes mapped to locations.
type Collection struct {
	entries []entry // longest prefix first
}

type entry struct {
	prefix   netip.Prefix
	location string
}

// NewCollection builds a collection from location → prefixes.
func NewCollection(locations map[string][]netip.Prefix) *Collection {
	c := &Collection{}
	for loc, ps := range locations {
		for _, p := range ps {
			c.entries = append(c.entries, entry{p.Masked(), loc})
		}
	}
	slices.SortStableFunc(c.entries, func(a, b entry) int { return b.prefix.Bits() - a.prefix.Bits() })
	return c
}

// Match returns the location of the longest prefix holding a.
func (c *Collection) Match(a netip.Addr) (string, int, bool) {
	a = a.Unmap()
	for _, e := range c.entries {
		if e.prefix.Contains(a) {
			return e.location, e.prefix.Bits(), true
		}
	}
	return "", 0, false
}

// Client is who asks: the source address, or the EDNS Client Subnet when
// the query carried one.
type Client struct {
	Addr netip.Addr
	// ECS is the client subnet of the query, if any.
	ECS netip.Prefix
}

// Decision collects what the picks of one answer depended on.
type Decision struct {
	// Varies is set when the answer may differ between identical queries
	// (random choice, source address): it must not be cached.
	Varies bool
	// Scope is the ECS scope prefix length to echo (RFC 7871 §7.2.1).
	Scope int
}

// Resolver finds the record sets an alias points at: (zone or "" for the
// alias's own zone, name, type).
type Resolver func(from *zone.Zone, a *zone.Alias, t uint16) (*zone.Zone, []*zone.RRSet)

// Router holds what picking needs; it is immutable and shared.
type Router struct {
	Health      Health
	Collections map[string]*Collection
	Resolve     Resolver
}

// Picker returns a zone.Picker for one query against z.
func (r *Router) Picker(z *zone.Zone, c Client, d *Decision) zone.Picker {
	return func(sets []*zone.RRSet) []dns.RR { return r.pick(z, sets, c, d, 0) }
}

const maxAliasDepth = 4

func (r *Router) pick(z *zone.Zone, sets []*zone.RRSet, c Client, d *Decision, depth int) []dns.RR {
	if len(sets) == 0 {
		return nil
	}
	if len(sets) == 1 && sets[0].Policy.HealthCheckID == "" && sets[0].Policy.Alias == nil && sets[0].Policy.CIDR.Collection == "" {
		return sets[0].RRs
	}
	switch sets[0].Policy.Kind() {
	case "weighted":
		cand := r.candidates(z, sets, depth)
		if len(cand) == 0 {
			return nil
		}
		if len(cand) > 1 {
			d.Varies = true
		}
		return r.records(z, weighted(cand), c, d, depth)
	case "failover":
		var primary, secondary *zone.RRSet
		for _, s := range sets {
			if s.Policy.Failover == "PRIMARY" {
				primary = s
			} else {
				secondary = s
			}
		}
		switch {
		case primary != nil && r.healthy(z, primary, depth):
			return r.records(z, primary, c, d, depth)
		case secondary != nil && r.healthy(z, secondary, depth):
			return r.records(z, secondary, c, d, depth)
		case primary != nil && !primary.Policy.FailClosed:
			return r.records(z, primary, c, d, depth)
		case secondary != nil && !secondary.Policy.FailClosed:
			return r.records(z, secondary, c, d, depth)
		}
		return nil
	case "multivalue":
		cand := r.candidates(z, sets, depth)
		var out []dns.RR
		for _, s := range cand {
			out = append(out, r.records(z, s, c, d, depth)...)
		}
		if len(out) > 1 {
			d.Varies = true
			out = slices.Clone(out)
			rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		}
		if len(out) > MaxMultiValue {
			out = out[:MaxMultiValue]
		}
		return out
	case "cidr":
		d.Varies = true
		return r.cidr(z, sets, c, d, depth)
	default: // simple
		s := sets[0]
		if !r.healthy(z, s, depth) && s.Policy.FailClosed {
			return nil
		}
		return r.records(z, s, c, d, depth)
	}
}

// candidates are the healthy members, or when none is healthy every member
// that does not fail closed (fail-open).
func (r *Router) candidates(z *zone.Zone, sets []*zone.RRSet, depth int) []*zone.RRSet {
	var out []*zone.RRSet
	for _, s := range sets {
		if r.healthy(z, s, depth) {
			out = append(out, s)
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, s := range sets {
		if !s.Policy.FailClosed {
			out = append(out, s)
		}
	}
	return out
}

func weighted(cand []*zone.RRSet) *zone.RRSet {
	total := 0
	for _, s := range cand {
		total += *s.Policy.Weight
	}
	if total == 0 {
		return cand[rand.IntN(len(cand))]
	}
	n := rand.IntN(total)
	for _, s := range cand {
		if n -= *s.Policy.Weight; n < 0 {
			return s
		}
	}
	return cand[len(cand)-1]
}

func (r *Router) cidr(z *zone.Zone, sets []*zone.RRSet, c Client, d *Decision, depth int) []dns.RR {
	addr, srcBits := c.Addr, -1
	if c.ECS.IsValid() {
		addr, srcBits = c.ECS.Addr(), c.ECS.Bits()
	}
	var loc string
	coll := r.Collections[sets[0].Policy.CIDR.Collection]
	if coll != nil && addr.IsValid() {
		if l, bits, ok := coll.Match(addr); ok {
			loc = l
			d.Scope = bits
		}
	}
	if loc == "" && srcBits >= 0 {
		d.Scope = srcBits
	}
	var match, def *zone.RRSet
	for _, s := range sets {
		switch s.Policy.CIDR.Location {
		case loc:
			if loc != "" {
				match = s
			}
		case "*":
			def = s
		}
	}
	if match != nil && r.healthy(z, match, depth) {
		return r.records(z, match, c, d, depth)
	}
	if def != nil && (r.healthy(z, def, depth) || !def.Policy.FailClosed) {
		return r.records(z, def, c, d, depth)
	}
	if match != nil && !match.Policy.FailClosed {
		return r.records(z, match, c, d, depth)
	}
	return nil
}

// healthy reports s's health: its health check, and for an alias that
// evaluates target health, whether the target has a healthy member.
func (r *Router) healthy(z *zone.Zone, s *zone.RRSet, depth int) bool {
	if id := s.Policy.HealthCheckID; id != "" && r.Health != nil && unhealthy(r.Health, id) {
		return false
	}
	if a := s.Policy.Alias; a != nil && a.EvaluateTargetHealth && depth < maxAliasDepth && r.Resolve != nil {
		tz, ts := r.Resolve(z, a, s.Type)
		for _, t := range ts {
			if r.healthy(tz, t, depth+1) {
				return true
			}
		}
		return false
	}
	return true
}

// records returns s's records, resolving an alias to its target's answer
// (with the target's TTL).
func (r *Router) records(z *zone.Zone, s *zone.RRSet, c Client, d *Decision, depth int) []dns.RR {
	a := s.Policy.Alias
	if a == nil {
		return s.RRs
	}
	if depth >= maxAliasDepth || r.Resolve == nil {
		return nil
	}
	tz, ts := r.Resolve(z, a, s.Type)
	return r.pick(tz, ts, c, d, depth+1)
}

func unhealthy(h Health, id string) bool {
	st, _ := h.State(id)
	return st == health.Unhealthy
}
