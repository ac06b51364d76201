// Package libdnsprovider is a libdns provider for dnsd's change API, so
// certd (through certmagic) can solve ACME DNS-01 challenges with dnsd.
//
// TXT values are merged into the existing RRSet, so several values per
// name can be present at once: a wildcard and an apex order for the same
// domain both use _acme-challenge.<domain> and can run together. Each
// update is conditional (Route 53's DELETE of the set as read, then a
// CREATE of the new one, in one batch; dnsd answers 409 if the set
// changed meanwhile) and retried on a conflict, so concurrent writers,
// each certificate's own Provider included, never lose each other's
// values.
//
// When VerifyServer is set, AppendRecords returns only once dnsd answers
// the new values over DNS at that address: propagation is checked against
// dnsd directly instead of waiting for a fixed delay.
package libdnsprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// Provider talks to one dnsd admin API.
type Provider struct {
	// URL is dnsd's admin base URL, e.g. "http://127.0.0.1:9101".
	URL string
	// Token is the admin bearer token.
	Token string
	// HTTPClient defaults to a client with a 10s timeout.
	HTTPClient *http.Client
	// VerifyServer, when set, is dnsd's DNS address ("127.0.0.1:53"):
	// AppendRecords waits until it answers the new TXT values.
	VerifyServer string
	// VerifyTimeout bounds that wait. Default: 10s.
	VerifyTimeout time.Duration
	// TTL of created TXT records when the record has none. Default: 60s.
	TTL time.Duration

	mu sync.Mutex
}

var (
	_ libdns.RecordAppender = (*Provider)(nil)
	_ libdns.RecordDeleter  = (*Provider)(nil)
	_ libdns.RecordGetter   = (*Provider)(nil)
)

// rrset is dnsd's RRSet JSON, kept as a map so fields this package does
// not know survive a round trip.
type rrset map[string]any

func (r rrset) name() string { s, _ := r["name"].(string); return s }
func (r rrset) typ() string  { s, _ := r["type"].(string); return s }

// with returns a copy of r holding records instead of its own.
func (r rrset) with(records []string) rrset {
	out := make(rrset, len(r))
	for k, v := range r {
		out[k] = v
	}
	out["records"] = toAny(records)
	return out
}

