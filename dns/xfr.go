package dnsserver

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/edgestack/edgestack/dns/zone"
	"github.com/miekg/dns"
)

// xfrPolicy is who may transfer zones.
type xfrPolicy struct {
	allow   []netip.Prefix
	secrets map[string]string // key name (fqdn, lower case) → base64 secret
	algs    map[string]string // key name → algorithm
	notify  []string
}

func newXFRPolicy(cfg *Config) *xfrPolicy {
	p := &xfrPolicy{allow: parsePrefixes(cfg.Transfer.Allow), secrets: map[string]string{}, algs: map[string]string{}, notify: cfg.Transfer.Notify}
	for _, k := range cfg.Transfer.TSIGKeys {
		p.secrets[dns.CanonicalName(k.Name)] = k.Secret
		p.algs[dns.CanonicalName(k.Name)], _ = tsigAlgorithm(k.Algorithm)
	}
	return p
}

// journalEntry is one applied batch as an IXFR difference.
type journalEntry struct {
	from, to       *dns.SOA
	removed, added []dns.RR
}

// xfrRecords are the records of z a secondary gets: every record of every
// record set (the members of routed sets together), aliases left out (a
// plain secondary cannot answer them), the SOA first.
func xfrRecords(z *zone.Zone) []dns.RR {
	seen := map[string]bool{}
	out := []dns.RR{z.SOA}
	for _, s := range z.Sets() {
		if s.Type == dns.TypeSOA {
			continue
		}
		for _, rr := range s.RRs {
			k := rr.String()
			if !seen[k] {
				seen[k] = true
				out = append(out, rr)
			}
		}
	}
	return out
}

// diff returns the IXFR difference between two versions.
func diff(a, b *zone.Zone) journalEntry {
	ra, rb := xfrRecords(a)[1:], xfrRecords(b)[1:]
	ka, kb := map[string]bool{}, map[string]bool{}
	for _, rr := range ra {
		ka[rr.String()] = true
	}
	for _, rr := range rb {
		kb[rr.String()] = true
	}
	e := journalEntry{from: a.SOA, to: b.SOA}
	for _, rr := range ra {
		if !kb[rr.String()] {
			e.removed = append(e.removed, rr)
		}
	}
	for _, rr := range rb {
		if !ka[rr.String()] {
			e.added = append(e.added, rr)
		}
	}
	return e
}

// transfer answers an AXFR or IXFR query on a TCP connection.
func (s *Service) transfer(c net.Conn, raw []byte, src netip.AddrPort) error {
	var q dns.Msg
	if err := q.Unpack(raw); err != nil || len(q.Question) != 1 {
		return nil
	}
	snap := s.snap.Load()
	pol := snap.xfr
	qt := q.Question[0].Qtype
	kind := "axfr"
	if qt == dns.TypeIXFR {
		kind = "ixfr"
	}
	fail := func(rcode int) error {
		s.m.xfrs.WithLabelValues(kind, "refused").Inc()
		r := new(dns.Msg)
		r.SetRcode(&q, rcode)
		return writeTCP(c, r, "", "", false)
	}
	if !containsAddr(pol.allow, src.Addr()) {
		return fail(dns.RcodeRefused)
	}
	var secret, keyName string
	tsig := q.IsTsig()
	if len(pol.secrets) > 0 {
		if tsig == nil {
			return fail(dns.RcodeRefused)
		}
		keyName = dns.CanonicalName(tsig.Hdr.Name)
		secret = pol.secrets[keyName]
		if secret == "" || dns.TsigVerify(raw, secret, "", false) != nil {
			return fail(dns.RcodeNotAuth)
		}
	}
	lname := strings.ToLower(q.Question[0].Name)
	v := snap.views[snap.viewIndex(src.Addr().Unmap())]
	z := v.zones[lname]
	if z == nil {
		return fail(dns.RcodeNotAuth)
	}
	var rrs []dns.RR
	if qt == dns.TypeIXFR {
		var have uint32
		ok := false
		for _, rr := range q.Ns {
			if soa, isSOA := rr.(*dns.SOA); isSOA {
				have, ok = soa.Serial, true
			}
		}
		if ok {
			rrs = s.ixfr(v.name, z, have)
		}
	}
	if rrs == nil {
		rrs = append(xfrRecords(z), z.SOA)
	}
	reqMAC := ""
	if tsig != nil {
		reqMAC = tsig.MAC
	}
	for i, n := 0, 0; i < len(rrs); n++ {
		m := new(dns.Msg)
		m.SetReply(&q)
		m.Authoritative = true
		m.Compress = true
		size := 12
		for i < len(rrs) && (len(m.Answer) == 0 || size < 16000) {
			m.Answer = append(m.Answer, rrs[i])
			size += dns.Len(rrs[i])
			i++
		}
		if tsig != nil {
			m.SetTsig(tsig.Hdr.Name, tsig.Algorithm, 300, time.Now().Unix())
		}
		var err error
		if reqMAC, err = signAndWrite(c, m, secret, reqMAC, n > 0); err != nil {
			s.m.xfrs.WithLabelValues(kind, "failure").Inc()
			return err
		}
	}
	s.m.xfrs.WithLabelValues(kind, "success").Inc()
	s.log.Info("zone transferred", "zone", z.Origin, "type", kind, "to", src.String(), "records", len(rrs))
	return nil
}

