package dnsserver

import (
	"net/netip"
	"strings"

	"github.com/edgestack/edgestack/dns/routing"
	"github.com/edgestack/edgestack/dns/zone"
	"github.com/miekg/dns"
)

// Sizes of answers.
const (
	// EDNSSize is the UDP payload size dnsd advertises and the largest UDP
	// answer it sends (DNS flag day 2020).
	EDNSSize = 1232
	minUDP   = 512
	maxTCP   = 65535
)

// view is one set of zones and the sources that see it; the public view
// has no sources and comes last.
type view struct {
	name    string
	sources []netip.Prefix
	zones   map[string]*zone.Zone // by lower-case origin
}

// zoneFor finds the closest enclosing zone of lname. For DS at a zone apex
// the parent zone answers when it is served too (the parent side).
func (v *view) zoneFor(lname string, qtype uint16) *zone.Zone {
	var found *zone.Zone
	for off, end := 0, false; !end; off, end = dns.NextLabel(lname, off) {
		name := lname[off:]
		if z := v.zones[name]; z != nil {
			if found == nil && qtype == dns.TypeDS && off == 0 && name != "." {
				found = z // keep looking for the parent
				continue
			}
			return z
		}
	}
	if z := v.zones["."]; z != nil && !(qtype == dns.TypeDS && lname == ".") {
		return z
	}
	return found
}

// snapshot is everything a query needs, immutable once published.
type snapshot struct {
	views  []*view
	router *routing.Router
	cache  *wireCache // nil: fast path off
	xfr    *xfrPolicy
	rrl    *rrl // nil: off
}

// viewIndex picks the view for a source address.
func (s *snapshot) viewIndex(a netip.Addr) int {
	for i, v := range s.views[:len(s.views)-1] {
		if containsAddr(v.sources, a) {
			return i
		}
	}
	return len(s.views) - 1
}

// answer is the outcome of the slow path.
type answer struct {
	wire      []byte
	rcode     int
	cacheable bool
}

// slow parses the query with miekg/dns and answers it. It returns nil wire
// to drop the query.
func (s *Service) slow(snap *snapshot, raw []byte, src netip.AddrPort, tcp bool, out []byte) answer {
	var q dns.Msg
	if err := q.Unpack(raw); err != nil {
		return headerOnly(raw, out, dns.RcodeFormatError)
	}
	if q.Response {
		return answer{}
	}
	resp := &dns.Msg{}
	resp.Id = q.Id
	resp.Response = true
	resp.Opcode = q.Opcode
	resp.RecursionDesired = q.RecursionDesired
	resp.Question = q.Question
	var opt *dns.OPT
	for _, rr := range q.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt != nil || o.Hdr.Name != "." {
				return finish(resp, dns.RcodeFormatError, nil, tcp, false)
			}
			opt = o
		}
	}
	if q.Opcode != dns.OpcodeQuery {
		resp.Question = nil // as NSD does
		return finish(resp, dns.RcodeNotImplemented, opt, tcp, false)
	}
	if len(q.Question) != 1 || len(q.Answer) > 0 || len(q.Ns) > 0 {
		return finish(resp, dns.RcodeFormatError, opt, tcp, false)
	}
	if opt != nil && opt.Version() != 0 {
		return finish(resp, dns.RcodeBadVers, opt, tcp, false)
	}
	question := q.Question[0]
	if question.Qclass != dns.ClassINET {
		return finish(resp, dns.RcodeRefused, opt, tcp, true)
	}
	switch question.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		if !tcp {
			return finish(resp, dns.RcodeNotImplemented, opt, tcp, true)
		}
	case dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY, dns.TypeMAILA, dns.TypeMAILB:
		return finish(resp, dns.RcodeFormatError, opt, tcp, true)
	}
	client := routing.Client{Addr: src.Addr().Unmap()}
	var ecs *dns.EDNS0_SUBNET
	if opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_SUBNET); ok {
				ecs = e
				if a, ok := netip.AddrFromSlice(e.Address); ok {
					a = a.Unmap()
					if p, err := a.Prefix(int(e.SourceNetmask)); err == nil {
						client.ECS = p
					}
				}
			}
		}
	}
	v := snap.views[snap.viewIndex(client.Addr)]
	lname := strings.ToLower(question.Name)
	z := v.zoneFor(lname, question.Qtype)
	if z == nil {
		return finish(resp, dns.RcodeRefused, opt, tcp, true)
	}
	d := &routing.Decision{}
	res := z.Lookup(question.Name, question.Qtype, opt != nil && opt.Do(), snap.router.Picker(z, client, d))
	resp.Authoritative = res.Authoritative
	resp.Answer, resp.Ns, resp.Extra = res.Answer, res.Ns, res.Extra
	if ecs != nil {
		e := *ecs
		e.SourceScope = uint8(d.Scope)
		ro := responseOPT(opt)
		ro.Option = []dns.EDNS0{&e}
		a := finishOPT(resp, res.Rcode, ro, opt, tcp, false)
		return a
	}
	return finish(resp, res.Rcode, opt, tcp, !d.Varies)
}

