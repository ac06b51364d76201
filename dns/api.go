package dnsserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/edgestack/edgestack/dns/store"
	"github.com/edgestack/edgestack/dns/zone"
	"github.com/edgestack/edgestack/internal/admin"
	"github.com/edgestack/edgestack/internal/health"
	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"
)

const maxBody = 8 << 20

// maxJournal bounds the IXFR differences kept per zone, and the stored
// batches replayed at start (between maxJournal and twice that, see
// replay). A variable for tests.
var maxJournal = 1000

// registerAPI adds the change API to the admin server. Reads are open;
// changes need the admin token.
func (s *Service) registerAPI() {
	a := s.deps.Admin
	a.Handle("GET /v1/zones", http.HandlerFunc(s.apiListZones))
	a.HandleAuth("POST /v1/zones", http.HandlerFunc(s.apiCreateZone))
	a.HandleAuth("DELETE /v1/zones/{zone}", http.HandlerFunc(s.apiDeleteZone))
	a.Handle("GET /v1/zones/{zone}/rrsets", http.HandlerFunc(s.apiRRSets))
	a.HandleAuth("POST /v1/zones/{zone}/changes", http.HandlerFunc(s.apiChanges))
	a.Handle("GET /v1/zones/{zone}/export", http.HandlerFunc(s.apiExport))
	a.Handle("GET /v1/healthchecks", http.HandlerFunc(s.apiListChecks))
	a.HandleAuth("POST /v1/healthchecks", http.HandlerFunc(s.apiSetCheck))
	a.HandleAuth("DELETE /v1/healthchecks/{id}", http.HandlerFunc(s.apiDeleteCheck))
}

func (s *Service) apiListZones(w http.ResponseWriter, _ *http.Request) {
	out := s.listZones()
	if out == nil {
		out = []zoneList{}
	}
	admin.WriteJSON(w, http.StatusOK, out)
}

// zoneRef reads the zone path parameter and the optional ?view=.
func zoneRef(r *http.Request) zkey {
	return zkey{view: r.URL.Query().Get("view"), origin: normZone(r.PathValue("zone"))}
}

// CreateZone is the body of POST /v1/zones.
type CreateZone struct {
	Name        string   `json:"name"`
	View        string   `json:"view,omitempty"`
	SOAEmail    string   `json:"soa_email"`
	Nameservers []string `json:"nameservers"`
}

func (s *Service) apiCreateZone(w http.ResponseWriter, r *http.Request) {
	var req CreateZone
	if !admin.DecodeJSON(w, r, maxBody, &req) {
		return
	}
	if _, ok := dns.IsDomainName(req.Name); !ok || strings.TrimSpace(req.Name) == "" {
		admin.WriteError(w, http.StatusBadRequest, fmt.Errorf("name: %q is not a domain name", req.Name))
		return
	}
	if req.View != "" && !s.hasView(req.View) {
		admin.WriteError(w, http.StatusBadRequest, fmt.Errorf("view: no view named %q in the config", req.View))
		return
	}
	for i, n := range req.Nameservers {
		if _, ok := dns.IsDomainName(n); !ok || n == "" {
			admin.WriteError(w, http.StatusBadRequest, fmt.Errorf("nameservers[%d]: %q is not a domain name", i, n))
			return
		}
	}
	if req.SOAEmail != "" {
		if _, ok := dns.IsDomainName(req.SOAEmail); !ok || strings.Contains(req.SOAEmail, "@") {
			admin.WriteError(w, http.StatusBadRequest, fmt.Errorf("soa_email: %q must be written as a domain name (hostmaster.example.com.)", req.SOAEmail))
			return
		}
	}
	k := zkey{req.View, normZone(req.Name)}
	sz := &store.Zone{Name: k.origin, View: k.view, SOAEmail: req.SOAEmail, Nameservers: req.Nameservers, Serial: dateSerial(time.Now()), Created: time.Now().UTC()}
	base, err := baseZone(sz)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.zones[k] != nil {
		admin.WriteError(w, http.StatusConflict, fmt.Errorf("zone %s already exists", k.origin))
		return
	}
	if err := s.store.PutZone(sz); err != nil {
		s.log.Error("storing zone", "zone", k.origin, "err", err)
		admin.WriteError(w, http.StatusInternalServerError, errors.New("storing the zone failed"))
		return
	}
	s.zones[k] = &zoneState{key: k, cur: base}
	s.publish()
	s.queueNotify(k.origin)
	s.log.Info("zone created", "zone", k.origin, "view", k.view)
	admin.WriteJSON(w, http.StatusCreated, zoneList{Name: k.origin, View: k.view, Serial: base.Serial(), RRSets: len(base.Sets()), Source: "api"})
}

