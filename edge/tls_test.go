package edge

import (
	"context"

	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"github.com/caddyserver/certmagic"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
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
	dir := t.TempDir()
	c1, k1 := writeCert(t, dir, "a", "a.example.test")
	c2, k2 := writeCert(t, dir, "b", "*.b.example.test")
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
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
distributions:
  - name: d
    domains: ["*"]
    origins: [{name: o, url: "%s"}]
    default_behavior: {origin: o, viewer_protocol: https-only, default_ttl: 0s}
`, c1, k1, c2, k2, o.URL), nil)
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
}

func TestTLSFromCertd(t *testing.T) {
	storage := t.TempDir()
	put := func(name string) {
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
	put("c.example.test")
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	te := startEdge(t, fmt.Sprintf(`listeners:
  - address: 127.0.0.1:0
    tls: {certd_dir: %s}
cache: {max_size: 8MiB, max_object_size: 1MiB}
distributions:
  - name: d
    domains: ["*"]
    origins: [{name: o, url: "%s"}]
    default_behavior: {origin: o}
`, storage, o.URL), nil)
	addr := te.svc.Addrs()[0].String()
	dial := func(sni string) (string, error) {
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
	}
	if cn, err := dial("c.example.test"); err != nil || cn != "c.example.test" {
		t.Fatalf("certd certificate: %q %v", cn, err)
	}
	if _, err := dial("new.example.test"); err == nil {
		t.Fatal("handshake for an unknown name succeeded")
	}
	put("new.example.test") // certd issues a new one: picked up within a second
	waitFor(t, func() bool { cn, err := dial("new.example.test"); return err == nil && cn == "new.example.test" })
}
