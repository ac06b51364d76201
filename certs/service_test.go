package certd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/certs/manager"
	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/edgestack/edgestack/internal/ctl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"
)

// apiEnv runs certd's service with a real admin server and drives it with
// edgectl's certs commands.
type apiEnv struct {
	t    *testing.T
	base string
	reg  *prometheus.Registry
	svc  *Service
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Storage.Dir = t.TempDir()
	cfg.Admin.Token = "tok"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Issuers = []IssuerConfig{{Name: "local", Type: "local_ca", Lifetime: 0}}
	cfg.Certificates = []CertificateConfig{{Names: []string{"cfg.local.test"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d := apptest.StartInProcess(t, "certd", cfg, newService, apptest.Options{Fail: func(error) {}})
	return &apiEnv{t: t, base: d.AdminURL, reg: d.Registry, svc: d.Service}
}

// ctl runs "edgectl certs args..." and returns exit code and output.
func (e *apiEnv) ctl(token string, args ...string) (int, string) {
	var out, errOut bytes.Buffer
	env := map[string]string{"EDGECTL_CERTD": e.base, "EDGECTL_TOKEN": token}
	code := ctl.Main(context.Background(), []ctl.Group{ctl.Certs()}, append([]string{"certs"}, args...), env, &out, &errOut)
	return code, out.String() + errOut.String()
}

func (e *apiEnv) record(name string) map[string]any {
	e.t.Helper()
	code, out := e.ctl("", "show", name)
	if code != 0 {
		return nil
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		e.t.Fatalf("show %s: %v\n%s", name, err, out)
	}
	return r
}

func (e *apiEnv) waitIssued(name string, notSerial string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := e.record(name)
		if r != nil && r["state"] == "issued" && r["serial"] != notSerial {
			return r
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not issued: %v", name, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAPIWithEdgectl(t *testing.T) {
	e := newAPIEnv(t)
	e.waitIssued("cfg.local.test", "")

	type ctlCase struct {
		name     string
		token    string
		args     []string
		wantCode int
		wantOut  string
	}
	for _, tc := range []ctlCase{
		{"request", "tok", []string{"request", "-issuers", "local", "api.local.test", "*.local.test"}, 0, "api.local.test"},
		{"request without token", "", []string{"request", "x.local.test"}, 1, "401"},
		{"request bad name", "tok", []string{"request", "bad_name.test"}, 1, "names[0]"},
		{"request unknown issuer", "tok", []string{"request", "-issuers", "nope", "y.local.test"}, 1, "unknown issuer"},
		{"request twice", "tok", []string{"request", "api.local.test"}, 1, "409"},
		{"wildcard needs dns-01 with acme", "tok", []string{"request", "-challenge", "bogus", "z.local.test"}, 1, "unknown challenge"},
		{"delete config entry", "tok", []string{"delete", "cfg.local.test"}, 1, "config file"},
		{"show unknown", "", []string{"show", "nothing.test"}, 1, "404"},
		{"renew unknown", "tok", []string{"renew", "nothing.test"}, 1, "404"},
		{"usage", "tok", []string{"show"}, 2, "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := e.ctl(tc.token, tc.args...)
			if code != tc.wantCode || !strings.Contains(out, tc.wantOut) {
				t.Fatalf("edgectl certs %v: code %d, output %q; want %d and %q", tc.args, code, out, tc.wantCode, tc.wantOut)
			}
		})
	}
	first := e.waitIssued("api.local.test", "")
	e.waitIssued("*.local.test", "")
	code, out := e.ctl("", "list")
	if code != 0 || !strings.Contains(out, "api.local.test") || !strings.Contains(out, "*.local.test") || !strings.Contains(out, "issued") {
		t.Fatalf("list: %d\n%s", code, out)
	}
	if code, out := e.ctl("tok", "renew", "api.local.test"); code != 0 {
		t.Fatalf("renew: %s", out)
	}
	e.waitIssued("api.local.test", first["serial"].(string))

	code, out = e.ctl("", "root")
	if b, _ := pem.Decode([]byte(out)); code != 0 || b == nil {
		t.Fatalf("root: %d %q", code, out)
	}

	certFile, keyFile := selfSigned(t, "imported.test")
	if code, out := e.ctl("tok", "import", "-cert", certFile, "-key", keyFile); code != 0 || !strings.Contains(out, "imported.test") {
		t.Fatalf("import: %d %s", code, out)
	}
	if r := e.record("imported.test"); r["source"] != "import" || r["state"] != "issued" {
		t.Fatalf("imported record %v", r)
	}
	if code, out := e.ctl("tok", "import", "-cert", certFile, "-key", certFile); code != 1 || !strings.Contains(out, "valid pair") {
		t.Fatalf("import of a bad pair: %d %s", code, out)
	}
	for _, n := range []string{"api.local.test", "imported.test"} {
		if code, out := e.ctl("tok", "delete", n); code != 0 {
			t.Fatalf("delete %s: %s", n, out)
		}
		if code, _ := e.ctl("", "show", n); code != 1 {
			t.Fatalf("%s still shown after delete", n)
		}
	}

	// Metrics: lint clean, and the per-certificate series exist.
	problems, err := promlint.NewWithMetricFamilies(gather(t, e.reg)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	names := metricNames(t, e.reg)
	for _, n := range []string{manager.MetricNotAfter, manager.MetricState, manager.MetricFailing, manager.MetricAttempts} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
}

func gather(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func metricNames(t *testing.T, reg *prometheus.Registry) map[string]bool {
	out := map[string]bool{}
	for _, mf := range gather(t, reg) {
		out[mf.GetName()] = true
	}
	return out
}

func selfSigned(t *testing.T, name string) (string, string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	_ = os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600)
	return cf, kf
}

// TestAlertRules parses deploy/alerts/certs.rules.yml and checks every
// edgestack_certd_* metric it uses is one certd exports.
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile("../deploy/alerts/certs.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, n := range []string{manager.MetricNotAfter, manager.MetricState, manager.MetricFailing, manager.MetricAttempts, manager.MetricFailures} {
		known[n] = true
	}
	// The names must also be what the registry really exports.
	e := newAPIEnv(t)
	e.waitIssued("cfg.local.test", "")
	exported := metricNames(t, e.reg)
	metricRE := regexp.MustCompile(`edgestack_certd_[a-z_]+`)
	alerts := map[string]bool{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v lacks alert, expr, severity or summary", r)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for: %v", r.Alert, err)
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("%s: unbalanced parentheses in %q", r.Alert, r.Expr)
			}
			for _, m := range metricRE.FindAllString(r.Expr, -1) {
				if !known[m] {
					t.Errorf("%s uses unknown metric %s", r.Alert, m)
				}
				if m != manager.MetricFailures && !exported[m] {
					t.Errorf("%s uses %s, which certd's registry does not export", r.Alert, m)
				}
			}
		}
	}
	for _, want := range []string{"CertificateExpiresSoon", "CertificateRenewalFailing"} {
		if !alerts[want] {
			t.Errorf("alert %s missing", want)
		}
	}
}
