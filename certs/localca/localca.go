// Package localca is certd's built-in certificate authority for offline use
// (like mkcert or Caddy's internal issuer): a stack with no ACME CA still
// gets working HTTPS, and the root can be exported so clients trust it.
//
// The root key and certificate live in certd's storage (keys
// "localca/root.key" and "localca/root.crt"), created on first use and kept
// forever; deleting them makes a new root that clients must trust again.
// The CA implements certmagic.Issuer, so certmagic stores and renews its
// leaves like any other.
package localca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// IssuerKey is the storage folder name of locally issued certificates.
const IssuerKey = "local"

// Storage keys of the root.
const (
	RootCertKey = "localca/root.crt"
	RootKeyKey  = "localca/root.key"
)

// CA is the local certificate authority.
type CA struct {
	storage  certmagic.Storage
	name     string
	lifetime time.Duration

	mu   sync.Mutex
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

// Options configure a CA.
type Options struct {
	// Name is the root's common name. Default: "edgestack local CA".
	Name string
	// Lifetime of issued leaf certificates. Default: 168h (7 days).
	Lifetime time.Duration
}

// New returns a CA keeping its root in storage. The root is loaded or
// created on first use (Root or Issue).
func New(storage certmagic.Storage, opts Options) *CA {
	if opts.Name == "" {
		opts.Name = "edgestack local CA"
	}
	if opts.Lifetime <= 0 {
		opts.Lifetime = 7 * 24 * time.Hour
	}
	return &CA{storage: storage, name: opts.Name, lifetime: opts.Lifetime}
}

// IssuerKey implements certmagic.Issuer.
func (ca *CA) IssuerKey() string { return IssuerKey }

// Root returns the root certificate in PEM, creating it if needed.
func (ca *CA) Root(ctx context.Context) ([]byte, error) {
	if err := ca.load(ctx); err != nil {
		return nil, err
	}
	return ca.pem, nil
}

// RootCert returns the parsed root certificate.
func (ca *CA) RootCert(ctx context.Context) (*x509.Certificate, error) {
	if err := ca.load(ctx); err != nil {
		return nil, err
	}
	return ca.cert, nil
}

func (ca *CA) load(ctx context.Context) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.cert != nil {
		return nil
	}
	// Serialise creation across certd instances sharing the storage.
	if err := ca.storage.Lock(ctx, "localca_root"); err != nil {
		return fmt.Errorf("localca: lock: %w", err)
	}
	defer func() { _ = ca.storage.Unlock(context.WithoutCancel(ctx), "localca_root") }()
	certPEM, err := ca.storage.Load(ctx, RootCertKey)
	if errors.Is(err, fs.ErrNotExist) {
		return ca.create(ctx)
	}
	if err != nil {
		return fmt.Errorf("localca: load root: %w", err)
	}
	keyPEM, err := ca.storage.Load(ctx, RootKeyKey)
	if err != nil {
		return fmt.Errorf("localca: load root key (the root certificate exists, its key does not): %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return errors.New("localca: root certificate or key in storage is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return fmt.Errorf("localca: parse root: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return fmt.Errorf("localca: parse root key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return errors.New("localca: root key cannot sign")
	}
	ca.cert, ca.key, ca.pem = cert, signer, certPEM
	return nil
}

func (ca *CA) create(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: ca.name, Organization: []string{"edgestack"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("localca: create root: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// Key first: a root certificate without its key is useless.
	if err := ca.storage.Store(ctx, RootKeyKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})); err != nil {
		return fmt.Errorf("localca: store root key: %w", err)
	}
	if err := ca.storage.Store(ctx, RootCertKey, certPEM); err != nil {
		return fmt.Errorf("localca: store root: %w", err)
	}
	ca.cert, ca.key, ca.pem = cert, key, certPEM
	return nil
}

// Issue implements certmagic.Issuer: it signs csr with the root.
func (ca *CA) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("localca: bad CSR signature: %w", err)
	}
	if err := ca.load(ctx); err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(ca.lifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tpl := &x509.Certificate{
		SerialNumber:   randSerial(),
		Subject:        pkix.Name{CommonName: firstName(csr)},
		DNSNames:       csr.DNSNames,
		IPAddresses:    csr.IPAddresses,
		NotBefore:      now.Add(-5 * time.Minute),
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		AuthorityKeyId: ca.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("localca: sign: %w", err)
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, ca.pem...)
	return &certmagic.IssuedCertificate{Certificate: chain, Metadata: map[string]string{"issuer": "localca"}}, nil
}

func firstName(csr *x509.CertificateRequest) string {
	if len(csr.DNSNames) > 0 {
		return csr.DNSNames[0]
	}
	if len(csr.IPAddresses) > 0 {
		return csr.IPAddresses[0].String()
	}
	return csr.Subject.CommonName
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}

func keyID(pub *ecdsa.PublicKey) []byte {
	b, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(b)
	return sum[:20]
}

var _ certmagic.Issuer = (*CA)(nil)
