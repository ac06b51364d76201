// Package pebbletest starts a real ACME server (Let's Encrypt's pebble) in
// process, for certd's tests and benchmarks: zero Retry-After, no VA
// sleeps, optional EAB, and profiles "default" (1 hour), "shortlived"
// (10 minutes) and "tiny" (20 seconds, to watch renewals happen).
package pebbletest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Options configure a pebble.
type Options struct {
	// HTTPPort and TLSPort are where its VA connects for http-01 and
	// tls-alpn-01 (on the address the name resolves to).
	HTTPPort, TLSPort int
	// DNSServer answers the VA's lookups (A, AAAA, TXT over TCP).
	DNSServer string
	// EAB, when set, makes External Account Binding required: key ID ->
	// base64url MAC key.
	EAB map[string]string
	// Blocklist holds domains the CA refuses.
	Blocklist []string
	// Log receives pebble's log; default discard.
	Log io.Writer
}

// Pebble is a running ACME server.
type Pebble struct {
	URL       string // directory URL
	Roots     *x509.CertPool
	RootsFile string // PEM of the HTTPS server's certificate, for ca_roots
	Mgmt      string // management base URL (set-renewal-info, roots)

	srv *httptest.Server
}

// Close stops the ACME server (to test an unreachable CA).
func (p *Pebble) Close() { p.srv.Close() }

func init() {
	// The VA reads these when it is created.
	os.Setenv("PEBBLE_VA_NOSLEEP", "1")
	os.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	os.Setenv("PEBBLE_AUTHZREUSE", "0")
}

// Start runs pebble until t ends.
func Start(t testing.TB, o Options) *Pebble {
	t.Helper()
	w := o.Log
	if w == nil {
		w = io.Discard
	}
	logger := log.New(w, "pebble ", log.Lmicroseconds)
	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{
		"default":    {Description: "default, 1 hour", ValidityPeriod: 3600},
		"shortlived": {Description: "short-lived, 10 minutes", ValidityPeriod: 600},
		"tiny":       {Description: "20 seconds, to watch renewals happen", ValidityPeriod: 20},
	}
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	validator := va.New(logger, o.HTTPPort, o.TLSPort, false, o.DNSServer, store)
	for id, key := range o.EAB {
		if err := store.AddExternalAccountKeyByID(id, key); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range o.Blocklist {
		if err := store.AddBlockedDomain(d); err != nil {
			t.Fatal(err)
		}
	}
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, len(o.EAB) > 0, 0, 0)
	srv := httptest.NewTLSServer(front.Handler())
	mgmt := httptest.NewTLSServer(front.ManagementHandler())
	t.Cleanup(func() { srv.Close(); mgmt.Close() })
	p := &Pebble{URL: srv.URL + wfe.DirectoryPath, Mgmt: mgmt.URL, Roots: x509.NewCertPool(), srv: srv}
	p.Roots.AddCert(srv.Certificate())
	p.RootsFile = filepath.Join(t.TempDir(), "pebble-https-root.pem")
	if err := os.WriteFile(p.RootsFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// IssuerRoots returns the PEM roots pebble signs certificates with.
func (p *Pebble) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure()}}
	resp, err := c.Get(p.Mgmt + wfe.RootCertPath + "0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root: %q", b)
	}
	return pool
}

func insecure() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } //nolint:gosec // test CA management endpoint
