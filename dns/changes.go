package dnsserver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgestack/edgestack/dns/store"
	"github.com/edgestack/edgestack/dns/zone"
	"github.com/miekg/dns"
)

// RRSet is the JSON form of a record set in the change API.
type RRSet struct {
	Name          string    `json:"name"`
	Type          string    `json:"type"`
	TTL           uint32    `json:"ttl"`
	Records       []string  `json:"records"`
	SetIdentifier string    `json:"set_identifier"`
	Weight        *int      `json:"weight"`
	Failover      string    `json:"failover"`
	MultiValue    bool      `json:"multivalue"`
	CIDR          CIDRJSON  `json:"cidr"`
	HealthCheckID string    `json:"health_check_id"`
	Alias         AliasJSON `json:"alias"`
	FailClosed    bool      `json:"fail_closed"`
}

// CIDRJSON is the IP-based routing part of RRSet.
type CIDRJSON struct {
	Collection string `json:"collection"`
	Location   string `json:"location"`
}

// AliasJSON is the alias part of RRSet; an empty name means no alias.
type AliasJSON struct {
	Zone                 string `json:"zone"`
	Name                 string `json:"name"`
	Type                 string `json:"type"`
	EvaluateTargetHealth bool   `json:"evaluate_target_health"`
}

// Change is one change of a batch.
type Change struct {
	Action string `json:"action"` // CREATE, DELETE, UPSERT
	RRSet  RRSet  `json:"rrset"`
}

// ChangeBatch is the body of POST /v1/zones/{zone}/changes.
type ChangeBatch struct {
	Comment string   `json:"comment"`
	Changes []Change `json:"changes"`
}

// ChangeInfo is the answer to an applied batch.
type ChangeInfo struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	Serial      uint32 `json:"serial"`
	SubmittedAt string `json:"submitted_at"`
}

// batchRecord is a batch as stored in the journal.
type batchRecord struct {
	ID          string    `json:"id"`
	Comment     string    `json:"comment,omitempty"`
	SubmittedAt time.Time `json:"submitted_at"`
	Serial      uint32    `json:"serial"`
	Changes     []Change  `json:"changes"`
}

func typeFromString(s string) (uint16, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if t, ok := dns.StringToType[u]; ok {
		return t, nil
	}
	if n, ok := strings.CutPrefix(u, "TYPE"); ok {
		if v, err := strconv.ParseUint(n, 10, 16); err == nil {
			return uint16(v), nil
		}
	}
	return 0, fmt.Errorf("unknown type %q", s)
}

func typeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// toZone converts and checks a JSON record set for a zone.
func (j RRSet) toZone(origin string) (*zone.RRSet, error) {
	name := dns.CanonicalName(j.Name)
	if _, ok := dns.IsDomainName(name); !ok || j.Name == "" {
		return nil, fmt.Errorf("name %q is not a domain name", j.Name)
	}
	if !dns.IsSubDomain(origin, name) {
		return nil, fmt.Errorf("name %s is outside the zone %s", name, origin)
	}
	t, err := typeFromString(j.Type)
	if err != nil {
		return nil, err
	}
	switch t {
	case dns.TypeOPT, dns.TypeTSIG, dns.TypeAXFR, dns.TypeIXFR, dns.TypeANY, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3:
		return nil, fmt.Errorf("type %s cannot be stored", typeString(t))
	}
	s := &zone.RRSet{Name: name, Type: t, TTL: j.TTL}
	p := &s.Policy
	p.SetID = j.SetIdentifier
	p.HealthCheckID = j.HealthCheckID
	p.FailClosed = j.FailClosed
	kinds := 0
	if j.Weight != nil {
		if *j.Weight < 0 || *j.Weight > 255 {
			return nil, fmt.Errorf("weight %d is outside 0..255", *j.Weight)
		}
		w := *j.Weight
		p.Weight = &w
		kinds++
	}
	if j.Failover != "" {
		f := strings.ToUpper(j.Failover)
		if f != "PRIMARY" && f != "SECONDARY" {
			return nil, fmt.Errorf("failover %q: want PRIMARY or SECONDARY", j.Failover)
		}
		p.Failover = f
		kinds++
	}
	if j.MultiValue {
		p.MultiValue = true
		kinds++
	}
	if j.CIDR.Collection != "" || j.CIDR.Location != "" {
		if j.CIDR.Collection == "" || j.CIDR.Location == "" {
			return nil, errors.New("cidr needs both collection and location")
		}
		p.CIDR = zone.CIDR{Collection: j.CIDR.Collection, Location: j.CIDR.Location}
		kinds++
	}
	if kinds > 1 {
		return nil, errors.New("at most one of weight, failover, multivalue and cidr may be set")
	}
	if kinds == 1 && p.SetID == "" {
		return nil, errors.New("set_identifier is required with a routing policy")
	}
	if kinds == 0 && p.SetID != "" {
		return nil, errors.New("set_identifier needs a routing policy (weight, failover, multivalue or cidr)")
	}
	if j.Alias.Name != "" {
		if len(j.Records) > 0 {
			return nil, errors.New("an alias has no records")
		}
		a := &zone.Alias{Zone: j.Alias.Zone, Name: dns.CanonicalName(j.Alias.Name), EvaluateTargetHealth: j.Alias.EvaluateTargetHealth}
		if j.Alias.Zone != "" {
			a.Zone = dns.CanonicalName(j.Alias.Zone)
		}
		if j.Alias.Type != "" {
			if a.Type, err = typeFromString(j.Alias.Type); err != nil {
				return nil, fmt.Errorf("alias: %w", err)
			}
		}
		if a.Name == name && (a.Type == 0 || a.Type == t) {
			return nil, errors.New("alias points at itself")
		}
		p.Alias = a
		return s, nil
	}
	if len(j.Records) == 0 {
		return nil, errors.New("records: at least one is required (or an alias)")
	}
	for i, rd := range j.Records {
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", name, j.TTL, typeString(t), rd))
		if err != nil || rr == nil {
			msg := "empty"
			if err != nil {
				msg = strings.TrimPrefix(err.Error(), "dns: ")
			}
			return nil, fmt.Errorf("records[%d] %q: %s", i, rd, msg)
		}
		rr.Header().Name = name
		for _, o := range s.RRs {
			if dns.IsDuplicate(o, rr) {
				return nil, fmt.Errorf("records[%d] %q: duplicate", i, rd)
			}
		}
		s.RRs = append(s.RRs, rr)
	}
	if (t == dns.TypeCNAME || t == dns.TypeSOA) && len(s.RRs) > 1 {
		return nil, fmt.Errorf("a %s record set holds one record", typeString(t))
	}
	return s, nil
}

// fromZone converts a record set to JSON.
func fromZone(s *zone.RRSet) RRSet {
	j := RRSet{Name: s.Name, Type: typeString(s.Type), TTL: s.TTL, Records: []string{}}
	for _, rr := range s.RRs {
		j.Records = append(j.Records, rdataString(rr))
	}
	p := s.Policy
	j.SetIdentifier, j.Weight, j.Failover, j.MultiValue = p.SetID, p.Weight, p.Failover, p.MultiValue
	j.CIDR = CIDRJSON{p.CIDR.Collection, p.CIDR.Location}
	j.HealthCheckID, j.FailClosed = p.HealthCheckID, p.FailClosed
	if a := p.Alias; a != nil {
		j.Alias = AliasJSON{Zone: a.Zone, Name: a.Name, EvaluateTargetHealth: a.EvaluateTargetHealth}
		if a.Type != 0 {
			j.Alias.Type = typeString(a.Type)
		}
	}
	return j
}

// rdataString is the presentation form of rr's RDATA.
func rdataString(rr dns.RR) string {
	h := rr.Header().String()
	return strings.TrimPrefix(rr.String(), h)
}