func (s *Service) hasView(name string) bool {
	for _, v := range s.cfg.Load().Views {
		if v.Name == name {
			return true
		}
	}
	return false
}

func (s *Service) apiDeleteZone(w http.ResponseWriter, r *http.Request) {
	k := zoneRef(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	zs := s.zones[k]
	if zs == nil {
		admin.WriteError(w, http.StatusNotFound, fmt.Errorf("no zone %s", k.origin))
		return
	}
	if zs.file != "" {
		admin.WriteError(w, http.StatusConflict, fmt.Errorf("zone %s is served from %s; remove it from the config instead", k.origin, zs.file))
		return
	}
	if err := s.store.DeleteZone(k.view, k.origin); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("deleting zone", "zone", k.origin, "err", err)
		admin.WriteError(w, http.StatusInternalServerError, errors.New("deleting the zone failed"))
		return
	}
	delete(s.zones, k)
	s.publish()
	s.log.Info("zone deleted", "zone", k.origin, "view", k.view)
	w.WriteHeader(http.StatusNoContent)
}

// current returns the zone's current version (immutable), read under the
// lock that changes replace it under; nil: no such zone.
func (s *Service) current(k zkey) *zone.Zone {
	s.mu.Lock()
	defer s.mu.Unlock()
	if zs := s.zones[k]; zs != nil {
		return zs.cur
	}
	return nil
}

func (s *Service) apiRRSets(w http.ResponseWriter, r *http.Request) {
	k := zoneRef(r)
	z := s.current(k)
	if z == nil {
		admin.WriteError(w, http.StatusNotFound, fmt.Errorf("no zone %s", k.origin))
		return
	}
	out := []RRSet{}
	for _, set := range z.Sets() {
		out = append(out, fromZone(set))
	}
	admin.WriteJSON(w, http.StatusOK, out)
}

