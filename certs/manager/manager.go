// Package manager is certd's core: it orders, renews and keeps records of
// TLS certificates with certmagic (Config + Issuers over a FileStorage),
// one certificate per name (certmagic's model, like Caddy: wildcard and
// apex orders run independently and renew independently).
//
// The first order of a name is driven here (one attempt at a time, with a
// backoff, so the record always says what happened and when the next
// attempt is); renewals are certmagic's (its cache maintenance, following
// ARI when the CA offers it, else RenewalWindowRatio of the lifetime).
// Certificates are written to the storage only by certmagic, atomically;
// nothing here deletes a certificate except an explicit Delete.
package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/edgestack/edgestack/certs/certsource"
	"github.com/edgestack/edgestack/certs/libdnsprovider"
	"github.com/edgestack/edgestack/certs/localca"
	"github.com/mholt/acmez/v3/acme"
	"github.com/prometheus/client_golang/prometheus"
)

// Certificate states.
const (
	StatePending  = "pending"  // first order under way (validation pending)
	StateIssued   = "issued"   // a valid certificate is stored
	StateRenewing = "renewing" // renewal due or under way; the old certificate keeps serving
	StateFailed   = "failed"   // no usable certificate; the last attempt failed
	StateExpired  = "expired"  // the stored certificate has expired
)

// States lists every state, for metrics.
var States = []string{StatePending, StateIssued, StateRenewing, StateFailed, StateExpired}

// Challenge types.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
	ChallengeDNS01     = "dns-01"
)

// Sources of a certificate entry.
const (
	SourceConfig = "config"
	SourceAPI    = "api"
	SourceImport = "import"
)

// ImportedIssuerKey is the storage folder of imported certificates.
const ImportedIssuerKey = "imported"

// Issuer describes one issuer.
type Issuer struct {
	Name string
	// Type is "acme" or "local_ca".
	Type string
	// ACME settings.
	Directory string
	Roots     *x509.CertPool // nil: system roots
	Email     string
	EAB       *acme.EAB
	Profile   string
	// Local CA settings.
	LocalCAName     string
	LocalCALifetime time.Duration
}

// DNS01 is how DNS-01 challenges are solved: through dnsd's change API.
type DNS01 struct {
	URL       string // dnsd admin base URL
	Token     string
	DNSServer string // dnsd's DNS address, for zone lookup and the propagation check; "" uses system resolvers
	Timeout   time.Duration
}

// Settings is everything but the certificate list; changing it restarts
// every certificate's worker.
type Settings struct {
	Issuers            []Issuer
	DefaultIssuers     []string
	DNS01              DNS01
	RenewalWindowRatio float64 // share of the lifetime left when renewing (without ARI)
	DisableARI         bool
	ObtainTimeout      time.Duration
	RetryMin, RetryMax time.Duration
}

// Spec is one name to manage.
type Spec struct {
	Name      string   `json:"name"`
	KeyType   string   `json:"key_type"`
	Issuers   []string `json:"issuers"`
	Challenge string   `json:"challenge"`
	Source    string   `json:"source"`
}

