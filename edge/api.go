package edge

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	"github.com/edgestack/edgestack/internal/admin"
	dto "github.com/prometheus/client_model/go"
)

// InvalidationRequest is the body of POST /v1/invalidations.
type InvalidationRequest struct {
	// Distribution limits the invalidation to one distribution; empty
	// means every distribution on this edge.
	Distribution string `json:"distribution,omitempty"`
	// Paths are exact paths or patterns with '*' ("/img/*", "/*").
	Paths []string `json:"paths,omitempty"`
	// Tags match Surrogate-Key / Cache-Tag values of stored responses.
	Tags []string `json:"tags,omitempty"`
}

// Invalidation is the answer.
type Invalidation struct {
	ID           string    `json:"id"`
	Status       string    `json:"status"`
	Distribution string    `json:"distribution,omitempty"`
	Paths        []string  `json:"paths,omitempty"`
	Tags         []string  `json:"tags,omitempty"`
	CreateTime   time.Time `json:"create_time"`
}

// Validate checks an invalidation request against the running config.
func (s *Service) validateInvalidation(req *InvalidationRequest) error {
	var errs []error
	if len(req.Paths) == 0 && len(req.Tags) == 0 {
		errs = append(errs, errors.New("give at least one path or tag"))
	}
	if len(req.Paths)+len(req.Tags) > 3000 {
		errs = append(errs, errors.New("at most 3000 paths and tags per invalidation"))
	}
	for i, p := range req.Paths {
		if !strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "*") {
			errs = append(errs, fmt.Errorf("paths[%d]: %q must start with / or *", i, p))
		}
	}
	for i, t := range req.Tags {
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			errs = append(errs, fmt.Errorf("tags[%d]: invalid tag %q", i, t))
		}
	}
	if req.Distribution != "" {
		found := false
		for _, d := range s.h.snap.Load().dists {
			found = found || d.name == req.Distribution
		}
		if !found {
			errs = append(errs, fmt.Errorf("distribution: no distribution named %q", req.Distribution))
		}
	}
	return errors.Join(errs...)
}

// Invalidate applies an invalidation now: later lookups miss every
// matching object.
func (s *Service) Invalidate(req InvalidationRequest) (Invalidation, error) {
	if err := s.validateInvalidation(&req); err != nil {
		return Invalidation{}, err
	}
	var bans []cache.Ban
	for _, p := range req.Paths {
		bans = append(bans, cache.Ban{Dist: req.Distribution, Path: p})
	}
	for _, t := range req.Tags {
		bans = append(bans, cache.Ban{Dist: req.Distribution, Tag: t})
	}
	seq := s.store.Invalidate(bans...)
	s.m.invalid.Add(float64(len(bans)))
	s.log.Info("invalidation", "distribution", req.Distribution, "paths", len(req.Paths), "tags", len(req.Tags))
	return Invalidation{ID: "I" + strconv.FormatUint(seq, 10), Status: "Completed", Distribution: req.Distribution,
		Paths: req.Paths, Tags: req.Tags, CreateTime: time.Now().UTC()}, nil
}

// Stats is the body of GET /v1/stats.
type Stats struct {
	Cache         cache.Stats                 `json:"cache"`
	Requests      map[string]map[string]int64 `json:"requests"` // distribution -> cache status -> count
	Coalesced     int64                       `json:"coalesced_requests"`
	Invalidations int64                       `json:"invalidations"`
}

// Stats reports counters.
func (s *Service) Stats() Stats {
	st := Stats{Cache: s.store.Stats(), Requests: map[string]map[string]int64{}}
	for _, d := range s.h.snap.Load().dists {
		m := map[string]int64{}
		for i, c := range d.counters {
			if c == nil {
				continue
			}
			if v := counterValue(c); v > 0 {
				m[statusNames[i]] = v
			}
		}
		st.Requests[d.name] = m
	}
	st.Coalesced = counterValue(s.m.coalesced)
	st.Invalidations = counterValue(s.m.invalid)
	return st
}

func counterValue(c interface{ Write(*dto.Metric) error }) int64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil || m.Counter == nil {
		return 0
	}
	return int64(m.Counter.GetValue())
}

// DistributionInfo describes one distribution in GET /v1/distributions.
type DistributionInfo struct {
	Name      string   `json:"name"`
	Domains   []string `json:"domains"`
	Origins   []string `json:"origins"`
	Behaviors []string `json:"behaviors"`
}

func (s *Service) registerAPI() {
	a := s.deps.Admin
	a.HandleAuth("POST /v1/invalidations", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req InvalidationRequest
		if !admin.DecodeJSON(w, r, 1<<20, &req) {
			return
		}
		inv, err := s.Invalidate(req)
		if err != nil {
			admin.WriteError(w, http.StatusBadRequest, err)
			return
		}
		admin.WriteJSON(w, http.StatusCreated, inv)
	}))
	a.Handle("GET /v1/stats", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admin.WriteJSON(w, http.StatusOK, s.Stats())
	}))
	a.Handle("GET /v1/distributions", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cfg := s.cfg.Load()
		out := []DistributionInfo{}
		for _, d := range cfg.Distributions {
			di := DistributionInfo{Name: d.Name, Domains: d.Domains}
			for _, o := range d.Origins {
				di.Origins = append(di.Origins, o.Name)
			}
			for _, g := range d.OriginGroups {
				di.Origins = append(di.Origins, g.Name)
			}
			for _, b := range d.Behaviors {
				di.Behaviors = append(di.Behaviors, b.Path+" -> "+b.Origin)
			}
			di.Behaviors = append(di.Behaviors, "default -> "+d.DefaultBehavior.Origin)
			out = append(out, di)
		}
		admin.WriteJSON(w, http.StatusOK, out)
	}))
}
