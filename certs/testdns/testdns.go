// Package testdns (a test helper, like net/http/httptest) is a small, real DNS + HTTP server for certd's tests: it
// implements dnsd's change API contract (GET rrsets, POST changes) for TXT
// records and answers over DNS (UDP and TCP, miekg/dns) on loopback: SOA at
// the zone apexes, A 127.0.0.1 for every name inside a zone (so pebble's VA
// reaches the test listeners), the TXT records set through the API, REFUSED
// outside the zones. It stands in for dnsd where dnsd's change API is not
// available.
package testdns

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server is a running fake dnsd.
type Server struct {
	DNSAddr string // host:port, UDP and TCP
	APIURL  string // http://host:port
	Token   string

	mu    sync.Mutex
	zones map[string]bool           // apex FQDN
	txt   map[string][]string       // FQDN -> presentation values
	sets  map[string]map[string]any // FQDN -> last RRSet JSON
	log   []string                  // change log, for assertions
}

// Start starts the server with zones (FQDNs or not); it stops with t.
func Start(t testing.TB, token string, zones ...string) *Server {
	t.Helper()
	s := &Server{Token: token, zones: map[string]bool{}, txt: map[string][]string{}, sets: map[string]map[string]any{}}
	for _, z := range zones {
		s.zones[dns.Fqdn(strings.ToLower(z))] = true
	}
	// UDP and TCP on the same port number: retry when the TCP port is taken.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		if ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	s.DNSAddr = ln.Addr().String()
	udp := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serveDNS)}
	tcp := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(s.serveDNS)}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()

	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.APIURL = "http://" + hl.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/zones/{zone}/rrsets", s.getRRSets)
	mux.HandleFunc("POST /v1/zones/{zone}/changes", s.postChanges)
	hs := &http.Server{Handler: mux}
	go func() { _ = hs.Serve(hl) }()
	t.Cleanup(func() {
		_ = hs.Close()
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
	})
	return s
}

// TXT returns the TXT values (unquoted) served for name.
func (s *Server) TXT(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, v := range s.txt[dns.Fqdn(strings.ToLower(name))] {
		out = append(out, unquote(v))
	}
	return out
}

// parseTXT parses a TXT value in presentation format into miekg's form
// (character-strings with escapes kept).
func parseTXT(v string) []string {
	rr, err := dns.NewRR(". 60 IN TXT " + v)
	if err != nil {
		return []string{v}
	}
	return rr.(*dns.TXT).Txt
}

// unquote parses a TXT value in presentation format to its bytes.
func unquote(v string) string {
	r := strings.NewReplacer(`\`, `\`, `"`, `"`)
	return r.Replace(strings.Join(parseTXT(v), ""))
}

// Log returns the change actions applied, as "ACTION name n-values".
func (s *Server) Log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

func (s *Server) zoneOf(name string) string {
	name = dns.Fqdn(strings.ToLower(name))
	for z := range s.zones {
		if name == z || strings.HasSuffix(name, "."+z) {
			return z
		}
	}
	return ""
}

func (s *Server) serveDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	defer s.mu.Unlock()
	z := s.zoneOf(name)
	if z == "" {
		m.Rcode = dns.RcodeRefused
		_ = w.WriteMsg(m)
		return
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 1}
	}
	switch q.Qtype {
	case dns.TypeSOA:
		if name == z {
			m.Answer = append(m.Answer, &dns.SOA{Hdr: hdr(dns.TypeSOA), Ns: "ns1." + z, Mbox: "hostmaster." + z, Serial: 1, Refresh: 60, Retry: 60, Expire: 600, Minttl: 1})
		}
	case dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.IPv4(127, 0, 0, 1)})
	case dns.TypeTXT:
		for _, v := range s.txt[name] {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: parseTXT(v)})
		}
	}
	_ = w.WriteMsg(m)
}

func (s *Server) auth(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		writeErr(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return false
	}
	return true
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (s *Server) zoneParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	z := dns.Fqdn(strings.ToLower(r.PathValue("zone")))
	if !s.zones[z] {
		writeErr(w, http.StatusNotFound, fmt.Sprintf("zone %q not found", z))
		return "", false
	}
	return z, true
}

func (s *Server) getRRSets(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	z, ok := s.zoneParam(w, r)
	if !ok {
		return
	}
	out := []map[string]any{}
	for name, set := range s.sets {
		if name == z || strings.HasSuffix(name, "."+z) {
			out = append(out, set)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) postChanges(w http.ResponseWriter, r *http.Request) {
	if !s.auth(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	z, ok := s.zoneParam(w, r)
	if !ok {
		return
	}
	var batch struct {
		Comment string `json:"comment"`
		Changes []struct {
			Action string         `json:"action"`
			RRSet  map[string]any `json:"rrset"`
		} `json:"changes"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&batch); err != nil {
		writeErr(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	// Validate everything first, against the sets as each earlier change
	// of the batch leaves them: a bad batch changes nothing. As dnsd, a
	// CREATE of a set that exists, or a DELETE of one that does not or
	// differs from it, is a conflict (409).
	overlay := map[string]map[string]any{}
	current := func(name string) map[string]any {
		if set, ok := overlay[name]; ok {
			return set
		}
		return s.sets[name]
	}
	for i, c := range batch.Changes {
		name, _ := c.RRSet["name"].(string)
		typ, _ := c.RRSet["type"].(string)
		if typ != "TXT" || !strings.HasSuffix(name, ".") || s.zoneOf(name) != z {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("changes[%d]: rrset %q %s not a TXT record in zone %s", i, name, typ, z))
			return
		}
		key := strings.ToLower(name)
		cur := current(key)
		switch c.Action {
		case "UPSERT":
			overlay[key] = c.RRSet
		case "CREATE":
			if cur != nil {
				writeErr(w, http.StatusConflict, fmt.Sprintf("changes[%d]: CREATE %s: the record set already exists", i, name))
				return
			}
			overlay[key] = c.RRSet
		case "DELETE":
			if cur == nil || !sameSet(cur, c.RRSet) {
				writeErr(w, http.StatusConflict, fmt.Sprintf("changes[%d]: DELETE %s: no such record set, or the values do not match", i, name))
				return
			}
			overlay[key] = nil
		default:
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("changes[%d]: unknown action %q", i, c.Action))
			return
		}
	}
	for _, c := range batch.Changes {
		name := strings.ToLower(c.RRSet["name"].(string))
		raw, _ := c.RRSet["records"].([]any)
		var vals []string
		for _, v := range raw {
			if s, ok := v.(string); ok {
				vals = append(vals, s)
			}
		}
		if c.Action == "DELETE" {
			delete(s.sets, name)
			delete(s.txt, name)
		} else {
			s.sets[name] = c.RRSet
			s.txt[name] = vals
		}
		s.log = append(s.log, fmt.Sprintf("%s %s %d", c.Action, name, len(vals)))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"id": "C1", "status": "INSYNC", "serial": 1, "submitted_at": "2026-01-01T00:00:00Z"})
}

// sameSet compares two RRSet JSON objects by TTL and values (in any order).
func sameSet(a, b map[string]any) bool {
	ra, _ := a["records"].([]any)
	rb, _ := b["records"].([]any)
	return fmt.Sprint(a["ttl"]) == fmt.Sprint(b["ttl"]) && len(ra) == len(rb) &&
		!slices.ContainsFunc(ra, func(x any) bool { return !slices.Contains(rb, x) })
}
