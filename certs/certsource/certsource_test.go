package certsource

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
	"github.com/prometheus/client_golang/prometheus"
)

// testCA signs leaf certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "certsource test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

var serials atomic.Int64

// leaf returns PEM cert and key for names, valid from nb to na.
func (ca *testCA) leaf(t testing.TB, names []string, nb, na time.Time) (crt, key []byte, serial *big.Int) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial = big.NewInt(1000 + serials.Add(1))
	tpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    nb,
		NotAfter:     na,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), serial
}

// store writes a certificate the way certd (certmagic) does.
func store(t testing.TB, dir, issuer, name string, crt, key []byte) {
	t.Helper()
	st := &certmagic.FileStorage{Path: dir}
	ctx := context.Background()
	if err := st.Store(ctx, certmagic.StorageKeys.SitePrivateKey(issuer, name), key); err != nil {
		t.Fatal(err)
	}
	if err := st.Store(ctx, certmagic.StorageKeys.SiteCert(issuer, name), crt); err != nil {
		t.Fatal(err)
	}
	if err := st.Store(ctx, certmagic.StorageKeys.SiteMeta(issuer, name), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
}

func storeChallenge(t testing.TB, dir, issuer string, ch acme.Challenge) {
	t.Helper()
	b, _ := json.Marshal(ch)
	key := path.Join("acme", certmagic.StorageKeys.Safe(issuer), "challenge_tokens", certmagic.StorageKeys.Safe(ch.Identifier.Value)+".json")
	if err := (&certmagic.FileStorage{Path: dir}).Store(context.Background(), key, b); err != nil {
		t.Fatal(err)
	}
}

func TestLookup(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	now := time.Now()
	type stored struct {
		issuer, name string
		names        []string
		nb, na       time.Time
	}
	certs := []stored{
		{"acme.example-directory", "example.test", []string{"example.test", "www.example.test"}, now.Add(-time.Hour), now.Add(time.Hour)},
		{"acme.example-directory", "wildcard_.example.test", []string{"*.example.test"}, now.Add(-time.Hour), now.Add(time.Hour)},
		{"local", "old.test", []string{"old.test"}, now.Add(-3 * time.Hour), now.Add(-time.Hour)},             // expired
		{"acme.example-directory", "old.test", []string{"old.test"}, now.Add(-time.Hour), now.Add(time.Hour)}, // current, other issuer
		{"local", "late.test", []string{"late.test"}, now.Add(-time.Hour), now.Add(2 * time.Hour)},
		{"acme.example-directory", "late.test", []string{"late.test"}, now.Add(-time.Hour), now.Add(time.Hour)},
	}
	serialOf := map[string]*big.Int{}
	for _, c := range certs {
		crt, key, serial := ca.leaf(t, c.names, c.nb, c.na)
		store(t, dir, c.issuer, c.name, crt, key)
		serialOf[c.issuer+"/"+c.name] = serial
	}
	s, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Count(); got != len(certs) {
		t.Fatalf("Count = %d, want %d", got, len(certs))
	}
	type lookupCase struct {
		sni     string
		want    string // issuer/name of the expected certificate, "" for none
		wantErr string
	}
	for _, tc := range []lookupCase{
		{sni: "example.test", want: "acme.example-directory/example.test"},
		{sni: "WWW.Example.Test.", want: "acme.example-directory/example.test"},
		{sni: "www.example.test", want: "acme.example-directory/example.test"}, // exact beats wildcard
		{sni: "api.example.test", want: "acme.example-directory/wildcard_.example.test"},
		{sni: "a.b.example.test", wantErr: "no certificate"}, // wildcard covers one label
		{sni: "old.test", want: "acme.example-directory/old.test"},
		{sni: "late.test", want: "local/late.test"}, // expires last
		{sni: "other.test", wantErr: "no certificate"},
		{sni: "", wantErr: "no server name"},
	} {
		t.Run(tc.sni, func(t *testing.T) {
			c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: tc.sni})
			if tc.wantErr != "" {
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.wantErr)) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Leaf.SerialNumber.Cmp(serialOf[tc.want]) != 0 {
				t.Fatalf("got serial %v (%v), want %s", c.Leaf.SerialNumber, c.Leaf.DNSNames, tc.want)
			}
		})
	}
	s2, _ := New(Options{Dir: dir, DefaultName: "example.test"})
	if c, err := s2.GetCertificate(&tls.ClientHelloInfo{}); err != nil || c.Leaf.DNSNames[0] != "example.test" {
		t.Fatalf("default name: %v, %v", c, err)
	}
}

