// Package admin is the admin HTTP server every edgestack daemon runs:
// /livez, /readyz, /metrics, optional /debug/pprof, and the daemon's own API
// endpoints, with bearer-token authentication on the ones that change state.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/internal/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config is the admin listener's configuration.
type Config struct {
	// Listen is the admin address. Default: set per daemon
	// (dnsd 127.0.0.1:9053, certd :9443... see each daemon's README).
	// Keep it on a private network: it is not meant for the internet.
	Listen string `yaml:"listen"`
	// Token is the bearer token required by endpoints that change state.
	// Default: none, which disables those endpoints (they answer 403).
	Token string `yaml:"token" secret:"true"`
	// TokenFile is a file holding the token (trailing whitespace trimmed);
	// it is read at start and on every reload. Default: none.
	TokenFile string `yaml:"token_file"`
	// Pprof serves /debug/pprof/ on the admin listener. Default: false.
	Pprof bool `yaml:"pprof"`
}

// Validate checks the listen address and that at most one token source is set.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, config.Errorf("listen", "invalid address %q: %v", c.Listen, err))
	}
	if c.Token != "" && c.TokenFile != "" {
		errs = append(errs, config.Errorf("token_file", "set either token or token_file, not both"))
	}
	if c.TokenFile != "" {
		if _, err := readToken(c.TokenFile); err != nil {
			errs = append(errs, config.Errorf("token_file", "%v", err))
		}
	}
	return errors.Join(errs...)
}

// ResolveToken returns the token from Token or TokenFile.
func (c Config) ResolveToken() (string, error) {
	if c.TokenFile != "" {
		return readToken(c.TokenFile)
	}
	return c.Token, nil
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}

// Options are what the server needs from its daemon.
type Options struct {
	Logger   *slog.Logger
	Gatherer prometheus.Gatherer
}

// Server is a daemon's admin HTTP server.
type Server struct {
	log      *slog.Logger
	mux      *http.ServeMux
	srv      *http.Server
	token    atomic.Pointer[string]
	draining atomic.Bool

	mu    sync.Mutex
	ready map[string]func() error
}

// New builds the server; call Serve to start it.
func New(cfg Config, opts Options) (*Server, error) {
	s := &Server{log: opts.Logger, mux: http.NewServeMux(), ready: map[string]func() error{}}
	if err := s.SetConfig(cfg); err != nil {
		return nil, err
	}
	s.mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	if opts.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelError)}))
	}
	if cfg.Pprof {
		s.mux.HandleFunc("/debug/pprof/", pprof.Index)
		s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// SetConfig applies the parts of cfg that may change on reload (the token).
func (s *Server) SetConfig(cfg Config) error {
	tok, err := cfg.ResolveToken()
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	s.token.Store(&tok)
	return nil
}

// Handle registers a read-only endpoint that needs no token. pattern is a
// net/http ServeMux pattern, e.g. "GET /v1/zones".
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleAuth registers an endpoint that requires the bearer token, for
// everything that changes state or reveals secrets.
func (s *Server) HandleAuth(pattern string, h http.Handler) { s.mux.Handle(pattern, s.requireToken(h)) }

func (s *Server) requireToken(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := *s.token.Load()
		if want == "" {
			WriteError(w, http.StatusForbidden, errors.New("this endpoint needs an admin token and none is configured (admin.token or admin.token_file)"))
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			// The presented token is never logged.
			s.log.Warn("admin: unauthorized request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="edgestack"`)
			WriteError(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// AddReadiness registers a named readiness condition; /readyz is 503 while
// any returns an error. Registering a name again replaces it.
func (s *Server) AddReadiness(name string, check func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready[name] = check
}

// SetDraining makes /readyz fail from now on, so load balancers stop sending
// new work before a graceful stop.
func (s *Server) SetDraining() { s.draining.Store(true) }

// NotReady lists what is not ready, empty when ready.
func (s *Server) NotReady() []string {
	var out []string
	if s.draining.Load() {
		out = append(out, "shutting down")
	}
	s.mu.Lock()
	names := make([]string, 0, len(s.ready))
	for n := range s.ready {
		names = append(names, n)
	}
	checks := make(map[string]func() error, len(s.ready))
	for n, c := range s.ready {
		checks[n] = c
	}
	s.mu.Unlock()
	slices.Sort(names)
	for _, n := range names {
		if err := checks[n](); err != nil {
			out = append(out, n+": "+err.Error())
		}
	}
	return out
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if bad := s.NotReady(); len(bad) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready:\n%s\n", strings.Join(bad, "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// Serve serves on ln until Shutdown; it returns nil after a Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// Shutdown stops the server, waiting for in-flight requests up to ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ErrorBody is the JSON body of every admin error.
type ErrorBody struct {
	Error string `json:"error"`
}

// WriteError writes {"error": "..."} with the given status: the one error
// path of every admin API.
func WriteError(w http.ResponseWriter, status int, err error) {
	WriteJSON(w, status, ErrorBody{Error: err.Error()})
}

// DecodeJSON strictly decodes a request body (unknown fields are errors,
// at most maxBytes) into v; on failure it has already written a 400.
func DecodeJSON(w http.ResponseWriter, r *http.Request, maxBytes int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		WriteError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return false
	}
	return true
}
