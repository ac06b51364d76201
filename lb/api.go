package lb

import (
	"errors"
	"net/http"
	"time"

	"github.com/edgestack/edgestack/internal/admin"
	"github.com/edgestack/edgestack/lb/targetgroup"
)

// GroupInfo is a target group as the API shows it.
type GroupInfo struct {
	Name      string                   `json:"name"`
	Protocol  string                   `json:"protocol"`
	Algorithm targetgroup.Algorithm    `json:"algorithm"`
	Healthy   int                      `json:"healthy"`
	Targets   []targetgroup.TargetInfo `json:"targets"`
}

// ListenerInfo is a listener as the API shows it.
type ListenerInfo struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Listen   string `json:"listen"`
	Addr     string `json:"addr"`
	Rules    int    `json:"rules"`
}

// State is GET /v1/state.
type State struct {
	Listeners []ListenerInfo `json:"listeners"`
	Groups    []GroupInfo    `json:"target_groups"`
}

// RegisterRequest is the body of POST /v1/target-groups/{group}/targets.
type RegisterRequest struct {
	Address string `json:"address"`
	Weight  int    `json:"weight,omitempty"`
}

func groupInfo(g *targetgroup.Group) GroupInfo {
	c := g.Config()
	return GroupInfo{Name: g.Name, Protocol: c.Protocol, Algorithm: c.Algorithm, Healthy: g.HealthyCount(), Targets: g.Info()}
}

func (s *Service) registerAPI() {
	a := s.deps.Admin
	a.Handle("GET /v1/target-groups", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := []GroupInfo{}
		for _, g := range s.groups.Groups() {
			out = append(out, groupInfo(g))
		}
		admin.WriteJSON(w, http.StatusOK, out)
	}))
	a.Handle("GET /v1/target-groups/{group}/targets", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g := s.groups.Group(r.PathValue("group"))
		if g == nil {
			admin.WriteError(w, http.StatusNotFound, errors.New("no such target group "+quote(r.PathValue("group"))))
			return
		}
		admin.WriteJSON(w, http.StatusOK, g.Info())
	}))
	a.HandleAuth("POST /v1/target-groups/{group}/targets", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req RegisterRequest
		if !admin.DecodeJSON(w, r, 1<<16, &req) {
			return
		}
		t, err := s.groups.Register(r.PathValue("group"), targetgroup.TargetConfig{Address: req.Address, Weight: req.Weight})
		if err != nil {
			admin.WriteError(w, statusOf(err), err)
			return
		}
		admin.WriteJSON(w, http.StatusCreated, targetgroup.TargetInfo{Address: t.Addr, Weight: t.Weight(), Source: t.Source, State: t.State()})
	}))
	a.HandleAuth("DELETE /v1/target-groups/{group}/targets/{address}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done, err := s.groups.Deregister(r.PathValue("group"), r.PathValue("address"))
		if err != nil {
			admin.WriteError(w, statusOf(err), err)
			return
		}
		if r.URL.Query().Get("wait") == "true" {
			select {
			case <-done:
				admin.WriteJSON(w, http.StatusOK, map[string]string{"address": r.PathValue("address"), "state": "removed"})
				return
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Minute):
			}
		}
		admin.WriteJSON(w, http.StatusAccepted, map[string]string{"address": r.PathValue("address"), "state": "draining"})
	}))
	a.Handle("GET /v1/listeners", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admin.WriteJSON(w, http.StatusOK, s.listenerInfo())
	}))
	a.Handle("GET /v1/state", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := State{Listeners: s.listenerInfo(), Groups: []GroupInfo{}}
		for _, g := range s.groups.Groups() {
			st.Groups = append(st.Groups, groupInfo(g))
		}
		admin.WriteJSON(w, http.StatusOK, st)
	}))
}

func (s *Service) listenerInfo() []ListenerInfo {
	out := []ListenerInfo{}
	for _, lc := range s.cfg.Load().Listeners {
		lc = lc.withDefaults()
		li := ListenerInfo{Name: lc.Name, Protocol: lc.Protocol, Listen: lc.Listen, Rules: len(lc.Rules)}
		if a := s.Addr(lc.Name); a != nil {
			li.Addr = a.String()
		}
		out = append(out, li)
	}
	return out
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, targetgroup.ErrUnknownGroup), errors.Is(err, targetgroup.ErrUnknownTarget):
		return http.StatusNotFound
	case errors.Is(err, targetgroup.ErrExists):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

func quote(s string) string { return `"` + s + `"` }