func (r rrset) records() []string {
	raw, _ := r["records"].([]any)
	out := make([]string, 0, len(raw))
	for _, v := range raw {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

type change struct {
	Action string `json:"action"`
	RRSet  rrset  `json:"rrset"`
}

type changeBatch struct {
	Comment string   `json:"comment"`
	Changes []change `json:"changes"`
}

// QuoteTXT renders a TXT value in master-file presentation format.
func QuoteTXT(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// UnquoteTXT reverses QuoteTXT for a single character-string (several
// quoted strings are concatenated).
func UnquoteTXT(s string) string {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, `"`) {
		return s
	}
	var b strings.Builder
	in, esc := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			b.WriteByte(c)
			esc = false
		case c == '\\' && in:
			esc = true
		case c == '"':
			in = !in
		case in:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func fqdn(zone string) string { return dns.Fqdn(strings.ToLower(zone)) }

// GetRecords returns the zone's records (TXT ones as libdns.TXT).
func (p *Provider) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	sets, err := p.rrsets(ctx, zone)
	if err != nil {
		return nil, err
	}
	var out []libdns.Record
	for _, s := range sets {
		ttl, _ := s["ttl"].(float64)
		for _, v := range s.records() {
			rr := libdns.RR{Name: libdns.RelativeName(s.name(), fqdn(zone)), TTL: time.Duration(ttl) * time.Second, Type: s.typ(), Data: v}
			if rr.Type == "TXT" {
				out = append(out, libdns.TXT{Name: rr.Name, TTL: rr.TTL, Text: UnquoteTXT(v)})
				continue
			}
			out = append(out, rr)
		}
	}
	return out, nil
}

// AppendRecords adds TXT values (other types are refused), keeping values
// already present.
func (p *Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	add, err := p.group(zone, recs)
	if err != nil {
		return nil, err
	}
	ttl := p.ttlSeconds(recs)
	err = p.update(ctx, zone, "certd: ACME DNS-01 challenge", func(sets []rrset) []change {
		var changes []change
		for name, values := range add {
			cur := find(sets, name)
			if cur == nil {
				quoted := make([]string, 0, len(values))
				for _, v := range values {
					if !slices.Contains(quoted, QuoteTXT(v)) {
						quoted = append(quoted, QuoteTXT(v))
					}
				}
				changes = append(changes, change{Action: "CREATE", RRSet: rrset{"name": name, "type": "TXT", "ttl": ttl, "records": toAny(quoted)}})
				continue
			}
			merged := cur.records()
			for _, v := range values {
				if !slices.Contains(merged, QuoteTXT(v)) {
					merged = append(merged, QuoteTXT(v))
				}
			}
			if len(merged) == len(cur.records()) {
				continue // all there already
			}
			next := cur.with(merged)
			next["ttl"] = ttl
			changes = append(changes, change{Action: "DELETE", RRSet: cur}, change{Action: "CREATE", RRSet: next})
		}
		return changes
	})
	if err != nil {
		return nil, err
	}
	if p.VerifyServer != "" {
		for name, values := range add {
			if err := p.verify(ctx, name, values); err != nil {
				return nil, err
			}
		}
	}
	return recs, nil
}

// DeleteRecords removes TXT values, deleting the RRSet when none is left.
func (p *Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	del, err := p.group(zone, recs)
	if err != nil {
		return nil, err
	}
	var deleted []libdns.Record
	err = p.update(ctx, zone, "certd: ACME DNS-01 challenge cleanup", func(sets []rrset) []change {
		deleted = deleted[:0]
		var changes []change
		for name, values := range del {
			cur := find(sets, name)
			if cur == nil {
				continue
			}
			var keep []string
			for _, v := range cur.records() {
				if slices.Contains(values, UnquoteTXT(v)) {
					deleted = append(deleted, libdns.TXT{Name: libdns.RelativeName(name, fqdn(zone)), Text: UnquoteTXT(v)})
					continue
				}
				keep = append(keep, v)
			}
			switch {
			case len(keep) == len(cur.records()):
			case len(keep) == 0:
				changes = append(changes, change{Action: "DELETE", RRSet: cur})
			default:
				changes = append(changes, change{Action: "DELETE", RRSet: cur}, change{Action: "CREATE", RRSet: cur.with(keep)})
			}
		}
		return changes
	})
	if err != nil {
		return nil, err
	}
	return deleted, nil
}

// maxAttempts bounds the read, change, submit rounds of one update when
// other writers keep changing the same record sets.
const maxAttempts = 10

// update reads the zone's record sets, builds changes from them and
// submits those. Every change is conditional: a CREATE fails if the set
// appeared meanwhile, a DELETE (also the first half of a replacement) if
// the set is no longer exactly what was read, and dnsd then answers 409
// and applies nothing. Then it reads again and retries, so concurrent
// writers (another certificate's order for the same
// _acme-challenge name, another certd) never lose each other's values,
// which a read-then-UPSERT would.
func (p *Provider) update(ctx context.Context, zone, comment string, build func([]rrset) []change) error {
	var err error
	for attempt := range maxAttempts {
		var sets []rrset
		if sets, err = p.rrsets(ctx, zone); err != nil {
			return err
		}
		changes := build(sets)
		if len(changes) == 0 {
			return nil
		}
		err = p.submit(ctx, zone, changeBatch{Comment: comment, Changes: changes})
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
			return err
		}
		// Back off a little, differently for each writer, so two that
		// collided do not collide again.
		wait := time.Duration(attempt+1)*10*time.Millisecond + time.Duration(rand.Int64N(int64(10*time.Millisecond)))
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
	}
	return fmt.Errorf("libdnsprovider: gave up after %d conflicting updates: %w", maxAttempts, err)
}

// group maps fully qualified names to TXT values.
func (p *Provider) group(zone string, recs []libdns.Record) (map[string][]string, error) {
	out := map[string][]string{}
	for _, r := range recs {
		rr := r.RR()
		if rr.Type != "TXT" && rr.Type != "" {
			return nil, fmt.Errorf("libdnsprovider: only TXT records are supported, got %s", rr.Type)
		}
		name := strings.ToLower(libdns.AbsoluteName(rr.Name, fqdn(zone)))
		out[name] = append(out[name], rr.Data)
	}
	return out, nil
}

func (p *Provider) ttlSeconds(recs []libdns.Record) int {
	ttl := p.TTL
	for _, r := range recs {
		if t := r.RR().TTL; t > 0 {
			ttl = t
		}
	}
	if ttl <= 0 {
		ttl = 60 * time.Second
	}
	return int(ttl / time.Second)
}

func find(sets []rrset, name string) rrset {
	for _, s := range sets {
		if strings.EqualFold(s.name(), name) && s.typ() == "TXT" {
			return s
		}
	}
	return nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (p *Provider) client() *http.Client {
	if p.HTTPClient != nil {
		return p.HTTPClient
	}
	return &http.Client{Timeout: 10 * time.Second}
}

func (p *Provider) rrsets(ctx context.Context, zone string) ([]rrset, error) {
	var sets []rrset
	if err := p.do(ctx, http.MethodGet, "/v1/zones/"+url.PathEscape(fqdn(zone))+"/rrsets", nil, &sets); err != nil {
		return nil, err
	}
	return sets, nil
}

func (p *Provider) submit(ctx context.Context, zone string, batch changeBatch) error {
	return p.do(ctx, http.MethodPost, "/v1/zones/"+url.PathEscape(fqdn(zone))+"/changes", batch, nil)
}

// APIError is an error answer of dnsd.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("dnsd answered %d: %s", e.Status, e.Message)
}

func (p *Provider) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(p.URL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("libdnsprovider: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if p.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.Token)
	}
	resp, err := p.client().Do(req)
	if err != nil {
		return fmt.Errorf("libdnsprovider: dnsd API unreachable: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("libdnsprovider: %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var eb struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		return fmt.Errorf("libdnsprovider: %s %s: %w", method, path, &APIError{Status: resp.StatusCode, Message: msg})
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("libdnsprovider: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// verify waits until VerifyServer answers all values for name.
func (p *Provider) verify(ctx context.Context, name string, values []string) error {
	timeout := p.VerifyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &dns.Client{Timeout: 2 * time.Second}
	var last error
	for {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
		in, _, err := c.ExchangeContext(ctx, m, p.VerifyServer)
		if err == nil {
			have := map[string]bool{}
			for _, rr := range in.Answer {
				if t, ok := rr.(*dns.TXT); ok {
					// miekg keeps presentation escapes in Txt.
					have[UnquoteTXT(`"`+strings.Join(t.Txt, "")+`"`)] = true
				}
			}
			missing := ""
			for _, v := range values {
				if !have[v] {
					missing = v
				}
			}
			if missing == "" {
				return nil
			}
			last = fmt.Errorf("%s answers rcode %s without TXT %q", p.VerifyServer, dns.RcodeToString[in.Rcode], missing)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("libdnsprovider: TXT %s not served by dnsd within %v: %w", name, timeout, errors.Join(last, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
