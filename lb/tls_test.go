package lb

import (
	"bufio"
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
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
)

// writeCert writes a self-signed certificate for names into dir and
// returns the cert and key paths and the parsed certificate.
func writeCert(t *testing.T, dir, base string, names ...string) (string, string, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	cp, kp := filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	_ = os.WriteFile(cp, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	_ = os.WriteFile(kp, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	c, _ := x509.ParseCertificate(der)
	return cp, kp, c
}

// TestHTTPS runs with both HTTP/2 servers (internal/h2, the default, and
// x/net's) and both HTTP/1.1 engines.
func TestHTTPS(t *testing.T) {
	for _, server := range []string{"edgestack", "net/http"} {
		t.Run(strings.ReplaceAll(server, "/", "_"), func(t *testing.T) {
			engines(t, func(t *testing.T) { testHTTPS(t, server) })
		})
	}
}

func testHTTPS(t *testing.T, h2server string) {
	dir := t.TempDir()
	c1, k1, x1 := writeCert(t, dir, "one", "one.test")
	c2, k2, x2 := writeCert(t, dir, "two", "*.two.test")
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			body, _ := io.ReadAll(r.Body)
			_, _ = io.WriteString(w, "got "+strings.Join(r.TransferEncoding, ",")+" "+string(body))
			return
		}
		if r.URL.Path == "/uri" {
			_, _ = io.WriteString(w, r.RequestURI)
			return
		}
		_, _ = io.WriteString(w, r.Header.Get("X-Forwarded-Proto")+" "+r.Proto)
	})
	listen := "127.0.0.1:" + render(t, `{{port "secure"}}`, nil)
	h := startLB(t, httpsConfig(listen, "{server: "+h2server+"}", b.addr, [2]string{c1, k1}, [2]string{c2, k2}))
	addr := strings.TrimPrefix(h.url("secure"), "http://")
	pool := x509.NewCertPool()
	pool.AddCert(x1)
	pool.AddCert(x2)
	type tc struct {
		name, sni string
		h2        bool
		wantProto string
	}
	for _, x := range []tc{
		{"one over h2", "one.test", true, "HTTP/2.0"},
		{"wildcard over http/1.1", "www.two.test", false, "HTTP/1.1"},
	} {
		t.Run(x.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: x.sni}, ForceAttemptHTTP2: x.h2}
			if !x.h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Proto != x.wantProto || string(body) != "https HTTP/1.1" {
				t.Errorf("client proto %s, body %q; want %s and https to the target over HTTP/1.1", resp.Proto, body, x.wantProto)
			}
		})
	}
	t.Run("h2 uploads", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "one.test"}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		for _, x := range []struct {
			name string
			body io.Reader
			n    int64
			want string
		}{
			{"with length", strings.NewReader("hello"), 5, "got  hello"},
			{"without length", io.MultiReader(strings.NewReader("hel"), strings.NewReader("lo")), -1, "got chunked hello"},
		} {
			req, _ := http.NewRequest("POST", "https://"+addr+"/", x.body)
			req.ContentLength = x.n
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Proto != "HTTP/2.0" || string(got) != x.want {
				t.Errorf("%s: %s %q, want %q", x.name, resp.Proto, got, x.want)
			}
		}
	})
	t.Run("space in h2 :path", func(t *testing.T) {
		// x/net's client and Framer pass a space in the query on; the
		// target must get one request-target, not "/uri?q= HTTP/1.1".
		proto, status, got := apptest.H2Get(t, addr, "one.test", "/uri", "q= HTTP/1.1")
		if proto != "HTTP/2.0" || status != 200 || got != "/uri?q=%20HTTP/1.1" {
			t.Errorf("%s %d %q, want the target to see /uri?q=%%20HTTP/1.1", proto, status, got)
		}
	})
	t.Run("desync guard over TLS", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "one.test", NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: one.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 400 {
			t.Fatalf("smuggling over TLS: %v %v", err, resp)
		}
	})
	t.Run("certificate rotation on reload", func(t *testing.T) {
		c3, k3, x3 := writeCert(t, dir, "three", "one.test")
		cfg := httpsConfig(addr, "", b.addr, [2]string{c3, k3})
		if err := h.reload(cfg); err != nil {
			t.Fatal(err)
		}
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "one.test"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := c.ConnectionState().PeerCertificates[0]; !got.Equal(x3) {
			t.Errorf("old certificate served after reload")
		}
	})
}

