// Package certsource is the reading side of certd's certificate storage:
// edged and lbd use it to pick a certificate for each TLS handshake by SNI,
// to pick up new and renewed certificates within a second (without
// restarting or touching live connections), and to answer the HTTP-01 and
// TLS-ALPN-01 challenges that certd started (certmagic's distributed
// solving). It never orders certificates and never writes to the storage.
//
// It reads certmagic's folder storage layout:
//
//	<dir>/certificates/<issuer-key>/<name>/<name>.crt   PEM chain, leaf first
//	<dir>/certificates/<issuer-key>/<name>/<name>.key   PEM private key
//	<dir>/acme/<issuer-key>/challenge_tokens/<name>.json  challenge info (acme.Challenge)
package certsource

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Source.
type Options struct {
	// Dir is certd's storage folder (certmagic FileStorage root), usually
	// a shared read-only volume. Required.
	Dir string
	// Poll is how often to look for new or renewed certificates.
	// Default: 250ms.
	Poll time.Duration
	// Logger receives load problems. Default: discard.
	Logger *slog.Logger
	// Registerer, when set, receives the source's metrics.
	Registerer prometheus.Registerer
	// Namespace prefixes metric names, e.g. "edgestack_edged" gives
	// edgestack_edged_tls_certificates. Default: "edgestack".
	Namespace string
	// DefaultName, when set, names the certificate served to clients that
	// send no SNI (e.g. connecting by IP address). Default: none, such
	// handshakes fail with "no server name".
	DefaultName string
}

const challengeBasePath = "/.well-known/acme-challenge/"

// Source serves certificates from certd's storage.
type Source struct {
	opts    Options
	log     *slog.Logger
	snap    atomic.Pointer[snapshot]
	metrics *metrics

	mu      sync.Mutex // serialises reloads; guards entries
	entries map[string]*entry

	life    sync.Mutex // guards started, closed, stop
	started bool
	closed  bool
	stop    context.CancelFunc
	done    chan struct{}
}

// entry is one certificate folder as last read.
type entry struct {
	fp   fingerprint
	cert *tls.Certificate // last good certificate of this folder, kept on a bad update
	err  error            // last load error, nil when fp loaded fine
}

// fingerprint identifies the versions of a .crt/.key pair on disk.
type fingerprint struct {
	crt, key fileID
}

type fileID struct {
	size  int64
	mtime int64
	ino   uint64
}

// snapshot is an immutable view used by handshakes.
type snapshot struct {
	exact    map[string]*tls.Certificate // lower-case name -> cert
	wildcard map[string]*tls.Certificate // parent domain of "*.parent" -> cert
	count    int
}

// New builds a Source and loads what the storage holds now (a missing or
// empty folder is not an error: certificates may arrive later).
func New(opts Options) (*Source, error) {
	if opts.Dir == "" {
		return nil, errors.New("certsource: Dir is required")
	}
	if opts.Poll <= 0 {
		opts.Poll = 250 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Namespace == "" {
		opts.Namespace = "edgestack"
	}
	s := &Source{
		opts:    opts,
		log:     opts.Logger,
		entries: map[string]*entry{},
		done:    make(chan struct{}),
	}
	m, err := newMetrics(opts.Namespace, opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("certsource: %w", err)
	}
	s.metrics = m
	s.snap.Store(&snapshot{})
	s.Reload()
	return s, nil
}

// Start starts the poller; it stops when ctx ends or Close is called.
func (s *Source) Start(ctx context.Context) {
	s.life.Lock()
	defer s.life.Unlock()
	if s.started || s.closed {
		return
	}
	s.started = true
	ctx, s.stop = context.WithCancel(ctx)
	go s.poll(ctx)
}

// Close stops the poller and waits for it, and drops the folder's series
// of the certificates gauge (edged stops reading a folder a reload no
// longer names). The Source keeps serving the last snapshot.
func (s *Source) Close() {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return
	}
	s.closed = true
	started, stop := s.started, s.stop
	s.life.Unlock()
	if started {
		stop()
		<-s.done
	}
	s.metrics.certs.DeleteLabelValues(s.opts.Dir)
}

func (s *Source) poll(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.opts.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Reload()
		}
	}
}

