package certd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgestack/edgestack/internal/config"
)

func TestValidName(t *testing.T) {
	type nameCase struct {
		name string
		ok   bool
	}
	for _, tc := range []nameCase{
		{"example.com", true},
		{"*.example.com", true},
		{"localhost", true},
		{"a-b.c", true},
		{"", false},
		{"Example.com", false},
		{"*.com", false},
		{"a.*.com", false},
		{"*a.example.com", false},
		{"-a.example.com", false},
		{"a_b.example.com", false},
		{"192.0.2.1", false},
		{strings.Repeat("a", 64) + ".com", false},
		{"example.com.", false},
	} {
		if err := ValidName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func FuzzValidName(f *testing.F) {
	f.Add("*.example.com")
	f.Add("a..b")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName(s) == nil && (strings.ContainsAny(s, " /\\_") || len(s) > 253) {
			t.Fatalf("accepted %q", s)
		}
	})
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	roots := filepath.Join(dir, "roots.pem")
	_ = os.WriteFile(roots, []byte("not pem"), 0o600)
	type valCase struct {
		name   string
		mutate func(c *Config)
		want   []string // field paths in the error, none for a valid config
	}
	for _, tc := range []valCase{
		{"defaults", func(c *Config) {}, nil},
		{"acme with eab and dns-01", func(c *Config) {
			c.Issuers = append(c.Issuers, IssuerConfig{Name: "le", Directory: "https://acme.test/dir", EAB: &EABConfig{KeyID: "k", MACKey: "c2VjcmV0"}, Profile: "shortlived"})
			c.DNS01.Token = "t"
			c.Certificates = []CertificateConfig{{Names: []string{"*.example.com", "example.com"}, Challenge: "dns-01", Issuers: []string{"le", "local"}}}
		}, nil},
		{"wildcard without dns-01", func(c *Config) {
			c.Issuers = append(c.Issuers, IssuerConfig{Name: "le", Directory: "https://acme.test/dir"})
			c.Certificates = []CertificateConfig{{Names: []string{"*.example.com"}, Issuers: []string{"le"}}}
		}, []string{"certificates[0].names[0]"}},
		{"wildcard with local CA only", func(c *Config) {
			c.Certificates = []CertificateConfig{{Names: []string{"*.example.com"}}}
		}, nil},
		{"dns-01 without token", func(c *Config) {
			c.Certificates = []CertificateConfig{{Names: []string{"a.example.com"}, Challenge: "dns-01"}}
		}, []string{"dns01.token"}},
		{"bad issuer", func(c *Config) {
			c.Issuers = append(c.Issuers, IssuerConfig{Name: "local", Directory: "ftp://x", CARoots: roots, EAB: &EABConfig{}})
		}, []string{"issuers[1].name", "issuers[1].directory", "issuers[1].ca_roots", "issuers[1].eab.key_id", "issuers[1].eab.mac_key"}},
		{"unknown references", func(c *Config) {
			c.DefaultIssuers = []string{"nope"}
			c.Certificates = []CertificateConfig{{Names: []string{"a.test", "a.test"}, Issuers: []string{"gone"}, KeyType: "ed25519", Challenge: "email"}}
		}, []string{"default_issuers[0]", "certificates[0].issuers[0]", "certificates[0].key_type", "certificates[0].challenge", "certificates[0].names[1]"}},
		{"renewal", func(c *Config) {
			c.Renewal.WindowRatio = 1
			c.Renewal.RetryMin = 0
		}, []string{"renewal.window_ratio", "renewal.retry_min"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			var fields []string
			for _, e := range config.Flatten(err) {
				fields = append(fields, e.Error())
			}
			all := strings.Join(fields, "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w+":") {
					t.Errorf("missing problem for %s in:\n%s", w, all)
				}
			}
		})
	}
}

// FuzzCheckRequest feeds API request bodies (POST /v1/certificates) to the
// validation: it must never panic, and what it accepts must be valid.
func FuzzCheckRequest(f *testing.F) {
	f.Add(`{"names":["a.example.com","*.example.com"],"challenge":"dns-01","issuers":["local"]}`)
	f.Add(`{"names":["bad name"],"key_type":"rsa1"}`)
	cfg := DefaultConfig()
	f.Fuzz(func(t *testing.T, body string) {
		var req RequestBody
		if json.Unmarshal([]byte(body), &req) != nil {
			return
		}
		specs, err := CheckRequest(cfg, req)
		if err != nil {
			return
		}
		for _, sp := range specs {
			if ValidName(sp.Name) != nil {
				t.Fatalf("accepted invalid name %q", sp.Name)
			}
		}
	})
}