func TestEmptyAndMissingDir(t *testing.T) {
	s, err := New(Options{Dir: t.TempDir() + "/does-not-exist-yet"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Count() != 0 {
		t.Fatal("want no certificates")
	}
	if _, err := New(Options{}); err == nil {
		t.Fatal("want an error without Dir")
	}
}

// TestBadUpdateKeepsOld checks that a broken or half-written pair never
// replaces the certificate being served, and that a deletion stops it.
func TestBadUpdateKeepsOld(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	crt, key, serial := ca.leaf(t, []string{"a.test"}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	store(t, dir, "ca", "a.test", crt, key)
	reg := prometheus.NewRegistry()
	s, err := New(Options{Dir: dir, Registerer: reg, Namespace: "edgestack_test"})
	if err != nil {
		t.Fatal(err)
	}
	// New key, old certificate: a mismatched pair.
	_, key2, _ := ca.leaf(t, []string{"a.test"}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	st := &certmagic.FileStorage{Path: dir}
	if err := st.Store(context.Background(), certmagic.StorageKeys.SitePrivateKey("ca", "a.test"), key2); err != nil {
		t.Fatal(err)
	}
	s.Reload()
	c := s.Lookup("a.test")
	if c == nil || c.Leaf.SerialNumber.Cmp(serial) != 0 {
		t.Fatalf("mismatched pair replaced the working certificate")
	}
	if err := st.Store(context.Background(), certmagic.StorageKeys.SiteCert("ca", "a.test"), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	s.Reload()
	if c := s.Lookup("a.test"); c == nil || c.Leaf.SerialNumber.Cmp(serial) != 0 {
		t.Fatalf("garbage replaced the working certificate")
	}
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "edgestack_test_tls_certificate_loads_total" {
			found = true
		}
	}
	if !found {
		t.Fatal("loads metric not registered")
	}
	if err := st.Delete(context.Background(), certmagic.StorageKeys.CertsSitePrefix("ca", "a.test")); err != nil {
		t.Fatal(err)
	}
	s.Reload()
	if s.Lookup("a.test") != nil || s.Count() != 0 {
		t.Fatal("deleted certificate still served")
	}
}

// TestRenewalSwapUnderLoad serves TLS from a Source while a client keeps
// connecting, replaces the certificate the way certd renews it, and checks
// that the new one is served within a second, that no handshake fails and
// that a connection opened before the swap keeps working.
func TestRenewalSwapUnderLoad(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	crt, key, oldSerial := ca.leaf(t, []string{"www.swap.test"}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	store(t, dir, "ca", "www.swap.test", crt, key)
	s, err := New(Options{Dir: dir, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	defer s.Close()

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.TLS = s.TLSConfig()
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	clientCfg := &tls.Config{ServerName: "www.swap.test", RootCAs: ca.pool}
	// A long-lived connection opened before the swap.
	long, err := tls.Dial("tcp", addr, clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()

	var (
		mu         sync.Mutex
		failures   []error
		newSeen    time.Time
		handshakes int
	)
	var newSerial *big.Int
	var swapped atomic.Int64 // unix nanos of the swap
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; i < 5000 && time.Now().Before(deadline); i++ {
			select {
			case <-stopLoad:
				return
			default:
			}
			conn, err := tls.Dial("tcp", addr, clientCfg)
			mu.Lock()
			handshakes++
			if err != nil {
				failures = append(failures, err)
				mu.Unlock()
				continue
			}
			got := conn.ConnectionState().PeerCertificates[0].SerialNumber
			if ns := newSerial; ns != nil && got.Cmp(ns) == 0 && newSeen.IsZero() {
				newSeen = time.Now()
			}
			mu.Unlock()
			conn.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	crt2, key2, serial2 := ca.leaf(t, []string{"www.swap.test"}, time.Now().Add(-time.Minute), time.Now().Add(2*time.Hour))
	mu.Lock()
	newSerial = serial2
	mu.Unlock()
	swapped.Store(time.Now().UnixNano())
	store(t, dir, "ca", "www.swap.test", crt2, key2)

	deadline := time.Now().Add(3 * time.Second)
	for {
		mu.Lock()
		seen := newSeen
		mu.Unlock()
		if !seen.IsZero() {
			if d := seen.Sub(time.Unix(0, swapped.Load())); d > time.Second {
				t.Errorf("renewed certificate served after %v, want within 1s", d)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("renewed certificate never served")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(stopLoad)
	<-loadDone
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d of %d handshakes failed during the swap, first: %v", len(failures), handshakes, failures[0])
	}
	// The old connection still works and still holds the old certificate.
	if got := long.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(oldSerial) != 0 {
		t.Fatalf("long-lived connection changed certificate?")
	}
	if _, err := io.WriteString(long, "GET / HTTP/1.1\r\nHost: www.swap.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	_ = long.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := long.Read(buf)
	if err != nil || !bytes.Contains(buf[:n], []byte("200 OK")) {
		t.Fatalf("long-lived connection after swap: %q, %v", buf[:n], err)
	}
	t.Logf("%d handshakes during the test, none failed", handshakes)
}

func TestHTTPChallenge(t *testing.T) {
	dir := t.TempDir()
	storeChallenge(t, dir, "acme-v02.api.letsencrypt.org-directory", acme.Challenge{
		Type: "http-01", Token: "tok_en-1", KeyAuthorization: "tok_en-1.thumb",
		Identifier: acme.Identifier{Type: "dns", Value: "Chal.Example.test"},
	})
	s, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	type httpCase struct {
		name, method, host, path string
		handled                  bool
		body                     string
	}
	for _, tc := range []httpCase{
		{"answered", "GET", "chal.example.test", "/.well-known/acme-challenge/tok_en-1", true, "tok_en-1.thumb"},
		{"host with port", "GET", "chal.example.test:80", "/.well-known/acme-challenge/tok_en-1", true, "tok_en-1.thumb"},
		{"wrong token", "GET", "chal.example.test", "/.well-known/acme-challenge/other", false, ""},
		{"wrong host", "GET", "other.example.test", "/.well-known/acme-challenge/tok_en-1", false, ""},
		{"not a challenge", "GET", "chal.example.test", "/index.html", false, ""},
		{"post", "POST", "chal.example.test", "/.well-known/acme-challenge/tok_en-1", false, ""},
		{"traversal", "GET", "../../etc", "/.well-known/acme-challenge/x/../tok", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://x"+tc.path, nil)
			r.Host = tc.host
			w := httptest.NewRecorder()
			if got := s.HTTPChallenge(w, r); got != tc.handled {
				t.Fatalf("handled = %v, want %v", got, tc.handled)
			}
			if tc.handled && w.Body.String() != tc.body {
				t.Fatalf("body = %q, want %q", w.Body.String(), tc.body)
			}
		})
	}
}

var idPeAcmeIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

func TestTLSALPNChallenge(t *testing.T) {
	dir := t.TempDir()
	ch := acme.Challenge{
		Type: "tls-alpn-01", Token: "tok", KeyAuthorization: "tok.thumb",
		Identifier: acme.Identifier{Type: "dns", Value: "alpn.example.test"},
	}
	storeChallenge(t, dir, "127.0.0.1-14000-dir", ch)
	s, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		ServerName: "alpn.example.test", NextProtos: []string{"acme-tls/1"}, InsecureSkipVerify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st := conn.ConnectionState()
	if st.NegotiatedProtocol != "acme-tls/1" {
		t.Fatalf("ALPN = %q", st.NegotiatedProtocol)
	}
	leaf := st.PeerCertificates[0]
	want := sha256.Sum256([]byte(ch.KeyAuthorization))
	ok := false
	for _, ext := range leaf.Extensions {
		if ext.Id.Equal(idPeAcmeIdentifier) {
			var got []byte
			if _, err := asn1.Unmarshal(ext.Value, &got); err != nil {
				t.Fatal(err)
			}
			ok = ext.Critical && bytes.Equal(got, want[:])
		}
	}
	if !ok || leaf.DNSNames[0] != "alpn.example.test" {
		t.Fatalf("challenge certificate lacks the right acmeIdentifier extension: %v", leaf.DNSNames)
	}
	// Without a stored challenge the handshake is refused.
	_, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		ServerName: "none.example.test", NextProtos: []string{"acme-tls/1"}, InsecureSkipVerify: true,
	})
	if err == nil {
		t.Fatal("acme-tls/1 handshake without a challenge succeeded")
	}
}

func TestCloseWithoutStart(t *testing.T) {
	s, _ := New(Options{Dir: t.TempDir()})
	s.Close()
	s.Start(context.Background()) // no-op after Close
	s.Close()
	s2, _ := New(Options{Dir: t.TempDir(), Poll: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	s2.Start(ctx)
	cancel()
	s2.Close()
}

func FuzzHTTPChallenge(f *testing.F) {
	dir := f.TempDir()
	storeChallenge(f, dir, "ca", acme.Challenge{
		Type: "http-01", Token: "tok", KeyAuthorization: "tok.thumb",
		Identifier: acme.Identifier{Type: "dns", Value: "chal.test"},
	})
	s, err := New(Options{Dir: dir})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("chal.test", "/.well-known/acme-challenge/tok")
	f.Add("../../x", "/.well-known/acme-challenge/../../tok")
	f.Fuzz(func(t *testing.T, host, p string) {
		r := httptest.NewRequest("GET", "http://x/", nil)
		r.Host = host
		r.URL.Path = p
		w := httptest.NewRecorder()
		if s.HTTPChallenge(w, r) && w.Body.String() != "tok.thumb" {
			t.Fatalf("answered %q for host %q path %q", w.Body.String(), host, p)
		}
	})
}

func FuzzGetCertificate(f *testing.F) {
	dir := f.TempDir()
	ca := newTestCA(f)
	crt, key, _ := ca.leaf(f, []string{"*.fuzz.test", "fuzz.test"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	store(f, dir, "ca", "fuzz.test", crt, key)
	s, err := New(Options{Dir: dir})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("a.fuzz.test", false)
	f.Add("..", true)
	f.Fuzz(func(t *testing.T, sni string, alpn bool) {
		hello := &tls.ClientHelloInfo{ServerName: sni}
		if alpn {
			hello.SupportedProtos = []string{"acme-tls/1"}
		}
		c, err := s.GetCertificate(hello)
		if (c == nil) == (err == nil) {
			t.Fatalf("cert %v and err %v", c != nil, err)
		}
	})
}

func TestSharedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for i := 0; i < 2; i++ {
		if _, err := New(Options{Dir: t.TempDir(), Registerer: reg, Namespace: "edgestack_edged"}); err != nil {
			t.Fatalf("source %d: %v", i, err)
		}
	}
}
