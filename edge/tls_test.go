package edge

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/edgestack/edgestack/internal/config"
	"golang.org/x/net/http2"
)

func writeCert(t *testing.T, dir, name string, dnsNames ...string) (string, string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dnsNames[0]},
		DNSNames: dnsNames, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	cf, kf := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cf, kf
}

func TestTLSListener(t *testing.T) {
	// Both HTTP/2 servers: internal/h2 (default) and net/http's.
	for _, server := range []string{"edgestack", "net/http"} {
		t.Run(strings.ReplaceAll(server, "/", "_"), func(t *testing.T) { testTLSListener(t, server) })
	}
}

func testTLSListener(t *testing.T, h2server string) {
	dir := t.TempDir()
	c1, k1 := writeCert(t, dir, "a", "a.example.test")
	c2, k2 := writeCert(t, dir, "b", "*.b.example.test")
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/uri" {
			io.WriteString(w, r.RequestURI)
			return
		}
		fmt.Fprintf(w, "proto=%s", r.Header.Get("X-Forwarded-Proto"))
	})
	te := startEdge(t, fmt.Sprintf(`listeners:
  - name: https
    address: 127.0.0.1:0
    tls:
      certificates:
        - {cert_file: %s, key_file: %s}
        - {cert_file: %s, key_file: %s}
cache: {max_size: 8MiB, max_object_size: 1MiB}
http2: {server: %s, max_concurrent_streams: 77}
distributions:
  - name: d
    domains: ["*"]
    origins: [{name: o, url: "%s"}]
    default_behavior: {origin: o, viewer_protocol: https-only, default_ttl: 0s, cache_key: {query_strings: all}}
`, c1, k1, c2, k2, h2server, o.URL), nil)
	addr := te.svc.Addrs()[0].String()
	for _, c := range []struct{ sni, wantCN string }{
		{"a.example.test", "a.example.test"},
		{"x.b.example.test", "*.b.example.test"},
	} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: c.sni, InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
		cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		req, _ := http.NewRequest("GET", "https://"+addr+"/x", nil)
		req.Host = c.sni
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.TLS.PeerCertificates[0].Subject.CommonName != c.wantCN {
			t.Errorf("%s: got cert %s", c.sni, resp.TLS.PeerCertificates[0].Subject.CommonName)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("%s: %s, want HTTP/2", c.sni, resp.Proto)
		}
		if resp.StatusCode != 200 || string(body) != "proto=https" {
			t.Errorf("%s: %d %q", c.sni, resp.StatusCode, body)
		}
		tr.CloseIdleConnections()
	}
	if got := apptest.H2Settings(t, addr, "a.example.test")[http2.SettingMaxConcurrentStreams]; got != 77 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want http2.max_concurrent_streams (77)", got)
	}
	// A space in the query of :path (x/net's client and Framer pass it
	// on) reaches the origin encoded, as the cache key re-encodes the
	// query: one request-target, not "/uri?q= HTTP/1.1".
	if _, status, got := apptest.H2Get(t, addr, "a.example.test", "/uri", "q= HTTP/1.1"); status != 200 || got != "/uri?q=+HTTP%2F1.1" {
		t.Errorf("space in :path: %d %q, want the origin to see /uri?q=+HTTP%%2F1.1", status, got)
	}
}