func (s *Service) apiChanges(w http.ResponseWriter, r *http.Request) {
	k := zoneRef(r)
	var b ChangeBatch
	if !admin.DecodeJSON(w, r, maxBody, &b) {
		return
	}
	info, status, err := s.applyBatch(k, b)
	if err != nil {
		if status >= 500 {
			s.log.Error("change batch", "zone", k.origin, "err", err)
		}
		admin.WriteError(w, status, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, info)
}

// applyBatch validates and applies a batch, stores it (synced) and only
// then publishes it.
func (s *Service) applyBatch(k zkey, b ChangeBatch) (ChangeInfo, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	zs := s.zones[k]
	if zs == nil {
		return ChangeInfo{}, http.StatusNotFound, fmt.Errorf("no zone %s", k.origin)
	}
	for i, c := range b.Changes {
		switch strings.ToUpper(c.Action) {
		case "CREATE", "DELETE", "UPSERT":
		default:
			s.m.changes.WithLabelValues("rejected").Inc()
			return ChangeInfo{}, http.StatusBadRequest, fmt.Errorf("changes[%d]: action %q: want CREATE, DELETE or UPSERT", i, c.Action)
		}
	}
	if err := s.checkRefs(b.Changes); err != nil {
		s.m.changes.WithLabelValues("rejected").Inc()
		return ChangeInfo{}, http.StatusBadRequest, err
	}
	nz, entry, err := applyDiff(zs.cur, b.Changes, 0)
	if err != nil {
		s.m.changes.WithLabelValues("rejected").Inc()
		if errors.As(err, new(conflictError)) {
			return ChangeInfo{}, http.StatusConflict, err
		}
		return ChangeInfo{}, http.StatusBadRequest, err
	}
	now := time.Now().UTC()
	rec := batchRecord{ID: newChangeID(), Comment: b.Comment, SubmittedAt: now, Serial: nz.Serial(), Changes: b.Changes}
	data, err := json.Marshal(rec)
	if err != nil {
		return ChangeInfo{}, http.StatusInternalServerError, err
	}
	sz := &store.Zone{Name: k.origin, View: k.view, File: zs.file != "", Serial: zs.cur.Serial(), Created: now}
	if err := s.store.AppendBatch(sz, data); err != nil {
		s.m.changes.WithLabelValues("rejected").Inc()
		return ChangeInfo{}, http.StatusInternalServerError, fmt.Errorf("storing the change failed: %w", err)
	}
	zs.journal = append(zs.journal, entry)
	if len(zs.journal) > maxJournal { // older serials get a full transfer
		// A new array: an IXFR may be reading the old one (xfr.go takes
		// the slice under the lock and reads it after), and an in-place
		// delete would shift entries under it.
		zs.journal = slices.Clone(zs.journal[len(zs.journal)-maxJournal:])
	}
	zs.cur = nz
	s.publish()
	s.queueNotify(k.origin)
	s.m.changes.WithLabelValues("applied").Inc()
	s.log.Info("change applied", "zone", k.origin, "view", k.view, "id", rec.ID, "serial", nz.Serial(), "changes", len(b.Changes))
	return ChangeInfo{ID: rec.ID, Status: "INSYNC", Serial: nz.Serial(), SubmittedAt: now.Format(time.RFC3339)}, http.StatusOK, nil
}

// checkRefs rejects changes naming health checks or CIDR collections that
// do not exist (as Route 53 does).
func (s *Service) checkRefs(changes []Change) error {
	cfg := s.cfg.Load()
	for i, c := range changes {
		if strings.EqualFold(c.Action, "DELETE") {
			continue
		}
		if id := c.RRSet.HealthCheckID; id != "" {
			if _, ok := s.health.State(id); !ok {
				return fmt.Errorf("changes[%d]: health check %q does not exist", i, id)
			}
		}
		if coll := c.RRSet.CIDR.Collection; coll != "" {
			if _, ok := cfg.CIDRCollections[coll]; !ok {
				return fmt.Errorf("changes[%d]: CIDR collection %q is not in the config", i, coll)
			}
			if loc := c.RRSet.CIDR.Location; loc != "*" {
				if _, ok := cfg.CIDRCollections[coll][loc]; !ok {
					return fmt.Errorf("changes[%d]: CIDR collection %q has no location %q", i, coll, loc)
				}
			}
		}
	}
	return nil
}

func (s *Service) apiExport(w http.ResponseWriter, r *http.Request) {
	k := zoneRef(r)
	z := s.current(k)
	if z == nil {
		admin.WriteError(w, http.StatusNotFound, fmt.Errorf("no zone %s", k.origin))
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "; zone %s serial %d exported by dnsd %s\n$ORIGIN %s\n", k.origin, z.Serial(), time.Now().UTC().Format(time.RFC3339), k.origin)
	for _, set := range z.Sets() {
		p := set.Policy
		if p.Kind() != "simple" || p.HealthCheckID != "" || p.Alias != nil {
			j, _ := json.Marshal(fromZone(set))
			fmt.Fprintf(&b, "; routed record set: %s\n", j)
			if p.Alias != nil {
				continue
			}
		}
		for _, rr := range set.RRs {
			b.WriteString(rr.String())
			b.WriteByte('\n')
		}
	}
	w.Header().Set("Content-Type", "text/dns")
	_, _ = w.Write(b.Bytes())
}

// HealthCheck is the JSON form of a check in the API.
type HealthCheck struct {
	ID     string          `json:"id"`
	Config json.RawMessage `json:"config"`
	// Read-only fields of GET.
	State     string `json:"state,omitempty"`
	Source    string `json:"source,omitempty"` // "config" or "api"
	LastError string `json:"last_error,omitempty"`
}

// checkJSON renders a CheckConfig with its YAML (snake_case) keys.
func checkJSON(c health.CheckConfig) json.RawMessage {
	y, err := yaml.Marshal(c)
	if err != nil {
		return json.RawMessage("{}")
	}
	var m map[string]any
	if yaml.Unmarshal(y, &m) != nil {
		return json.RawMessage("{}")
	}
	j, _ := json.Marshal(m)
	return j
}

// parseCheck reads a CheckConfig from JSON with the config's keys
// (JSON is YAML), rejecting unknown keys.
func parseCheck(raw json.RawMessage) (health.CheckConfig, error) {
	var c health.CheckConfig
	if len(bytes.TrimSpace(raw)) == 0 {
		return c, errors.New("config: required")
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	err := dec.Decode(&c)
	if err == nil {
		return c, nil
	}
	// Also accept encoding/json's form of the struct (Go field names).
	var j health.CheckConfig
	jd := json.NewDecoder(bytes.NewReader(raw))
	jd.DisallowUnknownFields()
	if jd.Decode(&j) == nil {
		return j, nil
	}
	return c, fmt.Errorf("config: %w", err)
}

func (s *Service) apiListChecks(w http.ResponseWriter, _ *http.Request) {
	stored, err := s.store.HealthChecks()
	if err != nil {
		admin.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	cfg := s.cfg.Load()
	out := []HealthCheck{}
	for _, st := range s.health.List() {
		h := HealthCheck{ID: st.ID, State: st.State.String(), LastError: st.LastError, Source: "api"}
		if c, ok := cfg.HealthChecks[st.ID]; ok {
			h.Config, h.Source = checkJSON(c), "config"
		} else {
			h.Config = checkJSON(stored[st.ID])
		}
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	admin.WriteJSON(w, http.StatusOK, out)
}

func (s *Service) apiSetCheck(w http.ResponseWriter, r *http.Request) {
	var req HealthCheck
	if !admin.DecodeJSON(w, r, maxBody, &req) {
		return
	}
	c, err := parseCheck(req.Config)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	if _, ok := s.cfg.Load().HealthChecks[req.ID]; ok {
		admin.WriteError(w, http.StatusConflict, fmt.Errorf("health check %q is defined in the config", req.ID))
		return
	}
	if err := s.health.Set(req.ID, c); err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	if err := s.store.PutHealthCheck(req.ID, c); err != nil {
		s.health.Remove(req.ID)
		s.log.Error("storing health check", "check", req.ID, "err", err)
		admin.WriteError(w, http.StatusInternalServerError, errors.New("storing the health check failed"))
		return
	}
	s.log.Info("health check set", "check", req.ID)
	admin.WriteJSON(w, http.StatusCreated, HealthCheck{ID: req.ID, Config: checkJSON(c), Source: "api"})
}

func (s *Service) apiDeleteCheck(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, ok := s.cfg.Load().HealthChecks[id]; ok {
		admin.WriteError(w, http.StatusConflict, fmt.Errorf("health check %q is defined in the config", id))
		return
	}
	if err := s.store.DeleteHealthCheck(id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			admin.WriteError(w, http.StatusNotFound, fmt.Errorf("no health check %q", id))
			return
		}
		admin.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	s.health.Remove(id)
	s.log.Info("health check deleted", "check", id)
	w.WriteHeader(http.StatusNoContent)
}
