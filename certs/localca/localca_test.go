package localca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

func csrFor(t *testing.T, names ...string) *x509.CertificateRequest {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, k)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	return csr
}

func TestIssueAndPersistRoot(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	ca := New(st, Options{Lifetime: time.Hour})
	issued, err := ca.Issue(ctx, csrFor(t, "a.test", "*.a.test"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := ca.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(root) {
		t.Fatal("root is not PEM")
	}
	b, _ := pem.Decode(issued.Certificate)
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.test", "x.a.test"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("verify %s: %v", name, err)
		}
	}
	if d := time.Until(leaf.NotAfter); d > time.Hour || d < 50*time.Minute {
		t.Errorf("lifetime %v, want about 1h", d)
	}
	// A second CA on the same storage uses the same root.
	root2, err := New(st, Options{}).Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(root2) != string(root) {
		t.Fatal("root was not persisted")
	}
}

func TestBadCSR(t *testing.T) {
	csr := csrFor(t, "a.test")
	csr.Signature[0] ^= 0xff
	if _, err := New(&certmagic.FileStorage{Path: t.TempDir()}, Options{}).Issue(context.Background(), csr); err == nil {
		t.Fatal("bad CSR accepted")
	}
}