// Window is a time window.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Record is what certd knows about one certificate.
type Record struct {
	Name        string     `json:"name"`
	State       string     `json:"state"`
	Source      string     `json:"source"`
	KeyType     string     `json:"key_type,omitempty"`
	Challenge   string     `json:"challenge,omitempty"`
	Issuers     []string   `json:"issuers,omitempty"`
	Issuer      string     `json:"issuer,omitempty"` // storage issuer key of the current certificate
	SANs        []string   `json:"sans,omitempty"`
	Serial      string     `json:"serial,omitempty"`
	NotBefore   *time.Time `json:"not_before,omitempty"`
	NotAfter    *time.Time `json:"not_after,omitempty"`
	RenewAt     *time.Time `json:"renew_at,omitempty"`
	ARIWindow   *Window    `json:"ari_window,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	Attempts    int        `json:"attempts"`
	Failures    int        `json:"failures"`
}

// Options configure a Manager.
type Options struct {
	// Dir is the storage folder (certmagic FileStorage root).
	Dir string
	// Storage, when set, replaces the folder with another certmagic
	// Storage+Locker (a shared backend, so several certd instances never
	// order the same name twice). edged/lbd's certsource reads folders only.
	Storage certmagic.Storage
	Logger  *slog.Logger
	// Registerer receives edgestack_certd_* metrics. Optional.
	Registerer prometheus.Registerer
	// RenewCheckInterval is how often certmagic looks for certificates to
	// renew (and refreshes ARI). Default: 10m.
	RenewCheckInterval time.Duration
	// HTTPChallengeListen / TLSChallengeListen: certd answers HTTP-01 and
	// TLS-ALPN-01 challenges from its storage on these addresses too (e.g.
	// ":80" and ":443" when certd itself is reachable). Default
	// "127.0.0.1:0": challenges are answered by edged/lbd, which read the
	// same storage.
	HTTPChallengeListen string
	TLSChallengeListen  string
}

// Manager orders, renews and records certificates.
type Manager struct {
	opts    Options
	log     *slog.Logger
	storage certmagic.Storage
	cache   *certmagic.Cache
	metrics *metrics
	source  *certsource.Source

	httpLn, tlsLn net.Listener
	httpSrv       *http.Server

	// opMu serialises operations that add or remove entries (Update,
	// Request, Delete, Import), so that stopLocked may drop mu while it
	// waits for a worker.
	opMu     sync.Mutex
	mu       sync.Mutex
	settings Settings
	cas      map[string]*localca.CA // by issuer name
	certs    map[string]*managed    // by name
	imported map[string]*Record
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type managed struct {
	spec    Spec
	cfg     *certmagic.Config
	rec     Record
	cancel  context.CancelFunc
	done    chan struct{}
	force   chan struct{}
	refresh chan struct{}
}

// New builds a Manager; Start begins work.
func New(opts Options) (*Manager, error) {
	if opts.Dir == "" {
		return nil, errors.New("manager: storage dir is required")
	}
	var storage certmagic.Storage = &certmagic.FileStorage{Path: opts.Dir}
	if opts.Storage != nil {
		storage = opts.Storage
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RenewCheckInterval <= 0 {
		opts.RenewCheckInterval = 10 * time.Minute
	}
	if opts.HTTPChallengeListen == "" {
		opts.HTTPChallengeListen = "127.0.0.1:0"
	}
	if opts.TLSChallengeListen == "" {
		opts.TLSChallengeListen = "127.0.0.1:0"
	}
	m := &Manager{
		opts:     opts,
		log:      opts.Logger,
		storage:  storage,
		cas:      map[string]*localca.CA{},
		certs:    map[string]*managed{},
		imported: map[string]*Record{},
	}
	met, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	m.metrics = met
	src, err := certsource.New(certsource.Options{Dir: opts.Dir, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	m.source = src
	return m, nil
}

// Storage is the certmagic storage the manager writes.
func (m *Manager) Storage() certmagic.Storage { return m.storage }

// Start binds the challenge listeners, starts certmagic's maintenance and
// begins managing specs (config entries plus those stored by the API).
func (m *Manager) Start(ctx context.Context, settings Settings, specs []Spec) error {
	var err error
	if m.httpLn, err = net.Listen("tcp", m.opts.HTTPChallengeListen); err != nil {
		return fmt.Errorf("manager: http challenge listener: %w", err)
	}
	if m.tlsLn, err = net.Listen("tcp", m.opts.TLSChallengeListen); err != nil {
		m.httpLn.Close()
		return fmt.Errorf("manager: tls challenge listener: %w", err)
	}
	m.httpSrv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !m.source.HTTPChallenge(w, r) {
				http.Error(w, "certd: no pending ACME challenge for this request", http.StatusNotFound)
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	m.wg.Add(2)
	go func() { defer m.wg.Done(); _ = m.httpSrv.Serve(m.httpLn) }()
	tlsLn := tls.NewListener(m.tlsLn, m.source.TLSConfig())
	go func() {
		defer m.wg.Done()
		for {
			c, err := tlsLn.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_ = c.(*tls.Conn).Handshake()
				_ = c.Close()
			}()
		}
	}()
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: m.configForCert,
		// OCSP stapling is off (see certConfig); keep its loop idle.
		OCSPCheckInterval:  24 * time.Hour,
		RenewCheckInterval: m.opts.RenewCheckInterval,
		Logger:             zapToSlog(m.log.With("component", "certmagic")),
	})
	stored, err := m.loadRequests()
	if err != nil {
		m.log.Warn("cannot read stored certificate requests; API-added certificates are not managed until fixed", "err", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settings = settings
	for _, sp := range append(specs, stored...) {
		if sp.Source == SourceImport {
			m.loadImportedLocked(sp.Name)
			continue
		}
		if _, dup := m.certs[sp.Name]; dup {
			continue
		}
		m.startLocked(sp)
	}
	return nil
}

// HTTPChallengeAddr and TLSChallengeAddr are where certd itself answers
// challenges.
func (m *Manager) HTTPChallengeAddr() string { return m.httpLn.Addr().String() }

// TLSChallengeAddr is the TLS-ALPN-01 listener address.
func (m *Manager) TLSChallengeAddr() string { return m.tlsLn.Addr().String() }

// Stop stops every worker and certmagic's maintenance; nothing in storage
// is touched.
func (m *Manager) Stop(ctx context.Context) error {
	if m.cancel == nil {
		return nil
	}
	m.cancel()
	m.mu.Lock()
	for _, mc := range m.certs {
		mc.cancel()
	}
	m.mu.Unlock()
	_ = m.httpSrv.Shutdown(ctx)
	_ = m.tlsLn.Close()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("manager: workers still running: %w", ctx.Err())
	}
	m.cache.Stop()
	return nil
}

// Update applies new settings and config specs: workers whose spec or
// settings changed restart; config entries no longer listed stop being
// managed (their certificates stay in storage).
func (m *Manager) Update(settings Settings, specs []Spec) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	settingsChanged := !settingsEqual(m.settings, settings)
	m.settings = settings
	if settingsChanged {
		m.cas = map[string]*localca.CA{}
	}
	want := map[string]Spec{}
	for _, sp := range specs {
		want[sp.Name] = sp
	}
	for name, mc := range m.certs {
		if mc.spec.Source != SourceConfig {
			if settingsChanged {
				m.stopLocked(mc)
				m.startLocked(mc.spec)
			}
			continue
		}
		sp, ok := want[name]
		if !ok {
			m.stopLocked(mc)
			delete(m.certs, name)
			m.metrics.forget(name)
			continue
		}
		if settingsChanged || !specEqual(sp, mc.spec) {
			m.stopLocked(mc)
			m.startLocked(sp)
		}
	}
	for name, sp := range want {
		if _, ok := m.certs[name]; !ok {
			m.startLocked(sp)
		}
	}
}

func settingsEqual(a, b Settings) bool {
	ja, _ := json.Marshal(settingsKey(a))
	jb, _ := json.Marshal(settingsKey(b))
	return string(ja) == string(jb)
}

func settingsKey(s Settings) any {
	type iss struct {
		Issuer
		Roots int
	}
	var out []any
	for _, i := range s.Issuers {
		c := i
		n := 0
		if c.Roots != nil {
			//lint:ignore SA1019 the count only marks a change of configured roots (no system pool here)
			n = len(c.Roots.Subjects())
		}
		c.Roots = nil
		out = append(out, iss{c, n})
	}
	return []any{out, s.DefaultIssuers, s.DNS01, s.RenewalWindowRatio, s.DisableARI, s.ObtainTimeout, s.RetryMin, s.RetryMax}
}

func specEqual(a, b Spec) bool {
	return a.Name == b.Name && a.KeyType == b.KeyType && a.Challenge == b.Challenge && slices.Equal(a.Issuers, b.Issuers) && a.Source == b.Source
}

// startLocked builds the certmagic config of sp and starts its worker.
func (m *Manager) startLocked(sp Spec) {
	ctx, cancel := context.WithCancel(m.ctx)
	mc := &managed{
		spec:    sp,
		cancel:  cancel,
		done:    make(chan struct{}),
		force:   make(chan struct{}, 1),
		refresh: make(chan struct{}, 1),
	}
	prev := m.certs[sp.Name]
	mc.rec = Record{Name: sp.Name, State: StatePending, Source: sp.Source, KeyType: sp.KeyType, Challenge: sp.Challenge, Issuers: m.issuerNames(sp)}
	if prev != nil {
		mc.rec.Attempts, mc.rec.Failures = prev.rec.Attempts, prev.rec.Failures
	}
	m.certs[sp.Name] = mc
	cfg, err := m.certConfig(mc)
	if err != nil {
		cancel()
		close(mc.done)
		mc.rec.State = StateFailed
		m.setErrorLocked(mc, err, nil)
		return
	}
	mc.cfg = cfg
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(mc.done)
		m.work(ctx, mc)
	}()
}

func (m *Manager) stopLocked(mc *managed) {
	mc.cancel()
	// The worker takes m.mu to update its record: wait without it.
	m.mu.Unlock()
	<-mc.done
	m.mu.Lock()
	if m.cache != nil {
		m.cache.RemoveManaged([]certmagic.SubjectIssuer{{Subject: mc.spec.Name}})
	}
}

func (m *Manager) issuerNames(sp Spec) []string {
	if len(sp.Issuers) > 0 {
		return sp.Issuers
	}
	if len(m.settings.DefaultIssuers) > 0 {
		return m.settings.DefaultIssuers
	}
	var all []string
	for _, is := range m.settings.Issuers {
		all = append(all, is.Name)
	}
	return all
}

func (m *Manager) issuerByName(name string) (Issuer, bool) {
	for _, i := range m.settings.Issuers {
		if i.Name == name {
			return i, true
		}
	}
	return Issuer{}, false
}

// certConfig builds the certmagic config for one name; m.mu is held.
func (m *Manager) certConfig(mc *managed) (*certmagic.Config, error) {
	sp := mc.spec
	keyType := certmagic.P256
	switch sp.KeyType {
	case "", "p256":
	case "p384":
		keyType = certmagic.P384
	case "rsa2048":
		keyType = certmagic.RSA2048
	default:
		return nil, fmt.Errorf("unknown key type %q", sp.KeyType)
	}
	ratio := m.settings.RenewalWindowRatio
	if ratio <= 0 {
		ratio = certmagic.DefaultRenewalWindowRatio
	}
	name := sp.Name
	cfg := certmagic.New(m.cache, certmagic.Config{
		RenewalWindowRatio: ratio,
		KeySource:          certmagic.StandardKeyGenerator{KeyType: keyType},
		Storage:            m.storage,
		OCSP:               certmagic.OCSPConfig{DisableStapling: true},
		DisableARI:         m.settings.DisableARI,
		Logger:             zapToSlog(m.log.With("component", "certmagic", "name", name)),
		OnEvent: func(ctx context.Context, event string, data map[string]any) error {
			m.onEvent(ctx, name, event, data)
			return nil
		},
	})
	var issuers []certmagic.Issuer
	for _, in := range m.issuerNames(sp) {
		is, ok := m.issuerByName(in)
		if !ok {
			return nil, fmt.Errorf("unknown issuer %q", in)
		}
		switch is.Type {
		case "local_ca":
			ca := m.cas[is.Name]
			if ca == nil {
				ca = localca.New(m.storage, localca.Options{Name: is.LocalCAName, Lifetime: is.LocalCALifetime})
				m.cas[is.Name] = ca
			}
			issuers = append(issuers, ca)
		default:
			tpl := certmagic.ACMEIssuer{
				CA:                is.Directory,
				Email:             is.Email,
				Agreed:            true,
				ExternalAccount:   is.EAB,
				Profile:           is.Profile,
				TrustedRoots:      is.Roots,
				CertObtainTimeout: m.settings.ObtainTimeout,
				Logger:            zapToSlog(m.log.With("component", "certmagic", "name", name, "issuer", is.Name)),
			}
			switch sp.Challenge {
			case ChallengeDNS01:
				tpl.DNS01Solver = &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
					DNSProvider: &libdnsprovider.Provider{
						URL: m.settings.DNS01.URL, Token: m.settings.DNS01.Token,
						VerifyServer: m.settings.DNS01.DNSServer, VerifyTimeout: m.settings.DNS01.Timeout,
					},
					// Propagation is checked against dnsd by the provider.
					PropagationTimeout: -1,
					Resolvers:          nonEmpty(m.settings.DNS01.DNSServer),
					TTL:                time.Minute,
				}}
			case ChallengeTLSALPN01:
				tpl.DisableHTTPChallenge = true
				tpl.ListenHost, tpl.AltTLSALPNPort = hostPort(m.tlsLn.Addr())
			default:
				tpl.DisableTLSALPNChallenge = true
				tpl.ListenHost, tpl.AltHTTPPort = hostPort(m.httpLn.Addr())
			}
			var iss certmagic.Issuer = certmagic.NewACMEIssuer(cfg, tpl)
			if tpl.Email == "" {
				// certmagic would prompt on stdin for an email during a
				// synchronous order; a daemon must not.
				iss = noPrompt{iss.(*certmagic.ACMEIssuer)}
			}
			issuers = append(issuers, iss)
		}
	}
	if len(issuers) == 0 {
		return nil, errors.New("no issuer configured (set issuers on the certificate or default_issuers)")
	}
	cfg.Issuers = issuers
	return cfg, nil
}

// noPrompt is an ACME issuer without an email address: its account is
// created without contact.
type noPrompt struct{ *certmagic.ACMEIssuer }

// PreCheck skips certmagic's: for an issuer without email, that looks
// for an address to use (prompting on stdin when interactive) and, when
// it finds the folder of an account still being written by a concurrent
// order, adopts the folder's name "default" as the contact address for
// the whole process, so every later registration is refused by the CA
// ("invalidContact"). Without it the account is simply the email-less
// one. Its other check (names a public CA would refuse) is left to the
// CA, whose answer ends up in the certificate's last error.
func (n noPrompt) PreCheck(context.Context, []string, bool) error { return nil }

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// hostPort splits a listener address for certmagic: its solver finds the
// port taken (by us) and leaves answering to the storage readers.
func hostPort(a net.Addr) (string, int) {
	ta := a.(*net.TCPAddr)
	return ta.IP.String(), ta.Port
}

func (m *Manager) configForCert(c certmagic.Certificate) (*certmagic.Config, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range c.Names {
		if mc := m.certs[n]; mc != nil && mc.cfg != nil {
			return mc.cfg, nil
		}
	}
	return nil, fmt.Errorf("certificate %v is no longer managed", c.Names)
}

func (m *Manager) onEvent(_ context.Context, name, event string, data map[string]any) {
	renewal, _ := data["renewal"].(bool)
	kind := "obtain"
	if renewal {
		kind = "renew"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mc := m.certs[name]
	if mc == nil {
		return
	}
	switch event {
	case "cert_obtaining":
		m.metrics.attempts.WithLabelValues(name, kind).Inc()
		mc.rec.Attempts++
		if renewal {
			m.setStateLocked(mc, StateRenewing)
		}
	case "cert_obtained":
		select {
		case mc.refresh <- struct{}{}:
		default:
		}
	case "cert_failed":
		err, _ := data["error"].(error)
		if err == nil {
			err = errors.New("unknown error")
		}
		reason, _ := Classify(err)
		m.metrics.failures.WithLabelValues(name, reason).Inc()
		m.metrics.failing.WithLabelValues(name).Set(1)
		mc.rec.Failures++
		if renewal {
			next := time.Now().Add(max(m.opts.RenewCheckInterval, time.Minute))
			m.setErrorLocked(mc, err, &next)
		}
	}
}

// work drives one name: obtain when storage has nothing, then wait for
// renewals (certmagic's), forced renewals and refreshes.
func (m *Manager) work(ctx context.Context, mc *managed) {
	name := mc.spec.Name
	failures := 0
	for {
		if ctx.Err() != nil {
			return
		}
		info, err := m.loadStored(ctx, mc)
		if err == nil {
			if _, cerr := mc.cfg.CacheManagedCertificate(ctx, name); cerr != nil && ctx.Err() == nil {
				m.log.Warn("cannot hand certificate to the renewal scheduler", "name", name, "err", cerr)
			}
			failures = 0
			m.mu.Lock()
			m.setIssuedLocked(mc, info)
			m.mu.Unlock()
			// Wake up at expiry so the state (and its metric) turns
			// "expired" even if every renewal fails.
			// (An unstopped timer is collected once unreferenced, Go 1.23+.)
			var expired <-chan time.Time
			if d := time.Until(info.leaf.NotAfter); d > 0 {
				expired = time.NewTimer(d + time.Second).C
			}
			select {
			case <-ctx.Done():
				return
			case <-expired:
				continue
			case <-mc.refresh:
				continue
			case <-mc.force:
				m.mu.Lock()
				m.setStateLocked(mc, StateRenewing)
				m.mu.Unlock()
				m.log.Info("forced renewal", "name", name)
				if err := mc.cfg.RenewCertSync(ctx, name, true); err != nil && ctx.Err() == nil {
					m.mu.Lock()
					m.setErrorLocked(mc, err, nil)
					m.mu.Unlock()
					m.log.Warn("forced renewal failed; the current certificate keeps serving", "name", name, "err", err)
					// Show the failure (state renewing + last_error) until the next event.
					select {
					case <-ctx.Done():
						return
					case <-mc.refresh:
					case <-mc.force:
						mc.force <- struct{}{}
					}
				}
				continue
			}
		}
		if !errors.Is(err, fs.ErrNotExist) {
			failures++
			next := time.Now().Add(m.backoff(failures))
			m.mu.Lock()
			mc.rec.State = StateFailed
			m.setErrorLocked(mc, fmt.Errorf("reading stored certificate: %w", err), &next)
			m.mu.Unlock()
			if !m.sleep(ctx, mc, time.Until(next)) {
				return
			}
			continue
		}
		m.mu.Lock()
		m.setStateLocked(mc, StatePending)
		mc.rec.NextAttempt = nil
		m.mu.Unlock()
		m.log.Info("obtaining certificate", "name", name, "issuers", mc.rec.Issuers, "challenge", mc.spec.Challenge)
		err = mc.cfg.ObtainCertSync(ctx, name)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			m.log.Info("certificate obtained", "name", name)
			continue
		}
		failures++
		next := time.Now().Add(m.backoff(failures))
		reason, plain := Classify(err)
		m.log.Warn("obtaining certificate failed", "name", name, "reason", reason, "err", plain, "next_attempt", next)
		m.mu.Lock()
		m.setStateLocked(mc, StateFailed)
		m.setErrorLocked(mc, err, &next)
		m.mu.Unlock()
		if !m.sleep(ctx, mc, time.Until(next)) {
			return
		}
	}
}

// sleep waits d, or less when a retry is forced; false when stopping.
func (m *Manager) sleep(ctx context.Context, mc *managed, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-mc.force:
	case <-mc.refresh:
	}
	return true
}

func (m *Manager) backoff(failures int) time.Duration {
	m.mu.Lock()
	lo, hi := m.settings.RetryMin, m.settings.RetryMax
	m.mu.Unlock()
	if lo <= 0 {
		lo = 30 * time.Second
	}
	if hi < lo {
		hi = max(lo, 6*time.Hour)
	}
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

func (m *Manager) setStateLocked(mc *managed, state string) {
	mc.rec.State = state
	m.metrics.setState(mc.spec.Name, state)
}

func (m *Manager) setErrorLocked(mc *managed, err error, next *time.Time) {
	_, plain := Classify(err)
	now := time.Now().UTC().Truncate(time.Second)
	mc.rec.LastError = plain
	mc.rec.LastErrorAt = &now
	if next != nil {
		n := next.UTC().Truncate(time.Second)
		mc.rec.NextAttempt = &n
	}
	m.metrics.setState(mc.spec.Name, mc.rec.State)
}

// stored is a certificate read from storage.
type stored struct {
	issuerKey string
	leaf      *x509.Certificate
	ari       *acme.RenewalInfo
}

// loadStored finds the newest certificate for mc in storage under any of
// its issuers.
func (m *Manager) loadStored(ctx context.Context, mc *managed) (*stored, error) {
	var best *stored
	var firstErr error
	for _, is := range mc.cfg.Issuers {
		st, err := m.readStored(ctx, is.IssuerKey(), mc.spec.Name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) && firstErr == nil {
				firstErr = err
			}
			continue
		}
		if best == nil || st.leaf.NotAfter.After(best.leaf.NotAfter) {
			best = st
		}
	}
	if best != nil {
		return best, nil
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, fs.ErrNotExist
}

func (m *Manager) readStored(ctx context.Context, issuerKey, name string) (*stored, error) {
	crt, err := m.storage.Load(ctx, certmagic.StorageKeys.SiteCert(issuerKey, name))
	if err != nil {
		return nil, err
	}
	if !m.storage.Exists(ctx, certmagic.StorageKeys.SitePrivateKey(issuerKey, name)) {
		return nil, fs.ErrNotExist
	}
	b, _ := pem.Decode(crt)
	if b == nil {
		return nil, fmt.Errorf("%s: not PEM", certmagic.StorageKeys.SiteCert(issuerKey, name))
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, err
	}
	st := &stored{issuerKey: issuerKey, leaf: leaf}
	if meta, err := m.storage.Load(ctx, certmagic.StorageKeys.SiteMeta(issuerKey, name)); err == nil {
		var res struct {
			IssuerData json.RawMessage `json:"issuer_data"`
		}
		if json.Unmarshal(meta, &res) == nil && len(res.IssuerData) > 0 {
			var ac acme.Certificate
			if json.Unmarshal(res.IssuerData, &ac) == nil && ac.RenewalInfo != nil && !ac.RenewalInfo.SuggestedWindow.Start.IsZero() {
				st.ari = ac.RenewalInfo
			}
		}
	}
	return st, nil
}

func (m *Manager) setIssuedLocked(mc *managed, st *stored) {
	r := &mc.rec
	fillFromLeaf(r, st.leaf)
	r.Issuer = st.issuerKey
	r.ARIWindow = nil
	var renewAt time.Time
	if st.ari != nil {
		r.ARIWindow = &Window{Start: st.ari.SuggestedWindow.Start.UTC(), End: st.ari.SuggestedWindow.End.UTC()}
	}
	if st.ari != nil && !m.settings.DisableARI {
		renewAt = st.ari.SelectedTime
		if renewAt.IsZero() {
			renewAt = st.ari.SuggestedWindow.Start
		}
	} else {
		ratio := m.settings.RenewalWindowRatio
		if ratio <= 0 {
			ratio = certmagic.DefaultRenewalWindowRatio
		}
		life := st.leaf.NotAfter.Sub(st.leaf.NotBefore)
		renewAt = st.leaf.NotAfter.Add(-time.Duration(float64(life) * ratio))
	}
	ra := renewAt.UTC().Truncate(time.Second)
	r.RenewAt = &ra
	m.metrics.notAfter.WithLabelValues(mc.spec.Name).Set(float64(st.leaf.NotAfter.Unix()))
	if time.Now().After(st.leaf.NotAfter) {
		// Keep last_error and next_attempt: they say why it expired.
		m.setStateLocked(mc, StateExpired)
		return
	}
	r.NextAttempt = &ra
	r.LastError, r.LastErrorAt = "", nil
	m.setStateLocked(mc, StateIssued)
	m.metrics.failing.WithLabelValues(mc.spec.Name).Set(0)
}

func fillFromLeaf(r *Record, leaf *x509.Certificate) {
	nb, na := leaf.NotBefore.UTC(), leaf.NotAfter.UTC()
	r.NotBefore, r.NotAfter = &nb, &na
	r.Serial = strings.ToUpper(hex.EncodeToString(leaf.SerialNumber.Bytes()))
	r.SANs = append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		r.SANs = append(r.SANs, ip.String())
	}
}

// Records lists every certificate, sorted by name.
func (m *Manager) Records() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Record, 0, len(m.certs)+len(m.imported))
	for _, mc := range m.certs {
		out = append(out, m.snapshotLocked(&mc.rec))
	}
	for _, r := range m.imported {
		out = append(out, m.snapshotLocked(r))
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Record returns one certificate's record.
func (m *Manager) Record(name string) (Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mc := m.certs[name]; mc != nil {
		return m.snapshotLocked(&mc.rec), true
	}
	if r := m.imported[name]; r != nil {
		return m.snapshotLocked(r), true
	}
	return Record{}, false
}

// snapshotLocked copies r, turning a certificate past its not-after into
// "expired" at read time.
func (m *Manager) snapshotLocked(r *Record) Record {
	c := *r
	c.Issuers = slices.Clone(r.Issuers)
	c.SANs = slices.Clone(r.SANs)
	if c.NotAfter != nil && time.Now().After(*c.NotAfter) && (c.State == StateIssued || c.State == StateRenewing) {
		c.State = StateExpired
	}
	return c
}

// ErrNotFound is returned for unknown names.
var ErrNotFound = errors.New("no such certificate")

// ErrConflict is returned when a request clashes with what exists.
var ErrConflict = errors.New("conflict")

// Request starts managing specs (source "api"), persisting them in the
// storage so they survive restarts.
func (m *Manager) Request(specs []Spec) ([]Record, error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	for _, sp := range specs {
		if m.certs[sp.Name] != nil || m.imported[sp.Name] != nil {
			m.mu.Unlock()
			return nil, fmt.Errorf("%w: %s is already managed", ErrConflict, sp.Name)
		}
		for _, in := range sp.Issuers {
			if _, ok := m.issuerByName(in); !ok {
				m.mu.Unlock()
				return nil, fmt.Errorf("unknown issuer %q", in)
			}
		}
	}
	for _, sp := range specs {
		sp.Source = SourceAPI
		m.startLocked(sp)
	}
	m.mu.Unlock()
	if err := m.saveRequests(); err != nil {
		return nil, err
	}
	var out []Record
	for _, sp := range specs {
		r, _ := m.Record(sp.Name)
		out = append(out, r)
	}
	return out, nil
}

// Renew forces a renewal of name now (or a retry of a failed order).
func (m *Manager) Renew(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mc := m.certs[name]
	if mc == nil {
		if m.imported[name] != nil {
			return fmt.Errorf("%w: %s is imported; certd cannot renew it (import a new one)", ErrConflict, name)
		}
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	select {
	case mc.force <- struct{}{}:
	default:
	}
	return nil
}

// Delete stops managing name and removes its certificates from storage
// (so edged and lbd stop serving them). Config entries cannot be deleted
// here: remove them from the config file.
func (m *Manager) Delete(ctx context.Context, name string) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	mc, imp := m.certs[name], m.imported[name]
	switch {
	case mc == nil && imp == nil:
		m.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	case mc != nil && mc.spec.Source == SourceConfig:
		m.mu.Unlock()
		return fmt.Errorf("%w: %s comes from the config file; remove it there and reload", ErrConflict, name)
	}
	if mc != nil {
		m.stopLocked(mc)
		delete(m.certs, name)
	}
	delete(m.imported, name)
	m.metrics.forget(name)
	m.mu.Unlock()
	if err := m.saveRequests(); err != nil {
		return err
	}
	issuers, err := m.storage.List(ctx, "certificates", false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, iss := range issuers {
		prefix := path.Join(iss, certmagic.StorageKeys.Safe(name))
		if m.storage.Exists(ctx, prefix) {
			if err := m.storage.Delete(ctx, prefix); err != nil {
				return fmt.Errorf("delete %s: %w", prefix, err)
			}
		}
	}
	m.log.Info("certificate deleted", "name", name)
	return nil
}

// Import stores an existing certificate and key (served, not renewed;
// alerts fire as it nears expiry). The record is named after the first
// DNS name of the certificate.
func (m *Manager) Import(ctx context.Context, certPEM, keyPEM []byte) (Record, error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return Record{}, fmt.Errorf("certificate and key do not form a valid pair: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return Record{}, err
		}
	}
	if len(leaf.DNSNames) == 0 {
		return Record{}, errors.New("the certificate has no DNS names (subject alternative names)")
	}
	if time.Now().After(leaf.NotAfter) {
		return Record{}, fmt.Errorf("the certificate expired on %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	name := strings.ToLower(leaf.DNSNames[0])
	m.mu.Lock()
	if mc := m.certs[name]; mc != nil {
		m.mu.Unlock()
		return Record{}, fmt.Errorf("%w: %s is managed by certd; delete it first", ErrConflict, name)
	}
	m.mu.Unlock()
	meta, _ := json.Marshal(map[string]any{"sans": leaf.DNSNames, "issuer_data": map[string]string{"imported": time.Now().UTC().Format(time.RFC3339)}})
	// Key first, certificate last: readers load a pair once the .crt
	// changes, and a mismatched pair never replaces a working one.
	for _, kv := range []struct {
		key string
		val []byte
	}{
		{certmagic.StorageKeys.SitePrivateKey(ImportedIssuerKey, name), keyPEM},
		{certmagic.StorageKeys.SiteMeta(ImportedIssuerKey, name), meta},
		{certmagic.StorageKeys.SiteCert(ImportedIssuerKey, name), certPEM},
	} {
		if err := m.storage.Store(ctx, kv.key, kv.val); err != nil {
			return Record{}, fmt.Errorf("store %s: %w", kv.key, err)
		}
	}
	m.mu.Lock()
	r := m.loadImportedLocked(name)
	rec := m.snapshotLocked(r)
	m.mu.Unlock()
	if err := m.saveRequests(); err != nil {
		return Record{}, err
	}
	m.log.Info("certificate imported", "name", name, "not_after", leaf.NotAfter)
	return rec, nil
}

// loadImportedLocked reads an imported certificate into a record.
func (m *Manager) loadImportedLocked(name string) *Record {
	r := &Record{Name: name, Source: SourceImport, Issuer: ImportedIssuerKey, State: StateFailed}
	st, err := m.readStored(context.Background(), ImportedIssuerKey, name)
	if err != nil {
		r.LastError = "imported certificate missing from storage: " + err.Error()
	} else {
		fillFromLeaf(r, st.leaf)
		r.State = StateIssued
		if time.Now().After(st.leaf.NotAfter) {
			r.State = StateExpired
		}
		m.metrics.notAfter.WithLabelValues(name).Set(float64(st.leaf.NotAfter.Unix()))
		m.metrics.failing.WithLabelValues(name).Set(0)
	}
	m.metrics.setState(name, r.State)
	m.imported[name] = r
	return r
}

const requestsKey = "certd/requests.json"

// saveRequests persists API-requested and imported entries.
func (m *Manager) saveRequests() error {
	m.mu.Lock()
	var specs []Spec
	for _, mc := range m.certs {
		if mc.spec.Source == SourceAPI {
			specs = append(specs, mc.spec)
		}
	}
	for name := range m.imported {
		specs = append(specs, Spec{Name: name, Source: SourceImport})
	}
	m.mu.Unlock()
	slices.SortFunc(specs, func(a, b Spec) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(specs, "", "  ")
	if err != nil {
		return err
	}
	if err := m.storage.Store(context.Background(), requestsKey, b); err != nil {
		return fmt.Errorf("store certificate requests: %w", err)
	}
	return nil
}

func (m *Manager) loadRequests() ([]Spec, error) {
	b, err := m.storage.Load(context.Background(), requestsKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var specs []Spec
	if err := json.Unmarshal(b, &specs); err != nil {
		return nil, fmt.Errorf("%s: %w", requestsKey, err)
	}
	return specs, nil
}

// LocalCARoot returns the PEM root of the named local CA issuer (the first
// one when name is "").
func (m *Manager) LocalCARoot(ctx context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	var found *Issuer
	for i := range m.settings.Issuers {
		is := m.settings.Issuers[i]
		if is.Type == "local_ca" && (name == "" || is.Name == name) {
			found = &is
			break
		}
	}
	if found == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: no local_ca issuer %q is configured", ErrNotFound, name)
	}
	ca := m.cas[found.Name]
	if ca == nil {
		ca = localca.New(m.storage, localca.Options{Name: found.LocalCAName, Lifetime: found.LocalCALifetime})
		m.cas[found.Name] = ca
	}
	m.mu.Unlock()
	return ca.Root(ctx)
}

// Classify turns an ordering error into a metric reason (a small closed
// set) and a message in plain words.
func Classify(err error) (reason, plain string) {
	if err == nil {
		return "", ""
	}
	msg := err.Error()
	var prob acme.Problem
	if errors.As(err, &prob) {
		t := strings.TrimPrefix(prob.Type, "urn:ietf:params:acme:error:")
		detail := prob.Detail
		if detail == "" {
			detail = t
		}
		switch t {
		case "rateLimited":
			return "rate_limited", "the CA's rate limit was reached: " + detail
		case "rejectedIdentifier", "caa":
			return "rejected", "the CA refuses to issue for this name: " + detail
		case "unauthorized", "incorrectResponse", "connection", "dns", "tls":
			return "validation", "the CA could not validate control of the name (" + t + "): " + detail
		case "externalAccountRequired", "accountDoesNotExist", "unauthorizedAccount":
			return "account", "the CA refused the ACME account (" + t + "): " + detail
		case "malformed":
			return "rejected", "the CA rejected the request: " + detail
		default:
			return "ca_error", "the CA answered with an error (" + t + "): " + detail
		}
	}
	lower := strings.ToLower(msg)
	switch {
	case strings.Contains(lower, "libdnsprovider") || strings.Contains(lower, "could not determine zone") || strings.Contains(lower, "presenting") && strings.Contains(lower, "dns"):
		return "dns_provider", "the DNS-01 record could not be published through dnsd: " + msg
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(lower, "timeout"):
		return "timeout", "the order timed out: " + msg
	case strings.Contains(lower, "connection refused") || strings.Contains(lower, "no such host") ||
		strings.Contains(lower, "dial tcp") || strings.Contains(lower, "certificate signed by unknown authority") ||
		strings.Contains(lower, "provisioning client") || strings.Contains(lower, "fetching directory"):
		return "ca_unreachable", "the CA could not be reached: " + msg
	case strings.Contains(lower, "external account"):
		return "account", "the CA refused the ACME account: " + msg
	}
	return "other", msg
}

type metrics struct {
	notAfter *prometheus.GaugeVec
	state    *prometheus.GaugeVec
	failing  *prometheus.GaugeVec
	attempts *prometheus.CounterVec
	failures *prometheus.CounterVec
}

// Metric names, also used by the alert rules test.
const (
	MetricNotAfter = "edgestack_certd_certificate_not_after_timestamp_seconds"
	MetricState    = "edgestack_certd_certificate_state"
	MetricFailing  = "edgestack_certd_certificate_renewal_failing"
	MetricAttempts = "edgestack_certd_renewal_attempts_total"
	MetricFailures = "edgestack_certd_renewal_failures_total"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		notAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricNotAfter, Help: "Not-after time of the certificate currently stored for each name."}, []string{"name"}),
		state:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricState, Help: "1 for the current state of each certificate (pending, issued, renewing, failed, expired)."}, []string{"name", "state"}),
		failing:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricFailing, Help: "1 while the last order or renewal attempt of a certificate failed."}, []string{"name"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricAttempts, Help: "Order (kind=obtain) and renewal (kind=renew) attempts per certificate."}, []string{"name", "kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricFailures, Help: "Failed order and renewal attempts per certificate, by reason."}, []string{"name", "reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.notAfter, m.state, m.failing, m.attempts, m.failures} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("manager metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (mt *metrics) setState(name, state string) {
	for _, s := range States {
		v := 0.0
		if s == state {
			v = 1
		}
		mt.state.WithLabelValues(name, s).Set(v)
	}
}

func (mt *metrics) forget(name string) {
	l := prometheus.Labels{"name": name}
	mt.notAfter.DeletePartialMatch(l)
	mt.state.DeletePartialMatch(l)
	mt.failing.DeletePartialMatch(l)
	mt.attempts.DeletePartialMatch(l)
	mt.failures.DeletePartialMatch(l)
}