// putCertd stores a self-signed certificate for name in certd's storage
// layout (certmagic's) under storage, as certd does after issuing.
func putCertd(t *testing.T, storage, name string) {
	t.Helper()
	cf, kf := writeCert(t, t.TempDir(), "c", name)
	crt, _ := os.ReadFile(cf)
	key, _ := os.ReadFile(kf)
	st := &certmagic.FileStorage{Path: storage}
	issuer := "acme-v02.api.letsencrypt.org-directory"
	ctx := context.Background()
	for k, v := range map[string][]byte{
		certmagic.StorageKeys.SitePrivateKey(issuer, name): key,
		certmagic.StorageKeys.SiteCert(issuer, name):       crt,
		certmagic.StorageKeys.SiteMeta(issuer, name):       []byte(`{}`),
	} {
		if err := st.Store(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
}

// handshakeCN completes a TLS handshake with addr for sni and returns the
// common name of the certificate served.
func handshakeCN(addr, sni string) (string, error) {
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// TestReloadCertdDirs: a reload that names another certd storage folder
// reads it before the new config serves and stops reading the one it no
// longer names; a folder named before and after keeps its Source.
func TestReloadCertdDirs(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	putCertd(t, a, "a.example.test")
	putCertd(t, b, "b.example.test")
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	render := func(addr, dir string) string { // a fixed address: the listener is kept across reloads
		return fmt.Sprintf(`listeners:
  - name: https
    address: %s
    tls: {certd_dir: %s}
cache: {max_size: 8MiB, max_object_size: 1MiB}
`, addr, dir) + oneOrigin(o, "")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", apptest.FreePort(t))
	te := startEdge(t, render(addr, a), nil)
	reload := func(dir string) {
		t.Helper()
		cfg := DefaultConfig()
		cfg.Admin.Listen = "127.0.0.1:0"
		if _, err := config.Decode("reload.yaml", []byte(render(addr, dir)), cfg); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := te.svc.Reload(context.Background(), cfg); err != nil {
			t.Fatalf("reload to certd_dir %s: %v", dir, err)
		}
	}
	if cn, err := handshakeCN(addr, "a.example.test"); err != nil || cn != "a.example.test" {
		t.Fatalf("before the reload: %q %v", cn, err)
	}
	if _, err := handshakeCN(addr, "b.example.test"); err == nil {
		t.Fatal("a certificate from a folder not yet named")
	}
	reload(b)
	if cn, err := handshakeCN(addr, "b.example.test"); err != nil || cn != "b.example.test" {
		t.Errorf("right after the reload naming the new folder: %q %v", cn, err)
	}
	if cn, err := handshakeCN(addr, "a.example.test"); err == nil {
		t.Errorf("the folder no longer named still serves %q", cn)
	}
	// The gauge of certificates served, by folder: the old one's series
	// goes with its reader.
	served := map[string]float64{}
	mfs, err := te.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "edgestack_edged_tls_certificates" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "dir" {
						served[l.GetValue()] = m.GetGauge().GetValue()
					}
				}
			}
		}
	}
	if _, ok := served[a]; ok || served[b] != 1 {
		t.Errorf("edgestack_edged_tls_certificates by dir: %v, want only %s: 1", served, b)
	}
	kept := te.svc.sources.Load().byDir[b]
	reload(b)
	if got := te.svc.sources.Load().byDir[b]; got != kept || got == nil {
		t.Errorf("a folder named before and after got a new Source")
	}
	putCertd(t, b, "late.example.test") // the kept Source still polls
	waitFor(t, func() bool {
		cn, err := handshakeCN(addr, "late.example.test")
		return err == nil && cn == "late.example.test"
	})
}

func TestTLSFromCertd(t *testing.T) {
	storage := t.TempDir()
	put := func(name string) { putCertd(t, storage, name) }
	put("c.example.test")
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	te := startEdge(t, fmt.Sprintf(`listeners:
  - address: 127.0.0.1:0
    tls: {certd_dir: %s}
cache: {max_size: 8MiB, max_object_size: 1MiB}
`, storage)+oneOrigin(o, ""), nil)
	addr := te.svc.Addrs()[0].String()
	dial := func(sni string) (string, error) { return handshakeCN(addr, sni) }
	if cn, err := dial("c.example.test"); err != nil || cn != "c.example.test" {
		t.Fatalf("certd certificate: %q %v", cn, err)
	}
	if _, err := dial("new.example.test"); err == nil {
		t.Fatal("handshake for an unknown name succeeded")
	}
	put("new.example.test") // certd issues a new one: picked up within a second
	waitFor(t, func() bool { cn, err := dial("new.example.test"); return err == nil && cn == "new.example.test" })
}