// TestHTTPSFromCertd serves a certificate certd wrote into the shared
// storage, picked up without a reload.
func TestHTTPSFromCertd(t *testing.T) {
	store := t.TempDir()
	b := newBackend(t, "b", nil)
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
cert_store:
  dir: `+store+`
  poll: 50ms
target_groups:
  - name: web
    targets: [{address: "`+b.addr+`"}]
    health_check: {disabled: true}
listeners:
  - name: secure
    protocol: https
    listen: 127.0.0.1:0
    tls: {certd: true}
    default_action: {forward: {target_group: web}}
`)
	addr := strings.TrimPrefix(h.url("secure"), "http://")
	dir := filepath.Join(store, "certificates", "acme-test", "certd.test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cp, kp, x := writeCert(t, dir, "certd.test", "certd.test")
	_ = cp
	_ = kp
	pool := x509.NewCertPool()
	pool.AddCert(x)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "certd.test"}}}
	waitUntil(t, 5*time.Second, "certd certificate served", func() bool {
		resp, err := client.Get("https://" + addr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// TestACMEHTTP01 answers certd's HTTP-01 challenge from the shared
// storage before any rule, and forwards everything else.
func TestACMEHTTP01(t *testing.T) {
	store := t.TempDir()
	dir := filepath.Join(store, "acme", "acme-v02.api.letsencrypt.org-directory", "challenge_tokens")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ch := `{"type":"http-01","token":"tok-1","keyAuthorization":"tok-1.thumb","identifier":{"type":"dns","value":"chal.test"}}`
	if err := os.WriteFile(filepath.Join(dir, "chal.test.json"), []byte(ch), 0o644); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, "b", nil)
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
cert_store: {dir: `+store+`}
target_groups:
  - name: web
    targets: [{address: "`+b.addr+`"}]
    health_check: {disabled: true}
listeners:
  - name: public
    listen: 127.0.0.1:0
    acme_http01: true
    default_action: {redirect: {protocol: https}}
`)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	code, body, _ := get(t, client, h.url("public")+"/.well-known/acme-challenge/tok-1", "Host", "chal.test")
	if code != 200 || body != "tok-1.thumb" {
		t.Errorf("challenge: %d %q", code, body)
	}
	code, _, hdr := get(t, client, h.url("public")+"/page", "Host", "chal.test")
	if code != 301 || hdr.Get("Location") != "https://chal.test/page" {
		t.Errorf("other path: %d %q", code, hdr.Get("Location"))
	}
}

// TestHTTP2Trailers relays trailers between HTTP/2 clients and HTTP/1.1
// targets: a chunked response's trailer section reaches the client
// (announced or not) without the fields a trailer may not carry, and a
// client's request trailers reach the target in a chunked body.
func TestHTTP2Trailers(t *testing.T) {
	dir := t.TempDir()
	cp, kp, x := writeCert(t, dir, "h2", "h2.test")
	responses := map[string]string{
		"/declared": "Transfer-Encoding: chunked\r\nTrailer: X-Checksum, Content-Length\r\nTrailer: Grpc-Status\r\n\r\n" +
			"4\r\nbody\r\n0\r\nX-Checksum: abc\r\nGrpc-Status: 0\r\nContent-Length: 99\r\nTransfer-Encoding: gzip\r\n" +
			"Host: evil.test\r\nX-Forwarded-For: 6.6.6.6\r\nAuthorization: Basic eA==\r\nConnection: close\r\n\r\n",
		"/undeclared": "Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n",
		"/none":       "Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
	}
	// A raw HTTP/1.1 target, so it can send trailers net/http would not;
	// /upload answers with what it received.
	target := rawServer(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, err := io.ReadAll(req.Body) // fills req.Trailer
			if err != nil {
				return
			}
			if raw, ok := responses[req.URL.Path]; ok {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"+raw)
				continue
			}
			got := fmt.Sprintf("te=%s length=%d body=%s trailer=%v", strings.Join(req.TransferEncoding, ","), req.ContentLength, body, req.Trailer)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(got), got)
		}
	})
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: raw
    targets: [{address: "`+target+`"}]
    health_check: {disabled: true}
