package manager

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/edgestack/edgestack/certs/certsource"
	"github.com/edgestack/edgestack/certs/pebbletest"
	"github.com/edgestack/edgestack/certs/testdns"
	"github.com/mholt/acmez/v3/acme"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// env is one test's world: a DNS server with dnsd's change API, an
// edge-like reader (certsource) answering challenges on its own listeners
// from the shared storage, pebble, and a Manager.
type env struct {
	t    *testing.T
	dir  string
	dns  *testdns.Server
	src  *certsource.Source
	peb  *pebbletest.Pebble
	mgr  *Manager
	reg  *prometheus.Registry
	tls  string // edge TLS address
	logs *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type envOpts struct {
	eab       map[string]string
	blocklist []string
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), logs: &syncBuf{}, reg: prometheus.NewRegistry()}
	e.dns = testdns.Start(t, "dns-token", "example.test")
	var err error
	e.src, err = certsource.New(certsource.Options{Dir: e.dir, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.src.Start(ctx)
	t.Cleanup(func() { cancel(); e.src.Close() })

	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.src.HTTPChallenge(w, r) {
			return
		}
		http.NotFound(w, r)
	})}
	go func() { _ = hs.Serve(httpLn) }()
	t.Cleanup(func() { _ = hs.Close() })
	tlsRaw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.tls = tlsRaw.Addr().String()
	tlsLn := tls.NewListener(tlsRaw, e.src.TLSConfig())
	go func() {
		for {
			c, err := tlsLn.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	t.Cleanup(func() { tlsLn.Close() })

	e.peb = pebbletest.Start(t, pebbletest.Options{
		HTTPPort:  httpLn.Addr().(*net.TCPAddr).Port,
		TLSPort:   tlsRaw.Addr().(*net.TCPAddr).Port,
		DNSServer: e.dns.DNSAddr,
		EAB:       o.eab,
		Blocklist: o.blocklist,
	})
	e.mgr, err = New(Options{
		Dir:                e.dir,
		Logger:             slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:         e.reg,
		RenewCheckInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.mgr.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() {
			t.Logf("manager log:\n%s", e.logs.String())
		}
	})
	return e
}

func (e *env) settings(issuers ...Issuer) Settings {
	if len(issuers) == 0 {
		issuers = []Issuer{e.pebbleIssuer()}
	}
	return Settings{
		Issuers:  issuers,
		DNS01:    DNS01{URL: e.dns.APIURL, Token: "dns-token", DNSServer: e.dns.DNSAddr, Timeout: 5 * time.Second},
		RetryMin: time.Hour, RetryMax: 2 * time.Hour, // failures stay visible during a test
		ObtainTimeout: 30 * time.Second,
	}
}

func (e *env) pebbleIssuer() Issuer {
	return Issuer{Name: "pebble", Type: "acme", Directory: e.peb.URL, Roots: e.peb.Roots, Profile: "shortlived", Email: "ops@example.test"}
}

func (e *env) start(s Settings, specs ...Spec) {
	e.t.Helper()
	if err := e.mgr.Start(context.Background(), s, specs); err != nil {
		e.t.Fatal(err)
	}
}

// wait polls name's record until ok or the timeout.
func (e *env) wait(name string, d time.Duration, ok func(Record) bool) Record {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r, found := e.mgr.Record(name)
		if found && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: timed out; record %+v", name, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) waitState(name, state string) Record {
	e.t.Helper()
	return e.wait(name, 20*time.Second, func(r Record) bool {
		if state == StateIssued && r.State == StateFailed {
			e.t.Fatalf("%s failed: %s", name, r.LastError)
		}
		return r.State == state
	})
}

// served dials the edge-like reader and returns the leaf it serves for
// sni, nil when the handshake fails.
func (e *env) served(sni string) *x509.Certificate {
	e.t.Helper()
	c, err := tls.Dial("tcp", e.tls, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		return nil
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

func spec(name, challenge string, issuers ...string) Spec {
	return Spec{Name: name, KeyType: "p256", Challenge: challenge, Issuers: issuers, Source: SourceConfig}
}

func TestChallenges(t *testing.T) {
	type chalCase struct {
		name      string
		challenge string
		keyType   string
	}
	for _, tc := range []chalCase{
		{"www.example.test", ChallengeHTTP01, "p256"},
		{"alpn.example.test", ChallengeTLSALPN01, "p384"},
		{"dns.example.test", ChallengeDNS01, "rsa2048"},
	} {
		t.Run(tc.challenge, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			sp := spec(tc.name, tc.challenge)
			sp.KeyType = tc.keyType
			start := time.Now()
			e.start(e.settings(), sp)
			r := e.waitState(tc.name, StateIssued)
			t.Logf("%s issued in %v (serial %s)", tc.challenge, time.Since(start), r.Serial)
			if r.Serial == "" || r.NotAfter == nil || r.NotBefore == nil || r.RenewAt == nil || !strings.Contains(r.Issuer, "127.0.0.1") {
				t.Fatalf("incomplete record: %+v", r)
			}
			if r.ARIWindow == nil || r.RenewAt.Before(r.ARIWindow.Start) || r.RenewAt.After(r.ARIWindow.End) {
				t.Errorf("ARI window %+v, renew at %v", r.ARIWindow, r.RenewAt)
			}
			if d := r.NotAfter.Sub(*r.NotBefore); d > 11*time.Minute {
				t.Errorf("lifetime %v: the shortlived profile was not used", d)
			}
			leaf := e.waitServed(tc.name, r.Serial)
			roots := e.peb.IssuerRoots(t)
			inter := x509.NewCertPool()
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: tc.name, Roots: roots, Intermediates: inter}); err != nil && !strings.Contains(err.Error(), "unknown authority") {
				t.Errorf("verify: %v", err)
			}
			wantAlg := map[string]x509.PublicKeyAlgorithm{"p256": x509.ECDSA, "p384": x509.ECDSA, "rsa2048": x509.RSA}[tc.keyType]
			if leaf.PublicKeyAlgorithm != wantAlg {
				t.Errorf("key algorithm %v, want %v", leaf.PublicKeyAlgorithm, wantAlg)
			}
			if got := value(e.mgr.metrics.notAfter.WithLabelValues(tc.name)); got != float64(r.NotAfter.Unix()) {
				t.Errorf("not_after metric %v, want %v", got, r.NotAfter.Unix())
			}
			if tc.challenge == ChallengeDNS01 {
				e.waitNoTXT("_acme-challenge." + tc.name)
			}
		})
	}
}