// Reload looks at the storage now and publishes a new snapshot if anything
// changed. The poller calls it; tests and callers may too.
func (s *Source) Reload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	certDir := filepath.Join(s.opts.Dir, "certificates")
	issuers, err := os.ReadDir(certDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("certsource: reading storage", "dir", certDir, "err", err)
		return // keep serving what we have
	}
	changed := false
	seen := make(map[string]bool, len(s.entries))
	for _, iss := range issuers {
		if !iss.IsDir() {
			continue
		}
		sites, err := os.ReadDir(filepath.Join(certDir, iss.Name()))
		if err != nil {
			continue
		}
		for _, site := range sites {
			if !site.IsDir() {
				continue
			}
			dir := filepath.Join(certDir, iss.Name(), site.Name())
			crt := filepath.Join(dir, site.Name()+".crt")
			key := filepath.Join(dir, site.Name()+".key")
			fp, ok := statPair(crt, key)
			if !ok {
				continue
			}
			seen[dir] = true
			e := s.entries[dir]
			if e != nil && e.fp == fp {
				continue
			}
			if e == nil {
				e = &entry{}
				s.entries[dir] = e
			}
			e.fp = fp
			cert, err := loadPair(crt, key)
			if err != nil {
				// A pair may be caught mid-update (.crt and .key are
				// replaced one after the other): keep the last good
				// certificate; the next poll sees the finished pair.
				e.err = err
				s.metrics.reloads.WithLabelValues("error").Inc()
				s.log.Warn("certsource: cannot load certificate; keeping the previous one", "dir", dir, "err", err)
				continue
			}
			e.cert, e.err = cert, nil
			changed = true
			s.metrics.reloads.WithLabelValues("ok").Inc()
		}
	}
	for dir, e := range s.entries {
		if !seen[dir] {
			// Deleted from storage (certd delete): stop serving it.
			delete(s.entries, dir)
			if e.cert != nil {
				changed = true
			}
		}
	}
	if changed || s.snap.Load().exact == nil {
		s.publish()
	}
}

// publish builds a new snapshot from entries; s.mu is held.
func (s *Source) publish() {
	now := time.Now()
	snap := &snapshot{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	for _, e := range s.entries {
		if e.cert == nil {
			continue
		}
		snap.count++
		for _, name := range e.cert.Leaf.DNSNames {
			name = strings.ToLower(strings.TrimSuffix(name, "."))
			m, key := snap.exact, name
			if parent, ok := strings.CutPrefix(name, "*."); ok {
				m, key = snap.wildcard, parent
			}
			if better(e.cert, m[key], now) {
				m[key] = e.cert
			}
		}
		for _, ip := range e.cert.Leaf.IPAddresses {
			if better(e.cert, snap.exact[ip.String()], now) {
				snap.exact[ip.String()] = e.cert
			}
		}
	}
	s.snap.Store(snap)
	s.metrics.certs.WithLabelValues(s.opts.Dir).Set(float64(snap.count))
}

// better reports whether a should serve a name rather than b: a currently
// valid certificate beats one that is not yet or no longer valid; among
// equals the one that expires last wins (a renewal replaces the old one).
func better(a, b *tls.Certificate, now time.Time) bool {
	if b == nil {
		return true
	}
	va, vb := valid(a.Leaf, now), valid(b.Leaf, now)
	if va != vb {
		return va
	}
	return a.Leaf.NotAfter.After(b.Leaf.NotAfter)
}

func valid(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && now.Before(c.NotAfter)
}

func statPair(crt, key string) (fingerprint, bool) {
	a, err := os.Stat(crt)
	if err != nil {
		return fingerprint{}, false
	}
	b, err := os.Stat(key)
	if err != nil {
		return fingerprint{}, false
	}
	return fingerprint{crt: idOf(a), key: idOf(b)}, true
}

func idOf(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	return id
}

func loadPair(crt, key string) (*tls.Certificate, error) {
	cb, err := os.ReadFile(crt)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(key)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(cb, kb)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &cert, nil
}

// Count is the number of certificates being served.
func (s *Source) Count() int { return s.snap.Load().count }

// Lookup returns the certificate that serves name (exact match first, then
// a wildcard one level up), or nil.
func (s *Source) Lookup(name string) *tls.Certificate {
	return s.snap.Load().lookup(normalize(name))
}

func normalize(name string) string {
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

func (sn *snapshot) lookup(name string) *tls.Certificate {
	if c := sn.exact[name]; c != nil {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		return sn.wildcard[name[i+1:]]
	}
	return nil
}

// GetCertificate picks the certificate for a handshake by SNI (exact, then
// wildcard) and answers TLS-ALPN-01 challenges from the storage.
func (s *Source) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := normalize(hello.ServerName)
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol {
		return s.alpnChallengeCert(hello.Context(), name)
	}
	if name == "" {
		if s.opts.DefaultName == "" {
			s.metrics.misses.WithLabelValues("no_sni").Inc()
			return nil, errors.New("certsource: client sent no server name (SNI) and no default certificate is configured")
		}
		name = normalize(s.opts.DefaultName)
	}
	if c := s.snap.Load().lookup(name); c != nil {
		return c, nil
	}
	s.metrics.misses.WithLabelValues("no_certificate").Inc()
	return nil, fmt.Errorf("certsource: no certificate for server name %q", name)
}

// TLSConfig returns a server config using GetCertificate: ALPN h2,
// http/1.1 and acme-tls/1, TLS 1.2 minimum.
func (s *Source) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: s.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1", acmez.ACMETLS1Protocol},
		MinVersion:     tls.VersionTLS12,
	}
}