func responseOPT(q *dns.OPT) *dns.OPT {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(EDNSSize)
	if q.Do() {
		o.SetDo()
	}
	return o
}

// finish sets the rcode and EDNS, fits the answer into the client's limit
// and packs it.
func finish(resp *dns.Msg, rcode int, qopt *dns.OPT, tcp, cacheable bool) answer {
	var ro *dns.OPT
	if qopt != nil {
		ro = responseOPT(qopt)
	}
	return finishOPT(resp, rcode, ro, qopt, tcp, cacheable)
}

func finishOPT(resp *dns.Msg, rcode int, ro, qopt *dns.OPT, tcp, cacheable bool) answer {
	if rcode > 0xF && ro == nil { // BADVERS needs EDNS; never without
		rcode = dns.RcodeFormatError
	}
	if rcode == dns.RcodeFormatError {
		resp.Question = nil // as NSD does
	}
	resp.Rcode = rcode // Pack moves the upper bits into the OPT record
	if rcode == dns.RcodeBadVers {
		resp.Answer, resp.Ns, resp.Extra = nil, nil, nil
	}
	if ro != nil {
		resp.Extra = append(resp.Extra, ro)
	}
	limit := maxTCP
	if !tcp {
		limit = udpLimit(qopt)
	}
	fit(resp, limit)
	wire, err := resp.Pack()
	if err != nil {
		return answer{}
	}
	return answer{wire: wire, rcode: rcode, cacheable: cacheable}
}

// udpLimit is the largest UDP answer for a query with EDNS option qopt.
func udpLimit(qopt *dns.OPT) int {
	if qopt == nil {
		return minUDP
	}
	return min(max(int(qopt.UDPSize()), minUDP), EDNSSize)
}

// headerOnly answers a query that cannot be parsed: its ID, opcode and RD
// with the rcode and no sections. Responses and runts are dropped.
func headerOnly(raw, out []byte, rcode int) answer {
	if len(raw) < 12 || raw[2]&0x80 != 0 {
		return answer{}
	}
	out = append(out[:0], raw[:12]...)
	out[2] = 0x80 | raw[2]&0x79 // QR, opcode, RD
	out[3] = byte(rcode)
	clear(out[4:12])
	return answer{wire: out, rcode: rcode}
}

// fit trims resp to limit bytes without splitting RRsets (RFC 2181 §9):
// additional data goes first; if the answer or authority section does not
// fit, TC is set and only whole RRsets that fit are kept.
func fit(resp *dns.Msg, limit int) {
	resp.Compress = true
	if resp.Len() <= limit {
		return
	}
	var opt []dns.RR
	extra := resp.Extra
	resp.Extra = nil
	for _, rr := range extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			opt = append(opt, rr)
		}
	}
	resp.Extra = opt
	if resp.Len() <= limit {
		for _, set := range rrsets(extra) {
			if set[0].Header().Rrtype == dns.TypeOPT {
				continue
			}
			n := len(resp.Extra)
			resp.Extra = append(resp.Extra, set...)
			if resp.Len() > limit {
				resp.Extra = resp.Extra[:n]
				break
			}
		}
		return
	}
	resp.Truncated = true
	answer, ns := resp.Answer, resp.Ns
	resp.Answer, resp.Ns = nil, nil
	for _, set := range rrsets(answer) {
		resp.Answer = append(resp.Answer, set...)
		if resp.Len() > limit {
			resp.Answer = resp.Answer[:len(resp.Answer)-len(set)]
			return
		}
	}
	for _, set := range rrsets(ns) {
		resp.Ns = append(resp.Ns, set...)
		if resp.Len() > limit {
			resp.Ns = resp.Ns[:len(resp.Ns)-len(set)]
			return
		}
	}
}

// rrsets splits rrs into runs of the same owner and type.
func rrsets(rrs []dns.RR) [][]dns.RR {
	var out [][]dns.RR
	for i := 0; i < len(rrs); {
		j := i + 1
		for j < len(rrs) && rrs[j].Header().Rrtype == rrs[i].Header().Rrtype && strings.EqualFold(rrs[j].Header().Name, rrs[i].Header().Name) {
			j++
		}
		out = append(out, rrs[i:j])
		i = j
	}
	return out
}