listeners:
  - name: secure
    protocol: https
    listen: 127.0.0.1:0
    tls:
      certificates: [{cert_file: `+cp+`, key_file: `+kp+`}]
    default_action: {forward: {target_group: raw}}
`)
	base := "https://" + strings.TrimPrefix(h.url("secure"), "http://")
	pool := x509.NewCertPool()
	pool.AddCert(x)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "h2.test"}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}

	type tc struct {
		name     string
		method   string
		path     string
		body     io.Reader
		length   int64
		trailer  http.Header // request trailers
		wantBody string
		want     http.Header // response trailers
	}
	for _, c := range []tc{
		{name: "announced trailers, forbidden ones dropped", method: "GET", path: "/declared", wantBody: "body",
			want: http.Header{"X-Checksum": {"abc"}, "Grpc-Status": {"0"}}},
		{name: "unannounced trailers", method: "GET", path: "/undeclared", wantBody: "body",
			want: http.Header{"Grpc-Status": {"0"}, "Grpc-Message": {"fine"}}},
		{name: "chunked without trailers", method: "GET", path: "/none", wantBody: "body", want: http.Header{}},
		{name: "request trailers, unknown length", method: "POST", path: "/upload", body: strings.NewReader("hello"), length: -1,
			trailer: http.Header{"X-Sum": {"s1"}}, wantBody: "te=chunked length=-1 body=hello trailer=map[X-Sum:[s1]]", want: http.Header{}},
		{name: "request trailers switch a known length to chunked", method: "POST", path: "/upload", body: strings.NewReader("hello"), length: 5,
			trailer: http.Header{"X-Sum": {"s2"}, "X-Other": {"o"}}, wantBody: "te=chunked length=-1 body=hello trailer=map[X-Other:[o] X-Sum:[s2]]", want: http.Header{}},
		{name: "known length without trailers stays", method: "POST", path: "/upload", body: strings.NewReader("hello"), length: 5,
			wantBody: "te= length=5 body=hello trailer=map[]", want: http.Header{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, base+c.path, c.body)
			req.ContentLength = c.length
			req.Trailer = c.trailer
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body) // trailers arrive after the body
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 || string(body) != c.wantBody {
				t.Fatalf("%s %d %q, want HTTP/2.0 200 %q", resp.Proto, resp.StatusCode, body, c.wantBody)
			}
			got := resp.Trailer
			if got == nil {
				got = http.Header{}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("trailers %v, want %v", got, c.want)
			}
		})
	}
}

// httpsConfig is an lbd config with one https listener, "secure" on
// listen, with the certificate and key files of certs, forwarding to
// target (group "web", no health check); http2 is the http2 section's
// value ("": the default).
func httpsConfig(listen, http2, target string, certs ...[2]string) string {
	var b strings.Builder
	b.WriteString("admin:\n  listen: 127.0.0.1:0\n")
	if http2 != "" {
		b.WriteString("http2: " + http2 + "\n")
	}
	b.WriteString("target_groups:\n  - name: web\n    targets: [{address: \"" + target + "\"}]\n    health_check: {disabled: true}\n")
	b.WriteString("listeners:\n  - name: secure\n    protocol: https\n    listen: " + listen + "\n    tls:\n      certificates:\n")
	for _, c := range certs {
		b.WriteString("        - {cert_file: " + c[0] + ", key_file: " + c[1] + "}\n")
	}
	b.WriteString("    default_action: {forward: {target_group: web}}\n")
	return b.String()
}