// challenge finds the challenge info certd stored for identifier, under
// any issuer.
func (s *Source) challenge(identifier string) (acme.Challenge, error) {
	if identifier == "" {
		return acme.Challenge{}, errors.New("no identifier")
	}
	pattern := filepath.Join(s.opts.Dir, "acme", "*", "challenge_tokens", certmagic.StorageKeys.Safe(identifier)+".json")
	files, _ := filepath.Glob(pattern)
	var lastErr error = fmt.Errorf("no pending challenge for %q", identifier)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			lastErr = err
			continue
		}
		var ch acme.Challenge
		if err := json.Unmarshal(b, &ch); err != nil {
			lastErr = fmt.Errorf("%s: %w", f, err)
			continue
		}
		if !strings.EqualFold(ch.Identifier.Value, identifier) {
			continue
		}
		return ch, nil
	}
	return acme.Challenge{}, lastErr
}

func (s *Source) alpnChallengeCert(_ context.Context, name string) (*tls.Certificate, error) {
	ch, err := s.challenge(name)
	if err != nil {
		s.metrics.challenges.WithLabelValues("tls-alpn-01", "miss").Inc()
		return nil, fmt.Errorf("certsource: tls-alpn-01 for %q: %w", name, err)
	}
	cert, err := acmez.TLSALPN01ChallengeCert(ch)
	if err != nil {
		s.metrics.challenges.WithLabelValues("tls-alpn-01", "error").Inc()
		return nil, fmt.Errorf("certsource: tls-alpn-01 for %q: %w", name, err)
	}
	s.metrics.challenges.WithLabelValues("tls-alpn-01", "answered").Inc()
	s.log.Info("certsource: answered tls-alpn-01 challenge", "identifier", name)
	return cert, nil
}

// HTTPChallenge answers GET /.well-known/acme-challenge/<token> for a
// challenge certd stored, and reports whether it wrote the response. It
// returns false for other requests, and for challenge paths it has no
// matching challenge for (so the site's own handler runs).
func (s *Source) HTTPChallenge(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	token, ok := strings.CutPrefix(r.URL.Path, challengeBasePath)
	if !ok || token == "" || strings.Contains(token, "/") {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = normalize(strings.Trim(host, "[]"))
	ch, err := s.challenge(host)
	if err != nil || ch.Token != token || ch.KeyAuthorization == "" {
		s.metrics.challenges.WithLabelValues("http-01", "miss").Inc()
		return false
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(ch.KeyAuthorization))
	s.metrics.challenges.WithLabelValues("http-01", "answered").Inc()
	s.log.Info("certsource: answered http-01 challenge", "identifier", host, "remote", r.RemoteAddr)
	return true
}

// Names lists the names served, sorted (wildcards as "*.parent").
func (s *Source) Names() []string {
	sn := s.snap.Load()
	out := make([]string, 0, len(sn.exact)+len(sn.wildcard))
	for n := range sn.exact {
		out = append(out, n)
	}
	for n := range sn.wildcard {
		out = append(out, "*."+n)
	}
	slices.Sort(out)
	return out
}

type metrics struct {
	certs      *prometheus.GaugeVec
	reloads    *prometheus.CounterVec
	misses     *prometheus.CounterVec
	challenges *prometheus.CounterVec
}

func newMetrics(ns string, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		certs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: ns + "_tls_certificates",
			Help: "Certificates loaded from the certificate storage folder dir and being served.",
		}, []string{"dir"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ns + "_tls_certificate_loads_total",
			Help: "Certificate files (re)loaded from storage, by result (ok, error).",
		}, []string{"result"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ns + "_tls_certificate_misses_total",
			Help: "Handshakes refused for want of a certificate, by reason (no_sni, no_certificate).",
		}, []string{"reason"}),
		challenges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ns + "_tls_acme_challenges_total",
			Help: "ACME challenge requests seen, by type (http-01, tls-alpn-01) and result (answered, miss, error).",
		}, []string{"type", "result"}),
	}
	if reg != nil {
		// Several Sources may share a registry and namespace (one per
		// storage folder): they then share the series.
		var err error
		if m.certs, err = register(reg, m.certs); err != nil {
			return nil, err
		}
		if m.reloads, err = register(reg, m.reloads); err != nil {
			return nil, err
		}
		if m.misses, err = register(reg, m.misses); err != nil {
			return nil, err
		}
		if m.challenges, err = register(reg, m.challenges); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
