package zone

import (
	"strings"

	"github.com/miekg/dns"
)

// Picker chooses what to answer from the record sets at one (name, type):
// the routing policy, health and aliases live behind it. It returns the
// records to answer (any owner name; Lookup renames them) and their TTL is
// kept. An empty result means NODATA.
type Picker func(sets []*RRSet) []dns.RR

// Result is the outcome of a lookup: the sections of the answer.
type Result struct {
	Rcode         int
	Authoritative bool
	Answer        []dns.RR
	Ns            []dns.RR
	Extra         []dns.RR
	// External is set when a CNAME chain leaves this zone: the name the
	// chain ends at, for the server to continue in another zone it serves
	// (or not).
	External string
}

// maxChain bounds CNAME chains followed inside the zone.
const maxChain = 12

// Lookup answers (qname, qtype) from z. qname keeps the client's letter
// case: owner names of the answer use it so they compress against the
// question. do is the DNSSEC OK bit.
func (z *Zone) Lookup(qname string, qtype uint16, do bool, pick Picker) *Result {
	r := &Result{Authoritative: true}
	seen := 0
	owner := qname
	for {
		done, next := z.lookupOne(r, owner, qtype, do, pick)
		if done {
			return r
		}
		seen++
		if seen > maxChain {
			return r
		}
		if !dns.IsSubDomain(z.Origin, strings.ToLower(next)) {
			r.External = next
			return r
		}
		owner = next
	}
}

// lookupOne answers one name; when it answered a CNAME it returns the
// target to follow.
func (z *Zone) lookupOne(r *Result, owner string, qtype uint16, do bool, pick Picker) (bool, string) {
	lname := strings.ToLower(owner)
	// Walk down from the apex looking for delegations.
	labels := dns.SplitDomainName(lname)
	zl := dns.CountLabel(z.Origin)
	var ce *node // closest encloser
	for i := len(labels) - zl; i >= 0; i-- {
		name := dns.Fqdn(strings.Join(labels[i:], "."))
		if i == len(labels) && name == "." {
			name = "."
		}
		n := z.nodes[name]
		if n == nil {
			break
		}
		ce = n
		if n.cut && !(name == lname && qtype == dns.TypeDS) {
			z.referral(r, n, do)
			return true, ""
		}
	}
	if ce == nil { // only when the caller asked outside the zone
		r.Rcode = dns.RcodeRefused
		r.Authoritative = false
		return true, ""
	}
	n := ce
	if ce.name != lname {
		w := z.nodes["*."+ce.name]
		if w == nil {
			if len(r.Answer) == 0 {
				r.Rcode = dns.RcodeNameError
			} else {
				r.Rcode = dns.RcodeNameError // RFC 6604: the rcode of the last name
			}
			z.negative(r)
			return true, ""
		}
		n = w
	}
	if qtype == dns.TypeANY {
		// RFC 8482: one RRset: the SOA at the apex (as NSD does), else the
		// first in type order (not RRSIG/NSEC).
		var best uint16
		if n.has(dns.TypeSOA) {
			best = dns.TypeSOA
		}
		for _, g := range n.groups {
			t := g.t
			if t == dns.TypeRRSIG || t == dns.TypeNSEC {
				continue
			}
			if best == 0 || (t < best && best != dns.TypeSOA) {
				best = t
			}
		}
		if best != 0 {
			if rrs := pick(n.get(best)); len(rrs) > 0 {
				r.Answer = append(r.Answer, rename(rrs, owner)...)
				return true, ""
			}
		}
		z.negative(r)
		return true, ""
	}
	if sets := n.get(qtype); sets != nil {
		if rrs := pick(sets); len(rrs) > 0 {
			r.Answer = append(r.Answer, rename(rrs, owner)...)
			if qtype == dns.TypeNS {
				z.addGlue(r, rrs)
			}
			return true, ""
		}
		z.negative(r)
		return true, ""
	}
	if sets := n.get(dns.TypeCNAME); sets != nil {
		rrs := pick(sets)
		if len(rrs) == 0 {
			z.negative(r)
			return true, ""
		}
		rrs = rename(rrs, owner)
		for _, a := range r.Answer { // a loop: stop here
			if strings.EqualFold(a.Header().Name, rrs[0].Header().Name) && a.Header().Rrtype == dns.TypeCNAME {
				return true, ""
			}
		}
		r.Answer = append(r.Answer, rrs...)
		return false, rrs[0].(*dns.CNAME).Target
	}
	z.negative(r)
	return true, ""
}

// negative adds the SOA for NXDOMAIN and NODATA with the RFC 2308 TTL.
func (z *Zone) negative(r *Result) {
	soa := dns.Copy(z.SOA).(*dns.SOA)
	if soa.Minttl < soa.Hdr.Ttl {
		soa.Hdr.Ttl = soa.Minttl
	}
	r.Ns = append(r.Ns, soa)
}

// referral answers with the delegation at n: NS in authority, DS when
// asked for DNSSEC, glue in additional.
func (z *Zone) referral(r *Result, n *node, do bool) {
	if len(r.Answer) == 0 {
		r.Authoritative = false
	}
	var ns []dns.RR
	for _, s := range n.get(dns.TypeNS) {
		ns = append(ns, s.RRs...)
	}
	r.Ns = append(r.Ns, ns...)
	if do && z.signed {
		for _, s := range n.get(dns.TypeDS) {
			r.Ns = append(r.Ns, s.RRs...)
		}
	}
	z.addGlue(r, ns)
}

// addGlue adds the in-zone addresses of NS targets to the additional
// section (needed for referrals; NSD adds them to NS answers as well, even
// with minimal-responses).
func (z *Zone) addGlue(r *Result, ns []dns.RR) {
	for _, rr := range ns {
		nsrr, ok := rr.(*dns.NS)
		if !ok {
			continue
		}
		target := strings.ToLower(nsrr.Ns)
		if !dns.IsSubDomain(z.Origin, target) {
			continue
		}
		g := z.nodes[target]
		if g == nil {
			continue
		}
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
			for _, s := range g.get(t) {
				r.Extra = append(r.Extra, s.RRs...)
			}
		}
	}
}

// rename returns rrs with owner name owner, copying those that differ.
func rename(rrs []dns.RR, owner string) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		if rr.Header().Name == owner {
			out[i] = rr
			continue
		}
		c := dns.Copy(rr)
		c.Header().Name = owner
		out[i] = c
	}
	return out
}
