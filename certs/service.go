package certd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/certs/manager"
	"github.com/edgestack/edgestack/internal/admin"
	"github.com/edgestack/edgestack/internal/app"
)

// Service is the running certd.
type Service struct {
	log  *slog.Logger
	deps app.Deps
	mgr  *manager.Manager
	cfg  atomic.Pointer[Config]
}

// NewService builds certd from a valid config without starting it.
func NewService(deps app.Deps, cfg *Config) (app.Service[*Config], error) {
	return newService(deps, cfg)
}

func newService(deps app.Deps, cfg *Config) (*Service, error) {
	s := &Service{log: deps.Logger.With("component", "certd"), deps: deps}
	mgr, err := manager.New(manager.Options{
		Dir:                 cfg.Storage.Dir,
		Logger:              deps.Logger.With("component", "certd"),
		Registerer:          deps.Registry,
		RenewCheckInterval:  cfg.Renewal.CheckInterval.D(),
		HTTPChallengeListen: cfg.Challenges.HTTPListen,
		TLSChallengeListen:  cfg.Challenges.TLSListen,
	})
	if err != nil {
		return nil, err
	}
	s.mgr = mgr
	s.cfg.Store(cfg)
	return s, nil
}

// Manager exposes the manager (tests, embedding).
func (s *Service) Manager() *manager.Manager { return s.mgr }

// Start binds the challenge listeners, starts ordering and registers the API.
func (s *Service) Start(ctx context.Context) error {
	cfg := s.cfg.Load()
	settings, specs, err := cfg.settings()
	if err != nil {
		return err
	}
	if err := s.mgr.Start(ctx, settings, specs); err != nil {
		return err
	}
	s.routes(s.deps.Admin)
	s.log.Info("certd serving", "storage", cfg.Storage.Dir, "http_challenges", s.mgr.HTTPChallengeAddr(), "tls_challenges", s.mgr.TLSChallengeAddr(), "certificates", len(specs))
	return nil
}

// Reload applies a new config; storage and challenge listeners need a restart.
func (s *Service) Reload(_ context.Context, cfg *Config) error {
	old := s.cfg.Load()
	settings, specs, err := cfg.settings()
	if err != nil {
		return err
	}
	if old.Storage != cfg.Storage || old.Challenges != cfg.Challenges || old.Renewal.CheckInterval != cfg.Renewal.CheckInterval {
		s.log.Warn("storage, challenges and renewal.check_interval changes need a restart; keeping the running values")
	}
	s.mgr.Update(settings, specs)
	s.cfg.Store(cfg)
	return nil
}

// Shutdown stops ordering; certificates in storage stay.
func (s *Service) Shutdown(ctx context.Context) error { return s.mgr.Stop(ctx) }

// RequestBody is the body of POST /v1/certificates.
type RequestBody struct {
	Names     []string `json:"names"`
	KeyType   string   `json:"key_type,omitempty"`
	Issuers   []string `json:"issuers,omitempty"`
	Challenge string   `json:"challenge,omitempty"`
}

// ImportBody is the body of POST /v1/certificates/import.
type ImportBody struct {
	Certificate string `json:"certificate"` // PEM chain, leaf first
	PrivateKey  string `json:"private_key"` // PEM key
}

func (s *Service) routes(a *admin.Server) {
	a.Handle("GET /v1/certificates", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admin.WriteJSON(w, http.StatusOK, s.mgr.Records())
	}))
	a.Handle("GET /v1/certificates/{name}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec, ok := s.mgr.Record(r.PathValue("name"))
		if !ok {
			admin.WriteError(w, http.StatusNotFound, fmt.Errorf("no certificate for %q", r.PathValue("name")))
			return
		}
		admin.WriteJSON(w, http.StatusOK, rec)
	}))
	a.HandleAuth("POST /v1/certificates", http.HandlerFunc(s.request))
	a.HandleAuth("POST /v1/certificates/import", http.HandlerFunc(s.importCert))
	a.HandleAuth("POST /v1/certificates/{name}/renew", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.mgr.Renew(r.PathValue("name")); err != nil {
			writeErr(w, err)
			return
		}
		rec, _ := s.mgr.Record(r.PathValue("name"))
		admin.WriteJSON(w, http.StatusAccepted, rec)
	}))
	a.HandleAuth("DELETE /v1/certificates/{name}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.mgr.Delete(r.Context(), r.PathValue("name")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	a.Handle("GET /v1/issuers/{name}/root", http.HandlerFunc(s.issuerRoot))
	a.Handle("GET /v1/localca/root", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		root, err := s.mgr.LocalCARoot(r.Context(), r.URL.Query().Get("issuer"))
		if err != nil {
			writeErr(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(root)
	}))
}