func sameSet(a, b *zone.RRSet) bool {
	if a.TTL != b.TTL || len(a.RRs) != len(b.RRs) || a.Policy.Kind() != b.Policy.Kind() {
		return false
	}
	pa, pb := a.Policy, b.Policy
	if pa.HealthCheckID != pb.HealthCheckID || pa.FailClosed != pb.FailClosed || pa.Failover != pb.Failover || pa.MultiValue != pb.MultiValue || pa.CIDR != pb.CIDR {
		return false
	}
	if (pa.Weight == nil) != (pb.Weight == nil) || pa.Weight != nil && *pa.Weight != *pb.Weight {
		return false
	}
	if (pa.Alias == nil) != (pb.Alias == nil) || pa.Alias != nil && *pa.Alias != *pb.Alias {
		return false
	}
	for _, r := range a.RRs {
		if !slices.ContainsFunc(b.RRs, func(o dns.RR) bool { return dns.IsDuplicate(r, o) }) {
			return false
		}
	}
	return true
}

// applyDiff validates changes against z and builds the next version with
// the given serial (0: the current serial + 1). Nothing is changed on
// error; the error names the change at fault. It also returns the IXFR
// difference, computed from the changed record sets only (a full
// comparison when routed sets are involved, whose members may share
// records).
// conflictError is a change whose precondition does not hold in the zone
// as it is now (a CREATE of a set that exists, a DELETE of one that does
// not or differs): the API answers 409, so a client that read the zone
// before someone else changed it can read again and retry.
type conflictError struct{ error }

func (e conflictError) Unwrap() error { return e.error }

func conflict(err error) error { return conflictError{err} }

