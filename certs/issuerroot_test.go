package certd

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIssuerRoot(t *testing.T) {
	e := newAPIEnv(t)
	// A private CA publishing its root over HTTPS, like pebble's /roots/0.
	rootPEM := []byte("")
	ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/roots/0":
			_, _ = w.Write(rootPEM)
		case "/garbage":
			_, _ = w.Write([]byte("not a certificate"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer ca.Close()
	rootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw})
	trust := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(trust, rootPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := *e.svc.cfg.Load()
	cfg.Issuers = append(append([]IssuerConfig(nil), cfg.Issuers...),
		IssuerConfig{Name: "private", Directory: ca.URL + "/dir", CARoots: trust, RootURL: ca.URL + "/roots/0"},
		IssuerConfig{Name: "untrusted", Directory: ca.URL + "/dir", RootURL: ca.URL + "/roots/0"},
		IssuerConfig{Name: "garbage", Directory: ca.URL + "/dir", CARoots: trust, RootURL: ca.URL + "/garbage"},
		IssuerConfig{Name: "public", Directory: "https://acme.example/dir"},
	)
	e.svc.cfg.Store(&cfg)

	type tc struct {
		issuer   string
		status   int
		wantBody string
	}
	for _, c := range []tc{
		{"local", 200, "BEGIN CERTIFICATE"},
		{"private", 200, string(rootPEM)},
		{"untrusted", 502, "certificate"},
		{"garbage", 502, "did not answer with a PEM certificate"},
		{"public", 404, "has no root_url"},
		{"nope", 404, `no issuer named \"nope\"`},
	} {
		t.Run(c.issuer, func(t *testing.T) {
			resp, err := http.Get(e.base + "/v1/issuers/" + c.issuer + "/root")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || !strings.Contains(string(b), c.wantBody) {
				t.Errorf("%d %s, want %d containing %q", resp.StatusCode, b, c.status, c.wantBody)
			}
		})
	}
}

func TestIssuerRootURLValidation(t *testing.T) {
	for _, c := range []struct {
		is   IssuerConfig
		want string
	}{
		{IssuerConfig{Name: "a", Directory: "https://ca/dir", RootURL: "ftp://x/root"}, "root_url"},
		{IssuerConfig{Name: "b", Type: "local_ca", RootURL: "https://x/root"}, "root_url"},
	} {
		err := c.is.validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.is, err, c.want)
		}
	}
}