// TestTLSHTTP1FastPath: on a TLS listener, HTTP/1.1 connections get the
// fast hit path (which writes the stored header block, then Age and
// X-Cache; net/http would sort Age first), connections it hands over to
// net/http still count as HTTPS (no redirect under redirect-to-https,
// X-Forwarded-Proto https), and HTTP/2 ones are served as before.
func TestTLSHTTP1FastPath(t *testing.T) {
	dir := t.TempDir()
	cf, kf := writeCert(t, dir, "a", "a.example.test")
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "proto=%s", r.Header.Get("X-Forwarded-Proto"))
	})
	te := startEdge(t, httpsEdgeConfig(cf, kf, o.URL, "viewer_protocol: redirect-to-https"), nil)
	addr := te.svc.Addrs()[0].String()

	// get sends GETs for path on one HTTP/1.1 TLS connection and returns
	// each raw response head and body. Between requests it waits for the
	// store to apply its pending sets (they are asynchronous: a second
	// request sent at once could still miss; the test failed so once).
	get := func(n int, path string, fields ...string) (heads, bodies []string) {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "a.example.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		for range n {
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a.example.test\r\n%s\r\n", path, strings.Join(fields, ""))
			var head strings.Builder
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				head.WriteString(line)
				if line == "\r\n" {
					break
				}
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(head.String())), nil)
			if err != nil {
				t.Fatal(err)
			}
			body := make([]byte, resp.ContentLength)
			if _, err := io.ReadFull(br, body); err != nil {
				t.Fatal(err)
			}
			heads, bodies = append(heads, head.String()), append(bodies, string(body))
			te.wait()
		}
		return heads, bodies
	}
	xcache := func(head string) string {
		resp, _ := http.ReadResponse(bufio.NewReader(strings.NewReader(head)), nil)
		return resp.Status + " " + resp.Header.Get("X-Cache")
	}
	fastOrder := func(head string) bool {
		return strings.Index(head, "\r\nAge:") > strings.Index(head, "\r\nContent-Type:")
	}

	// A miss (served in place through the full handler), then a hit
	// from the hit path on the same connection.
	heads, bodies := get(2, "/c")
	for i, want := range []string{"200 OK Miss from edged", "200 OK Hit from edged"} {
		if got := xcache(heads[i]); got != want || bodies[i] != "proto=https" {
			t.Errorf("first connection, response %d: %s %q, want %s proto=https", i, got, bodies[i], want)
		}
		if fastOrder(heads[i]) != (i == 1) {
			t.Errorf("first connection, response %d: from the hit path %v, want %v:\n%s", i, fastOrder(heads[i]), i == 1, heads[i])
		}
	}
	// A request with a framing field is handed over to net/http, which
	// must still see it as HTTPS (no redirect, X-Forwarded-Proto https),
	// and keeps the connection.
	heads, bodies = get(2, "/d", "Content-Length: 0\r\n")
	for i, want := range []string{"200 OK Miss from edged", "200 OK Hit from edged"} {
		if got := xcache(heads[i]); got != want || bodies[i] != "proto=https" || fastOrder(heads[i]) {
			t.Errorf("handed-over connection, response %d: %s %q, want %s proto=https from net/http:\n%s", i, got, bodies[i], want, heads[i])
		}
	}
	// A fresh connection: hits from the fast path.
	heads, bodies = get(3, "/c")
	for i := range heads {
		if got := xcache(heads[i]); got != "200 OK Hit from edged" || bodies[i] != "proto=https" {
			t.Errorf("second connection, response %d: %s %q", i, got, bodies[i])
		}
		if !fastOrder(heads[i]) {
			t.Errorf("second connection, response %d not from the fast path:\n%s", i, heads[i])
		}
	}
	// HTTP/2 still works and sees the same object.
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "a.example.test", InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/c")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("X-Cache") != "Hit from edged" || string(body) != "proto=https" {
		t.Errorf("HTTP/2: %s %s %q", resp.Proto, resp.Header.Get("X-Cache"), body)
	}
	// A TLS-ALPN-01 validation handshake (ALPN acme-tls/1 only) completes
	// and is handed on like HTTP/2, not parsed as HTTP/1.1.
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "a.example.test", InsecureSkipVerify: true, NextProtos: []string{"acme-tls/1"}})
	if err != nil {
		t.Fatalf("acme-tls/1 handshake: %v", err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "acme-tls/1" {
		t.Errorf("negotiated %q, want acme-tls/1", p)
	}
	c.Close()
}

// TestHTTP2ShutdownFinishesInFlight: Shutdown sends HTTP/2 connections a
// GOAWAY and lets the request in flight (a miss at a slow origin, on a
// handler goroutine of internal/h2) finish before it returns.
func TestHTTP2ShutdownFinishesInFlight(t *testing.T) {
	dir := t.TempDir()
	c, k := writeCert(t, dir, "a", "a.example.test")
	started := make(chan struct{})
	var once sync.Once
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(started) })
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	})
	te := startEdge(t, httpsEdgeConfig(c, k, o.URL, ""), nil)
	addr := te.svc.Addrs()[0].String()
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "a.example.test", InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	type result struct {
		proto, body string
		code        int
		err         error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := cl.Get("https://" + addr + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- result{proto: resp.Proto, body: string(b), code: resp.StatusCode, err: err}
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the origin")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- te.svc.Shutdown(ctx) }()
	r := <-got
	if r.err != nil || r.code != 200 || r.body != "done" || r.proto != "HTTP/2.0" {
		t.Fatalf("in-flight request: %+v, want HTTP/2.0 200 done", r)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// httpsEdgeConfig is an edged config with one HTTPS listener (one
// certificate) and one distribution for every host in front of origin;
// behavior adds fields to its default behavior.
func httpsEdgeConfig(cert, key, origin, behavior string) string {
	if behavior != "" {
		behavior = ", " + behavior
	}
	return fmt.Sprintf(`listeners:
  - name: https
    address: 127.0.0.1:0
    tls:
      certificates: [{cert_file: %s, key_file: %s}]
cache: {max_size: 8MiB, max_object_size: 1MiB}
distributions:
  - name: d
    domains: ["*"]
    origins: [{name: o, url: "%s"}]
    default_behavior: {origin: o%s}
`, cert, key, origin, behavior)
}