func applyDiff(z *zone.Zone, changes []Change, serial uint32) (*zone.Zone, journalEntry, error) {
	if len(changes) == 0 {
		return nil, journalEntry{}, errors.New("changes: at least one change is required")
	}
	// sets overlays the batch's changes on z (nil: deleted).
	sets := map[zone.Key]*zone.RRSet{}
	get := func(k zone.Key) *zone.RRSet {
		if s, ok := sets[k]; ok {
			return s
		}
		for _, s := range z.Find(k.Name, k.Type) {
			if s.Policy.SetID == k.SetID {
				return s
			}
		}
		return nil
	}
	touched := map[zone.Key]int{}
	before := map[zone.Key]*zone.RRSet{}
	routed := false
	for i, c := range changes {
		f := fmt.Sprintf("changes[%d]", i)
		s, err := c.RRSet.toZone(z.Origin)
		if err != nil {
			return nil, journalEntry{}, fmt.Errorf("%s: %w", f, err)
		}
		k := s.Key()
		desc := fmt.Sprintf("%s %s", s.Name, typeString(s.Type))
		if k.SetID != "" {
			desc += fmt.Sprintf(" (set %q)", k.SetID)
		}
		if j, ok := touched[k]; ok && !(strings.EqualFold(changes[j].Action, "DELETE") && strings.EqualFold(c.Action, "CREATE")) {
			// DELETE then CREATE is Route 53's way to replace a set only
			// if it is still what the client read (the DELETE must match).
			return nil, journalEntry{}, fmt.Errorf("%s: %s is also changed by changes[%d]; one change per record set per batch (or a DELETE then a CREATE)", f, desc, j)
		}
		touched[k] = i
		cur := get(k)
		if _, seen := before[k]; !seen {
			before[k] = cur
		}
		if s.Policy.Kind() != "simple" || cur != nil && cur.Policy.Kind() != "simple" {
			routed = true
		}
		switch strings.ToUpper(c.Action) {
		case "CREATE":
			if cur != nil {
				return nil, journalEntry{}, conflict(fmt.Errorf("%s: CREATE %s: the record set already exists", f, desc))
			}
			sets[k] = s
		case "DELETE":
			if cur == nil {
				return nil, journalEntry{}, conflict(fmt.Errorf("%s: DELETE %s: no such record set", f, desc))
			}
			if !sameSet(cur, s) {
				return nil, journalEntry{}, conflict(fmt.Errorf("%s: DELETE %s: the values do not match the record set (ttl %d, %d records); a DELETE must match exactly", f, desc, cur.TTL, len(cur.RRs)))
			}
			if s.Type == dns.TypeSOA || (s.Type == dns.TypeNS && s.Name == z.Origin) {
				return nil, journalEntry{}, fmt.Errorf("%s: DELETE %s: the apex SOA and NS cannot be deleted", f, desc)
			}
			sets[k] = nil
		case "UPSERT":
			sets[k] = s
		case actionRemove: // squashed journals only (see squash); the API refuses it
			if cur != nil {
				if s.Type == dns.TypeSOA || (s.Type == dns.TypeNS && s.Name == z.Origin) {
					return nil, journalEntry{}, fmt.Errorf("%s: REMOVE %s: the apex SOA and NS cannot be deleted", f, desc)
				}
				sets[k] = nil
			}
		default:
			return nil, journalEntry{}, fmt.Errorf("%s: action %q: want CREATE, DELETE or UPSERT", f, c.Action)
		}
		if s.Type == dns.TypeSOA && s.Name != z.Origin {
			return nil, journalEntry{}, fmt.Errorf("%s: an SOA belongs at the apex %s", f, z.Origin)
		}
	}
	soaSet := get(zone.Key{Name: z.Origin, Type: dns.TypeSOA})
	if soaSet == nil {
		return nil, journalEntry{}, errors.New("changes: the zone lost its SOA")
	}
	soa := dns.Copy(soaSet.RRs[0]).(*dns.SOA)
	if serial == 0 {
		serial = z.Serial() + 1
		if serial == 0 {
			serial = 1
		}
	}
	soa.Serial = serial
	newSOA := &zone.RRSet{Name: z.Origin, Type: dns.TypeSOA, TTL: soaSet.TTL, RRs: []dns.RR{soa}}
	// Only what the batch touched changes: removed are the sets it had
	// before, added the sets it has after (and the SOA with its new serial).
	soaKey := zone.Key{Name: z.Origin, Type: dns.TypeSOA}
	remove := []zone.Key{soaKey}
	add := []*zone.RRSet{newSOA}
	for k, old := range before {
		if k == soaKey {
			continue
		}
		if old != nil {
			remove = append(remove, k)
		}
		if cur := sets[k]; cur != nil {
			add = append(add, cur)
		}
	}
	nz, err := z.Apply(remove, add)
	if err != nil {
		return nil, journalEntry{}, fmt.Errorf("changes: %w", err)
	}
	if routed {
		return nz, diff(z, nz), nil
	}
	e := journalEntry{from: z.SOA, to: nz.SOA}
	for k, old := range before {
		var oldRRs, newRRs []dns.RR
		if old != nil && k.Type != dns.TypeSOA {
			oldRRs = old.RRs
		}
		if cur := sets[k]; cur != nil && k.Type != dns.TypeSOA {
			newRRs = cur.RRs
		}
		for _, r := range oldRRs {
			if !slices.ContainsFunc(newRRs, func(o dns.RR) bool { return dns.IsDuplicate(r, o) }) {
				e.removed = append(e.removed, r)
			}
		}
		for _, r := range newRRs {
			if !slices.ContainsFunc(oldRRs, func(o dns.RR) bool { return dns.IsDuplicate(r, o) }) {
				e.added = append(e.added, r)
			}
		}
	}
	return nz, e, nil
}

// newChangeID returns "C" and 20 hex digits.
func newChangeID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "C" + strings.ToUpper(hex.EncodeToString(b[:]))
}

// replay applies stored batches to base in order; a batch that no longer
// applies (the file changed under it) is skipped and logged. When more
// than 2 × maxJournal batches are stored, all but the newest maxJournal
// are squashed into one (see squash) in the store, so that the journal
// and the replay at start stay bounded. s.mu must be held.
func (s *Service) replay(base *zone.Zone, sz *store.Zone) (*zone.Zone, []journalEntry, error) {
	z := base
	var errs []error
	var journal []journalEntry
	old := 0 // batches to squash
	if len(sz.Batches) > 2*maxJournal {
		old = len(sz.Batches) - maxJournal
	}
	var sq squash
	for i, raw := range sz.Batches {
		var b batchRecord
		if err := json.Unmarshal(raw, &b); err != nil {
			errs = append(errs, err)
			continue
		}
		serial := max(z.Serial()+1, b.Serial)
		nz, e, err := applyDiff(z, b.Changes, serial)
		if err != nil {
			errs = append(errs, fmt.Errorf("batch %s: %w", b.ID, err))
			continue
		}
		if i < old {
			sq.add(z.Origin, b)
		}
		journal = append(journal, e)
		z = nz
	}
	if len(journal) > maxJournal {
		journal = journal[len(journal)-maxJournal:]
	}
	if old > 0 {
		if err := s.compact(sz, old, sq); err != nil {
			errs = append(errs, fmt.Errorf("compacting the stored changes: %w", err))
		}
	}
	return z, journal, errors.Join(errs...)
}