// issuerRoot serves an issuer's root certificate: the local CA's own, or an
// ACME CA's as published at its root_url.
func (s *Service) issuerRoot(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var is *IssuerConfig
	for i, c := range s.cfg.Load().Issuers {
		if c.Name == name {
			is = &s.cfg.Load().Issuers[i]
		}
	}
	var root []byte
	var err error
	switch {
	case is == nil:
		err = fmt.Errorf("%w: no issuer named %q", manager.ErrNotFound, name)
	case is.Type == "local_ca":
		root, err = s.mgr.LocalCARoot(r.Context(), name)
	case is.RootURL == "":
		err = fmt.Errorf("%w: issuer %q has no root_url, so certd cannot hand out its root", manager.ErrNotFound, name)
	default:
		root, err = fetchRoot(r.Context(), *is)
	}
	if err != nil {
		if !errors.Is(err, manager.ErrNotFound) {
			admin.WriteError(w, http.StatusBadGateway, err)
			return
		}
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(root)
}

// fetchRoot downloads and checks the PEM root an ACME CA publishes.
func fetchRoot(ctx context.Context, is IssuerConfig) ([]byte, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if is.CARoots != "" {
		pool, err := loadRoots(is.CARoots)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, is.RootURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("issuer %q: fetch root: %w", is.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("issuer %q: fetch root: %w", is.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("issuer %q: fetch root: %s from %s", is.Name, resp.Status, is.RootURL)
	}
	block, _ := pem.Decode(body)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("issuer %q: %s did not answer with a PEM certificate", is.Name, is.RootURL)
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return nil, fmt.Errorf("issuer %q: root from %s: %w", is.Name, is.RootURL, err)
	}
	return body, nil
}

func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, manager.ErrNotFound):
		admin.WriteError(w, http.StatusNotFound, err)
	case errors.Is(err, manager.ErrConflict):
		admin.WriteError(w, http.StatusConflict, err)
	default:
		admin.WriteError(w, http.StatusBadRequest, err)
	}
}

// CheckRequest validates a request against cfg and returns the specs.
func CheckRequest(cfg *Config, body RequestBody) ([]manager.Spec, error) {
	var errs []error
	if len(body.Names) == 0 {
		errs = append(errs, errors.New("names: at least one name is required"))
	}
	if !slices.Contains(keyTypes, body.KeyType) {
		errs = append(errs, fmt.Errorf("key_type: unknown key type %q (want p256, p384 or rsa2048)", body.KeyType))
	}
	if !slices.Contains(challenges, body.Challenge) {
		errs = append(errs, fmt.Errorf("challenge: unknown challenge %q (want http-01, tls-alpn-01 or dns-01)", body.Challenge))
	}
	types := map[string]string{}
	for _, is := range cfg.Issuers {
		types[is.Name] = orDefault(is.Type, "acme")
	}
	issuers := body.Issuers
	for i, n := range body.Issuers {
		if _, ok := types[n]; !ok {
			errs = append(errs, fmt.Errorf("issuers[%d]: unknown issuer %q", i, n))
		}
	}
	if len(issuers) == 0 {
		issuers = cfg.effectiveDefaultIssuers()
	}
	acmeUsed := slices.ContainsFunc(issuers, func(n string) bool { return types[n] == "acme" })
	if body.Challenge == manager.ChallengeDNS01 && cfg.DNS01.Token == "" && cfg.DNS01.TokenFile == "" && acmeUsed {
		errs = append(errs, errors.New("challenge: dns-01 needs dns01.token or dns01.token_file in certd's config"))
	}
	seen := map[string]bool{}
	var specs []manager.Spec
	for i, n := range body.Names {
		if err := ValidName(n); err != nil {
			errs = append(errs, fmt.Errorf("names[%d]: %w", i, err))
			continue
		}
		if seen[n] {
			errs = append(errs, fmt.Errorf("names[%d]: %q is listed twice", i, n))
		}
		seen[n] = true
		if strings.HasPrefix(n, "*.") && acmeUsed && body.Challenge != manager.ChallengeDNS01 {
			errs = append(errs, fmt.Errorf("names[%d]: wildcard %q needs challenge dns-01 with ACME issuers", i, n))
		}
		specs = append(specs, manager.Spec{Name: n, KeyType: orDefault(body.KeyType, "p256"), Issuers: body.Issuers, Challenge: orDefault(body.Challenge, manager.ChallengeHTTP01)})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return specs, nil
}

func (s *Service) request(w http.ResponseWriter, r *http.Request) {
	var body RequestBody
	if !admin.DecodeJSON(w, r, 1<<20, &body) {
		return
	}
	specs, err := CheckRequest(s.cfg.Load(), body)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	recs, err := s.mgr.Request(specs)
	if err != nil {
		writeErr(w, err)
		return
	}
	s.log.Info("certificates requested", "names", body.Names)
	admin.WriteJSON(w, http.StatusAccepted, recs)
}

func (s *Service) importCert(w http.ResponseWriter, r *http.Request) {
	var body ImportBody
	if !admin.DecodeJSON(w, r, 1<<20, &body) {
		return
	}
	rec, err := s.mgr.Import(r.Context(), []byte(body.Certificate), []byte(body.PrivateKey))
	if err != nil {
		writeErr(w, err)
		return
	}
	admin.WriteJSON(w, http.StatusCreated, rec)
}