func (e *env) waitNoTXT(name string) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.dns.TXT(name)) > 0 {
		if time.Now().After(deadline) {
			e.t.Fatalf("TXT %s not cleaned up: %q", name, e.dns.TXT(name))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitServed waits until the reader serves the certificate with serial.
func (e *env) waitServed(sni, serial string) *x509.Certificate {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		leaf := e.served(sni)
		if leaf != nil && strings.EqualFold(leaf.SerialNumber.Text(16), strings.TrimLeft(serial, "0")) {
			return leaf
		}
		if time.Now().After(deadline) {
			got := "no certificate"
			if leaf != nil {
				got = leaf.SerialNumber.Text(16)
			}
			e.t.Fatalf("reader serves %s for %s, want serial %s", got, sni, serial)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWildcardAndApexTogether orders *.example.test and example.test at
// once: both use _acme-challenge.example.test.
func TestWildcardAndApexTogether(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.start(e.settings(), spec("*.example.test", ChallengeDNS01), spec("example.test", ChallengeDNS01))
	w := e.waitState("*.example.test", StateIssued)
	a := e.waitState("example.test", StateIssued)
	if w.Serial == a.Serial {
		t.Fatal("one certificate for both names")
	}
	e.waitServed("anything.example.test", w.Serial)
	e.waitServed("example.test", a.Serial)
	e.waitNoTXT("_acme-challenge.example.test")
}

func TestForcedRenewal(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.start(e.settings(), spec("renew.example.test", ChallengeHTTP01))
	first := e.waitState("renew.example.test", StateIssued)
	if err := e.mgr.Renew("renew.example.test"); err != nil {
		t.Fatal(err)
	}
	second := e.wait("renew.example.test", 20*time.Second, func(r Record) bool { return r.State == StateIssued && r.Serial != first.Serial })
	e.waitServed("renew.example.test", second.Serial)
	if got := value(e.mgr.metrics.attempts.WithLabelValues("renew.example.test", "renew")); got < 1 {
		t.Errorf("renew attempts metric = %v", got)
	}
	// Renewal against a CA that is gone: the record says so, the working
	// certificate stays in storage and keeps being served.
	e.peb.Close()
	if err := e.mgr.Renew("renew.example.test"); err != nil {
		t.Fatal(err)
	}
	failed := e.wait("renew.example.test", 30*time.Second, func(r Record) bool { return r.LastError != "" })
	if failed.State != StateRenewing || !strings.Contains(failed.LastError, "could not be reached") {
		t.Errorf("after failed renewal: state %s, error %q", failed.State, failed.LastError)
	}
	e.waitServed("renew.example.test", second.Serial)
	if _, err := os.Stat(filepath.Join(e.dir, "certificates")); err != nil {
		t.Fatal(err)
	}
}

// TestAutomaticRenewal watches certmagic renew 20-second certificates on
// its own: following the CA's ARI window, and by share of the lifetime
// with ARI off.
func TestAutomaticRenewal(t *testing.T) {
	t.Parallel()
	for _, ari := range []bool{true, false} {
		name := map[bool]string{true: "ari", false: "ratio"}[ari]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOpts{})
			iss := e.pebbleIssuer()
			iss.Profile = "tiny"
			s := e.settings(iss)
			s.DisableARI = !ari
			s.RenewalWindowRatio = 0.5
			if ari {
				// Leave the renewal to the ARI window (pebble gives the whole lifetime).
				s.RenewalWindowRatio = 0.01
			}
			host := name + ".example.test"
			e.start(s, spec(host, ChallengeHTTP01))
			first := e.waitState(host, StateIssued)
			if first.ARIWindow == nil {
				t.Errorf("no ARI window recorded")
			}
			if !ari && first.RenewAt.Sub(*first.NotBefore) > 11*time.Second {
				t.Errorf("renew at %v for a 20s certificate from %v with ratio 0.5", first.RenewAt, first.NotBefore)
			}
			next := e.wait(host, 40*time.Second, func(r Record) bool { return r.State == StateIssued && r.Serial != first.Serial })
			t.Logf("renewed %v after issuance (renew_at was %v after)", time.Since(*first.NotBefore).Round(time.Second), first.RenewAt.Sub(*first.NotBefore))
			if next.NotAfter.Before(*first.NotAfter) {
				t.Errorf("renewed certificate expires earlier")
			}
			e.waitServed(host, next.Serial)
		})
	}
}

// TestExpiryWhileCAIsDown lets a 20-second certificate expire while its CA
// is gone: the record and metric turn "expired" with the reason kept, and
// the files stay in storage.
func TestExpiryWhileCAIsDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	iss := e.pebbleIssuer()
	iss.Profile = "tiny"
	s := e.settings(iss)
	// Renewal attempts start halfway through the 20 s lifetime, so one has
	// failed (CA gone) well before the end, even on a loaded machine.
	s.RenewalWindowRatio = 0.5
	s.DisableARI = true
	// certmagic remembers failed renewals per name for the whole process:
	// a fresh name per run keeps -count=N honest.
	host := fmt.Sprintf("expire%d.example.test", time.Now().UnixNano()%1e9)
	e.start(s, spec(host, ChallengeHTTP01))
	first := e.waitState(host, StateIssued)
	e.peb.Close()
	r := e.wait(host, 40*time.Second, func(r Record) bool { return r.State == StateExpired })
	if r.Serial != first.Serial || !strings.Contains(r.LastError, "could not be reached") {
		t.Errorf("expired record %+v", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for value(e.mgr.metrics.state.WithLabelValues(host, StateExpired)) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("metric state{expired} never set")
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := &certmagic.FileStorage{Path: e.dir}
	if !st.Exists(context.Background(), certmagic.StorageKeys.SiteCert(r.Issuer, host)) {
		t.Error("expired certificate removed from storage")
	}
}

func TestIssuerFallback(t *testing.T) {
	e := newEnv(t, envOpts{})
	down := Issuer{Name: "down", Type: "acme", Directory: "https://127.0.0.1:1/dir", Roots: e.peb.Roots}
	e.start(e.settings(down, e.pebbleIssuer()), spec("fallback.example.test", ChallengeHTTP01, "down", "pebble"))
	r := e.waitState("fallback.example.test", StateIssued)
	if !strings.Contains(r.Issuer, "127.0.0.1") || strings.Contains(r.Issuer, "127.0.0.1-1-") {
		t.Fatalf("issued by %q", r.Issuer)
	}
}

func TestEAB(t *testing.T) {
	const kid, mac = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	e := newEnv(t, envOpts{eab: map[string]string{kid: mac}})
	without := e.pebbleIssuer()
	with := e.pebbleIssuer()
	with.Name = "pebble-eab"
	with.Email = "eab@example.test"
	with.EAB = eabOf(kid, mac)
	e.start(e.settings(without, with),
		spec("noeab.example.test", ChallengeHTTP01, "pebble"),
		spec("eab.example.test", ChallengeHTTP01, "pebble-eab"))
	e.waitState("eab.example.test", StateIssued)
	r := e.waitState("noeab.example.test", StateFailed)
	if !strings.Contains(r.LastError, "externalAccountRequired") || r.NextAttempt == nil {
		t.Fatalf("failure without EAB: %+v", r)
	}
}

func TestBadInputEndsInClearStates(t *testing.T) {
	e := newEnv(t, envOpts{blocklist: []string{"blocked.example.test"}})
	unreachable := Issuer{Name: "unreachable", Type: "acme", Directory: "https://127.0.0.1:1/dir"}
	e.start(e.settings(unreachable, e.pebbleIssuer()),
		spec("a.example.test", ChallengeHTTP01, "unreachable"),
		spec("blocked.example.test", ChallengeHTTP01, "pebble"),
		spec("www.outside.test", ChallengeDNS01, "pebble"),
	)
	type want struct{ name, reason, words string }
	for _, w := range []want{
		{"a.example.test", "ca_unreachable", "could not be reached"},
		{"blocked.example.test", "rejected", "refuses to issue"},
		{"www.outside.test", "dns_provider", "could not be published through dnsd"},
	} {
		r := e.waitState(w.name, StateFailed)
		if !strings.Contains(r.LastError, w.words) || r.NextAttempt == nil || r.Serial != "" {
			t.Errorf("%s: record %+v; want error with %q and a next attempt", w.name, r, w.words)
		}
		if got := value(e.mgr.metrics.failures.WithLabelValues(w.name, w.reason)); got < 1 {
			t.Errorf("%s: failures{reason=%s} = %v", w.name, w.reason, got)
		}
		if got := value(e.mgr.metrics.failing.WithLabelValues(w.name)); got != 1 {
			t.Errorf("%s: renewal_failing = %v", w.name, got)
		}
	}
}

func TestLocalCAAndImport(t *testing.T) {
	e := newEnv(t, envOpts{})
	local := Issuer{Name: "local", Type: "local_ca", LocalCALifetime: time.Hour}
	e.start(e.settings(local), spec("*.local.test", ChallengeHTTP01, "local"))
	r := e.waitState("*.local.test", StateIssued)
	root, err := e.mgr.LocalCARoot(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root)
	leaf := e.waitServed("x.local.test", r.Serial)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "x.local.test", Roots: pool}); err != nil {
		t.Fatalf("local CA leaf does not verify with the exported root: %v", err)
	}

	// Import a certificate from elsewhere (here: the local CA's own files).
	st := &certmagic.FileStorage{Path: e.dir}
	crt, _ := st.Load(context.Background(), certmagic.StorageKeys.SiteCert("local", "*.local.test"))
	key, _ := st.Load(context.Background(), certmagic.StorageKeys.SitePrivateKey("local", "*.local.test"))
	if _, err := e.mgr.Import(context.Background(), crt, []byte("junk")); err == nil {
		t.Fatal("bad key imported")
	}
	if _, err := e.mgr.Import(context.Background(), crt, key); err == nil {
		t.Fatal("import over a managed name accepted")
	}
	if err := e.mgr.Delete(context.Background(), "*.local.test"); err == nil {
		t.Fatal("deleted a config certificate")
	}
	e.mgr.Update(e.settings(local), nil) // the config entry goes away
	rec, err := e.mgr.Import(context.Background(), crt, key)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Source != SourceImport || rec.State != StateIssued || rec.Serial != r.Serial {
		t.Fatalf("imported record %+v", rec)
	}
	if err := e.mgr.Renew("*.local.test"); err == nil {
		t.Fatal("renew of an imported certificate accepted")
	}
	if err := e.mgr.Delete(context.Background(), "*.local.test"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.mgr.Record("*.local.test"); ok {
		t.Fatal("record still there")
	}
	if st.Exists(context.Background(), certmagic.StorageKeys.SiteCert(ImportedIssuerKey, "*.local.test")) {
		t.Fatal("imported files still in storage")
	}
}

func TestRequestPersists(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.start(e.settings())
	if _, err := e.mgr.Request([]Spec{{Name: "api.example.test", Challenge: ChallengeHTTP01}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Request([]Spec{{Name: "api.example.test"}}); err == nil {
		t.Fatal("duplicate request accepted")
	}
	e.waitState("api.example.test", StateIssued)
	// A second manager on the same storage picks the request up.
	m2, err := New(Options{Dir: e.dir, HTTPChallengeListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Start(context.Background(), e.settings(), nil); err != nil {
		t.Fatal(err)
	}
	defer m2.Stop(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r, ok := m2.Record("api.example.test"); ok && r.State == StateIssued && r.Source == SourceAPI {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stored request not picked up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClassify(t *testing.T) {
	type classCase struct {
		err    string
		reason string
	}
	for _, tc := range []classCase{
		{`Get "https://127.0.0.1:1/dir": dial tcp 127.0.0.1:1: connect: connection refused`, "ca_unreachable"},
		{"libdnsprovider: dnsd answered 404", "dns_provider"},
		{"something odd", "other"},
	} {
		if got, _ := Classify(errorString(tc.err)); got != tc.reason {
			t.Errorf("Classify(%q) = %s, want %s", tc.err, got, tc.reason)
		}
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

func eabOf(kid, mac string) *acme.EAB { return &acme.EAB{KeyID: kid, MACKey: mac} }

func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// TestNoEmailAccounts: an ACME issuer without an email orders several
// certificates at once, then a second manager (fresh storage, another
// CA) in the same process orders one more. certmagic's email discovery,
// reached through PreCheck, could adopt the account folder name
// "default" as a contact address for the whole process, after which
// every new registration was refused ("invalidContact"); issuers without
// an email skip it (noPrompt).
func TestNoEmailAccounts(t *testing.T) {
	for round := range 2 {
		e := newEnv(t, envOpts{})
		iss := e.pebbleIssuer()
		iss.Email = ""
		names := []string{"a.example.test", "b.example.test", "c.example.test"}
		var specs []Spec
		for _, n := range names {
			specs = append(specs, spec(n, ChallengeHTTP01))
		}
		e.start(e.settings(iss), specs...)
		for _, n := range names {
			if r := e.waitState(n, StateIssued); r.Serial == "" {
				t.Fatalf("round %d: %s issued without a serial", round, n)
			}
		}
	}
}