// actionRemove deletes a record set if it exists, whatever its values:
// what a DELETE becomes in a squashed batch, which must apply to whatever
// the base is when replayed.
const actionRemove = "REMOVE"

// squash folds applied batches into one with the same net effect: for
// each record set they touched, an UPSERT of its last value or a REMOVE.
// Batches that did not apply at replay are left out, as they were then.
type squash struct {
	order []zone.Key
	final map[zone.Key]Change
	last  batchRecord
	n     int // batches folded in
}

func (q *squash) add(origin string, b batchRecord) {
	if q.final == nil {
		q.final = map[zone.Key]Change{}
	}
	for _, c := range b.Changes {
		rs, err := c.RRSet.toZone(origin)
		if err != nil {
			continue // it applied, so it parses; nothing else to do
		}
		k := rs.Key()
		if _, seen := q.final[k]; !seen {
			q.order = append(q.order, k)
		}
		switch strings.ToUpper(c.Action) {
		case "DELETE", actionRemove:
			q.final[k] = Change{Action: actionRemove, RRSet: c.RRSet}
		default:
			q.final[k] = Change{Action: "UPSERT", RRSet: c.RRSet}
		}
	}
	q.last = b
	q.n++
}

// record is the squashed batch (nil when no batch applied).
func (q *squash) record() ([]byte, error) {
	if q.n == 0 || len(q.order) == 0 {
		return nil, nil
	}
	r := batchRecord{ID: q.last.ID, Comment: fmt.Sprintf("%d batches squashed, the last %s", q.n, q.last.ID),
		SubmittedAt: q.last.SubmittedAt, Serial: q.last.Serial}
	for _, k := range q.order {
		r.Changes = append(r.Changes, q.final[k])
	}
	return json.Marshal(r)
}

// compact replaces the n oldest stored batches of sz with q's record.
func (s *Service) compact(sz *store.Zone, n int, q squash) error {
	data, err := q.record()
	if err != nil {
		return err
	}
	if err := s.store.CompactBatches(sz.View, sz.Name, n, data); err != nil {
		return err
	}
	s.log.Info("stored changes compacted", "zone", sz.Name, "view", sz.View, "squashed", n, "kept", len(sz.Batches)-n)
	return nil
}

// baseZone builds the starting version of an API-managed zone.
func baseZone(sz *store.Zone) (*zone.Zone, error) {
	origin := sz.Name
	ns := sz.Nameservers
	if len(ns) == 0 {
		ns = []string{"ns1." + origin}
	}
	email := sz.SOAEmail
	if email == "" {
		email = "hostmaster." + origin
	}
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 900},
		Ns: dns.Fqdn(ns[0]), Mbox: dns.Fqdn(email), Serial: sz.Serial, Refresh: 7200, Retry: 900, Expire: 1209600, Minttl: 86400}
	sets := []*zone.RRSet{{Name: origin, Type: dns.TypeSOA, TTL: 900, RRs: []dns.RR{soa}}}
	nsSet := &zone.RRSet{Name: origin, Type: dns.TypeNS, TTL: 172800}
	for _, n := range ns {
		nsSet.RRs = append(nsSet.RRs, &dns.NS{Hdr: dns.RR_Header{Name: origin, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 172800}, Ns: dns.CanonicalName(n)})
	}
	sets = append(sets, nsSet)
	return zone.Build(origin, sets)
}

// dateSerial is a serial for a new zone: YYYYMMDD01.
func dateSerial(t time.Time) uint32 {
	y, m, d := t.UTC().Date()
	return uint32(y*1000000+int(m)*10000+d*100) + 1
}