// ixfr returns the incremental answer from serial have to z's serial, a
// lone SOA when have is current, or nil when the journal cannot bridge.
func (s *Service) ixfr(viewName string, z *zone.Zone, have uint32) []dns.RR {
	if have == z.Serial() {
		return []dns.RR{z.SOA}
	}
	s.mu.Lock()
	zs := s.zones[zkey{viewName, z.Origin}]
	var journal []journalEntry
	if zs != nil && zs.cur == z {
		journal = zs.journal
	}
	s.mu.Unlock()
	start := -1
	for i, e := range journal {
		if e.from.Serial == have {
			start = i
			break
		}
	}
	if start < 0 {
		return nil
	}
	out := []dns.RR{z.SOA}
	for _, e := range journal[start:] {
		out = append(out, e.from)
		out = append(out, e.removed...)
		out = append(out, e.to)
		out = append(out, e.added...)
	}
	return append(out, z.SOA)
}

func signAndWrite(c net.Conn, m *dns.Msg, secret, reqMAC string, timersOnly bool) (string, error) {
	var wire []byte
	var err error
	if secret != "" {
		wire, reqMAC, err = dns.TsigGenerate(m, secret, reqMAC, timersOnly)
	} else {
		wire, err = m.Pack()
	}
	if err != nil {
		return reqMAC, err
	}
	return reqMAC, writeRaw(c, wire)
}

func writeTCP(c net.Conn, m *dns.Msg, secret, reqMAC string, timersOnly bool) error {
	_, err := signAndWrite(c, m, secret, reqMAC, timersOnly)
	return err
}

func writeRaw(c net.Conn, wire []byte) error {
	b := make([]byte, 2+len(wire))
	binary.BigEndian.PutUint16(b, uint16(len(wire)))
	copy(b[2:], wire)
	_, err := c.Write(b)
	return err
}

// queueNotify asks the notifier to tell secondaries about origin.
func (s *Service) queueNotify(origin string) {
	select {
	case s.notify <- origin:
	default: // the notifier is behind; a later change notifies again
	}
}

// notifier sends NOTIFY (RFC 1996) to transfer.notify for every changed
// zone, retrying a few times when a secondary does not answer.
func (s *Service) notifier(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case origin := <-s.notify:
			snap := s.snap.Load()
			for _, addr := range snap.xfr.notify {
				s.sendNotify(ctx, origin, addr, snap)
			}
		}
	}
}

func (s *Service) sendNotify(ctx context.Context, origin, addr string, snap *snapshot) {
	m := new(dns.Msg)
	m.SetNotify(origin)
	m.Authoritative = true
	if z := snap.views[len(snap.views)-1].zones[origin]; z != nil {
		m.Answer = []dns.RR{z.SOA}
	}
	cl := &dns.Client{Timeout: 2 * time.Second}
	var keyName, secret string
	for k, v := range snap.xfr.secrets {
		keyName, secret = k, v
		break
	}
	if secret != "" {
		cl.TsigSecret = map[string]string{keyName: secret}
		m.SetTsig(keyName, snap.xfr.algs[keyName], 300, time.Now().Unix())
	}
	for attempt := range 3 {
		if ctx.Err() != nil {
			return
		}
		r, _, err := cl.ExchangeContext(ctx, m, addr)
		if err == nil && r != nil {
			s.m.notifies.WithLabelValues("success").Inc()
			return
		}
		s.log.Debug("notify failed", "zone", origin, "to", addr, "attempt", attempt+1, "err", fmt.Sprint(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second << attempt):
		}
	}
	s.m.notifies.WithLabelValues("failure").Inc()
	s.log.Warn("notify failed", "zone", origin, "to", addr)
}
