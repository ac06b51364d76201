// Package certd is certd: it obtains, renews and hands out TLS certificates
// over ACME (and from a built-in local CA) for edgestack, storing them
// where edged and lbd read them (certs/certsource). See README.md.
package certd

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/edgestack/edgestack/certs/manager"
	"github.com/edgestack/edgestack/internal/app"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/mholt/acmez/v3/acme"
)

// Config is certd's configuration.
type Config struct {
	app.Base `yaml:",inline"`
	// Storage is where certificates, keys, ACME accounts and the local CA
	// live (certmagic folder layout), shared read-only with edged and lbd.
	Storage StorageConfig `yaml:"storage"`
	// Email is the default ACME account contact for issuers without one.
	// Default: none (accounts without contact).
	Email string `yaml:"email"`
	// Issuers are the certificate authorities, tried in the order a
	// certificate lists them. Default: one local CA issuer named "local".
	Issuers []IssuerConfig `yaml:"issuers"`
	// DefaultIssuers are used by certificates that name none. Default:
	// every issuer, in the order listed.
	DefaultIssuers []string `yaml:"default_issuers"`
	// DNS01 is how dns-01 challenges are solved: dnsd's change API.
	DNS01 DNS01Config `yaml:"dns01"`
	// Challenges sets where certd itself answers http-01 and tls-alpn-01
	// challenges (edged and lbd answer them too, from the storage).
	Challenges ChallengesConfig `yaml:"challenges"`
	// Renewal tunes renewals and retries.
	Renewal RenewalConfig `yaml:"renewal"`
	// Certificates to manage. Each name is its own certificate. Default: none.
	Certificates []CertificateConfig `yaml:"certificates"`
}

// StorageConfig is the storage folder.
type StorageConfig struct {
	// Dir is the storage folder. Default: /var/lib/edgestack/certs.
	Dir string `yaml:"dir"`
}

// IssuerConfig is one certificate authority.
type IssuerConfig struct {
	// Name identifies the issuer in certificates' issuers lists. Required.
	Name string `yaml:"name"`
	// Type is "acme" or "local_ca". Default: acme.
	Type string `yaml:"type"`
	// Directory is the ACME directory URL (acme). Required for acme.
	Directory string `yaml:"directory"`
	// CARoots is a PEM bundle of roots trusted for the ACME server's own
	// HTTPS (for private CAs). Default: system roots.
	CARoots string `yaml:"ca_roots"`
	// Email is the ACME account contact. Default: the top-level email.
	Email string `yaml:"email"`
	// EAB is the External Account Binding some CAs require. Default: none.
	EAB *EABConfig `yaml:"eab"`
	// Profile is the ACME profile to request (e.g. "shortlived").
	// Default: the CA's default.
	Profile string `yaml:"profile"`
	// Lifetime of certificates from a local_ca issuer. Default: 168h.
	Lifetime config.Duration `yaml:"lifetime"`
	// CAName is the local CA root's common name. Default: "edgestack local CA".
	CAName string `yaml:"ca_name"`
	// RootURL is where an ACME CA publishes its root certificate in PEM
	// (pebble: https://pebble:15000/roots/0), fetched with ca_roots trust
	// and handed out at GET /v1/issuers/{name}/root, so clients of a
	// private CA can trust it. Default: none (public CAs are in every
	// trust store already).
	RootURL string `yaml:"root_url"`
}

// EABConfig is an External Account Binding.
type EABConfig struct {
	// KeyID is the key identifier given by the CA. Required.
	KeyID string `yaml:"key_id"`
	// MACKey is the base64url HMAC key given by the CA. Set it or MACKeyFile.
	MACKey string `yaml:"mac_key" secret:"true"`
	// MACKeyFile is a file holding MACKey. Default: none.
	MACKeyFile string `yaml:"mac_key_file"`
}

// DNS01Config points certd at dnsd.
type DNS01Config struct {
	// DNSDURL is dnsd's admin API base URL. Default: http://127.0.0.1:9101.
	DNSDURL string `yaml:"dnsd_url"`
	// Token is dnsd's admin token. Set it or TokenFile for dns-01.
	Token string `yaml:"token" secret:"true"`
	// TokenFile is a file holding the token. Default: none.
	TokenFile string `yaml:"token_file"`
	// DNSServer is dnsd's DNS address, used to find zones (SOA) and to
	// check that dnsd serves the TXT records before the CA looks.
	// Default: none (system resolvers, no propagation check).
	DNSServer string `yaml:"dns_server"`
	// Timeout bounds the propagation check. Default: 10s.
	Timeout config.Duration `yaml:"timeout"`
}

// ChallengesConfig is where certd answers challenges itself.
type ChallengesConfig struct {
	// HTTPListen answers http-01 (e.g. ":80" when certd is reachable).
	// Default: 127.0.0.1:0 (only edged/lbd answer).
	HTTPListen string `yaml:"http_listen"`
	// TLSListen answers tls-alpn-01. Default: 127.0.0.1:0.
	TLSListen string `yaml:"tls_listen"`
}

// RenewalConfig tunes renewals.
type RenewalConfig struct {
	// CheckInterval is how often certificates are checked for renewal
	// and ARI refreshed. Default: 10m.
	CheckInterval config.Duration `yaml:"check_interval"`
	// WindowRatio is the share of the lifetime left when a certificate is
	// renewed if the CA gives no ARI window. Default: 0.33.
	WindowRatio float64 `yaml:"window_ratio"`
	// DisableARI ignores the CA's ACME Renewal Information. Default: false.
	DisableARI bool `yaml:"disable_ari"`
	// RetryMin is the first wait after a failed order; it doubles up to
	// RetryMax. Defaults: 30s and 6h.
	RetryMin config.Duration `yaml:"retry_min"`
	RetryMax config.Duration `yaml:"retry_max"`
	// ObtainTimeout bounds one order. Default: 90s.
	ObtainTimeout config.Duration `yaml:"obtain_timeout"`
}

// CertificateConfig is a certificate request.
type CertificateConfig struct {
	// Names to certify, one certificate each; "*.example.com" wildcards
	// need dns-01 with ACME issuers. Required.
	Names []string `yaml:"names"`
	// KeyType is p256, p384 or rsa2048. Default: p256.
	KeyType string `yaml:"key_type"`
	// Issuers names issuers in order of preference (fallback). Default:
	// default_issuers.
	Issuers []string `yaml:"issuers"`
	// Challenge is http-01, tls-alpn-01 or dns-01. Default: http-01.
	Challenge string `yaml:"challenge"`
}

// DefaultConfig returns certd's defaults.
func DefaultConfig() *Config {
	return &Config{
		Base:    app.DefaultBase("127.0.0.1:9102"),
		Storage: StorageConfig{Dir: "/var/lib/edgestack/certs"},
		Issuers: []IssuerConfig{{Name: "local", Type: "local_ca"}},
		DNS01:   DNS01Config{DNSDURL: "http://127.0.0.1:9101", Timeout: config.Duration(10 * time.Second)},
		Challenges: ChallengesConfig{
			HTTPListen: "127.0.0.1:0",
			TLSListen:  "127.0.0.1:0",
		},
		Renewal: RenewalConfig{
			CheckInterval: config.Duration(10 * time.Minute),
			WindowRatio:   0.33,
			RetryMin:      config.Duration(30 * time.Second),
			RetryMax:      config.Duration(6 * time.Hour),
			ObtainTimeout: config.Duration(90 * time.Second),
		},
	}
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidName checks a certificate name: a DNS name of letters, digits and
// hyphens, optionally starting with one "*." wildcard label.
func ValidName(name string) error {
	n := strings.ToLower(name)
	if n == "" {
		return errors.New("empty name")
	}
	if n != name {
		return fmt.Errorf("name %q must be lower case", name)
	}
	if len(n) > 253 {
		return fmt.Errorf("name %q is longer than 253 characters", name)
	}
	if net.ParseIP(n) != nil {
		return fmt.Errorf("name %q is an IP address; only DNS names are supported", name)
	}
	rest, wild := strings.CutPrefix(n, "*.")
	labels := strings.Split(rest, ".")
	if wild && len(labels) < 2 {
		return fmt.Errorf("wildcard %q must cover a domain with at least two labels", name)
	}
	for _, l := range labels {
		if !labelRE.MatchString(l) {
			if strings.Contains(l, "*") {
				return fmt.Errorf("name %q: a wildcard is only allowed as the whole first label", name)
			}
			return fmt.Errorf("name %q: label %q is not a valid DNS label", name, l)
		}
	}
	return nil
}

var keyTypes = []string{"", "p256", "p384", "rsa2048"}
var challenges = []string{"", manager.ChallengeHTTP01, manager.ChallengeTLSALPN01, manager.ChallengeDNS01}

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Base.Validate()}
	if c.Storage.Dir == "" {
		errs = append(errs, config.Errorf("storage.dir", "is required"))
	}
	names := map[string]IssuerConfig{}
	for i, is := range c.Issuers {
		errs = append(errs, config.Nest(fmt.Sprintf("issuers[%d]", i), is.validate()))
		if _, dup := names[is.Name]; dup && is.Name != "" {
			errs = append(errs, config.Errorf(fmt.Sprintf("issuers[%d].name", i), "duplicate issuer %q", is.Name))
		}
		names[is.Name] = is
	}
	for i, n := range c.DefaultIssuers {
		if _, ok := names[n]; !ok {
			errs = append(errs, config.Errorf(fmt.Sprintf("default_issuers[%d]", i), "unknown issuer %q", n))
		}
	}
	if c.Challenges.HTTPListen != "" {
		if _, _, err := net.SplitHostPort(c.Challenges.HTTPListen); err != nil {
			errs = append(errs, config.Errorf("challenges.http_listen", "invalid address: %v", err))
		}
	}
	if c.Challenges.TLSListen != "" {
		if _, _, err := net.SplitHostPort(c.Challenges.TLSListen); err != nil {
			errs = append(errs, config.Errorf("challenges.tls_listen", "invalid address: %v", err))
		}
	}
	r := c.Renewal
	if r.CheckInterval <= 0 {
		errs = append(errs, config.Errorf("renewal.check_interval", "must be positive"))
	}
	if r.WindowRatio <= 0 || r.WindowRatio >= 1 {
		errs = append(errs, config.Errorf("renewal.window_ratio", "must be between 0 and 1 (exclusive), got %v", r.WindowRatio))
	}
	if r.RetryMin <= 0 || r.RetryMax < r.RetryMin {
		errs = append(errs, config.Errorf("renewal.retry_min", "must be positive and at most retry_max"))
	}
	if r.ObtainTimeout <= 0 {
		errs = append(errs, config.Errorf("renewal.obtain_timeout", "must be positive"))
	}
	usesDNS := false
	seen := map[string]bool{}
	for i, cc := range c.Certificates {
		p := fmt.Sprintf("certificates[%d]", i)
		if len(cc.Names) == 0 {
			errs = append(errs, config.Errorf(p+".names", "at least one name is required"))
		}
		if !slices.Contains(keyTypes, cc.KeyType) {
			errs = append(errs, config.Errorf(p+".key_type", "unknown key type %q (want p256, p384 or rsa2048)", cc.KeyType))
		}
		if !slices.Contains(challenges, cc.Challenge) {
			errs = append(errs, config.Errorf(p+".challenge", "unknown challenge %q (want http-01, tls-alpn-01 or dns-01)", cc.Challenge))
		}
		if cc.Challenge == manager.ChallengeDNS01 {
			usesDNS = true
		}
		issuers := cc.Issuers
		for j, n := range cc.Issuers {
			if _, ok := names[n]; !ok {
				errs = append(errs, config.Errorf(fmt.Sprintf("%s.issuers[%d]", p, j), "unknown issuer %q", n))
			}
		}
		if len(issuers) == 0 {
			issuers = c.effectiveDefaultIssuers()
		}
		acmeUsed := slices.ContainsFunc(issuers, func(n string) bool { return names[n].Type != "local_ca" })
		for j, n := range cc.Names {
			np := fmt.Sprintf("%s.names[%d]", p, j)
			if err := ValidName(n); err != nil {
				errs = append(errs, config.Errorf(np, "%v", err))
				continue
			}
			if seen[n] {
				errs = append(errs, config.Errorf(np, "name %q is listed twice", n))
			}
			seen[n] = true
			if strings.HasPrefix(n, "*.") && acmeUsed && cc.Challenge != manager.ChallengeDNS01 {
				errs = append(errs, config.Errorf(np, "wildcard %q needs challenge: dns-01 with ACME issuers", n))
			}
		}
	}
	if usesDNS {
		if _, err := url.Parse(c.DNS01.DNSDURL); err != nil || c.DNS01.DNSDURL == "" {
			errs = append(errs, config.Errorf("dns01.dnsd_url", "a valid URL is required for dns-01"))
		}
		if c.DNS01.Token == "" && c.DNS01.TokenFile == "" {
			errs = append(errs, config.Errorf("dns01.token", "set token or token_file for dns-01"))
		}
	}
	if c.DNS01.Token != "" && c.DNS01.TokenFile != "" {
		errs = append(errs, config.Errorf("dns01.token_file", "set either token or token_file, not both"))
	}
	if c.DNS01.TokenFile != "" {
		if _, err := readSecret(c.DNS01.TokenFile); err != nil {
			errs = append(errs, config.Errorf("dns01.token_file", "%v", err))
		}
	}
	if c.DNS01.DNSServer != "" {
		if _, _, err := net.SplitHostPort(c.DNS01.DNSServer); err != nil {
			errs = append(errs, config.Errorf("dns01.dns_server", "invalid address (want host:port): %v", err))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) effectiveDefaultIssuers() []string {
	if len(c.DefaultIssuers) > 0 {
		return c.DefaultIssuers
	}
	var out []string
	for _, is := range c.Issuers {
		out = append(out, is.Name)
	}
	return out
}

func (is IssuerConfig) validate() error {
	var errs []error
	if is.Name == "" {
		errs = append(errs, config.Errorf("name", "is required"))
	}
	switch is.Type {
	case "", "acme":
		u, err := url.Parse(is.Directory)
		if is.Directory == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, config.Errorf("directory", "an ACME directory URL (https://...) is required"))
		}
		if is.CARoots != "" {
			if _, err := loadRoots(is.CARoots); err != nil {
				errs = append(errs, config.Errorf("ca_roots", "%v", err))
			}
		}
		if is.EAB != nil {
			if is.EAB.KeyID == "" {
				errs = append(errs, config.Errorf("eab.key_id", "is required"))
			}
			if (is.EAB.MACKey == "") == (is.EAB.MACKeyFile == "") {
				errs = append(errs, config.Errorf("eab.mac_key", "set exactly one of mac_key and mac_key_file"))
			} else if _, err := is.EAB.macKey(); err != nil {
				errs = append(errs, config.Errorf("eab.mac_key", "%v", err))
			}
		}
		if is.Lifetime != 0 {
			errs = append(errs, config.Errorf("lifetime", "only applies to local_ca issuers"))
		}
		if is.RootURL != "" {
			if u, err := url.Parse(is.RootURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				errs = append(errs, config.Errorf("root_url", "want an http(s) URL, got %q", is.RootURL))
			}
		}
	case "local_ca":
		if is.Directory != "" || is.EAB != nil || is.Profile != "" || is.CARoots != "" || is.RootURL != "" {
			errs = append(errs, config.Errorf("type", "local_ca takes no directory, ca_roots, eab, profile or root_url"))
		}
		if is.Lifetime < 0 {
			errs = append(errs, config.Errorf("lifetime", "must not be negative"))
		}
	default:
		errs = append(errs, config.Errorf("type", "unknown issuer type %q (want acme or local_ca)", is.Type))
	}
	return errors.Join(errs...)
}

func (e *EABConfig) macKey() (string, error) {
	k := e.MACKey
	if e.MACKeyFile != "" {
		var err error
		if k, err = readSecret(e.MACKeyFile); err != nil {
			return "", err
		}
	}
	if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k, "=")); err != nil {
		return "", fmt.Errorf("MAC key is not base64url: %v", err)
	}
	return k, nil
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

func loadRoots(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// settings turns a valid config into the manager's settings and specs.
func (c *Config) settings() (manager.Settings, []manager.Spec, error) {
	s := manager.Settings{
		DefaultIssuers:     c.effectiveDefaultIssuers(),
		RenewalWindowRatio: c.Renewal.WindowRatio,
		DisableARI:         c.Renewal.DisableARI,
		ObtainTimeout:      c.Renewal.ObtainTimeout.D(),
		RetryMin:           c.Renewal.RetryMin.D(),
		RetryMax:           c.Renewal.RetryMax.D(),
		DNS01: manager.DNS01{
			URL: c.DNS01.DNSDURL, Token: c.DNS01.Token, DNSServer: c.DNS01.DNSServer, Timeout: c.DNS01.Timeout.D(),
		},
	}
	if c.DNS01.TokenFile != "" {
		tok, err := readSecret(c.DNS01.TokenFile)
		if err != nil {
			return s, nil, fmt.Errorf("dns01.token_file: %w", err)
		}
		s.DNS01.Token = tok
	}
	for _, is := range c.Issuers {
		mi := manager.Issuer{Name: is.Name, Type: is.Type, Directory: is.Directory, Email: is.Email, Profile: is.Profile,
			LocalCAName: is.CAName, LocalCALifetime: is.Lifetime.D()}
		if mi.Type == "" {
			mi.Type = "acme"
		}
		if mi.Email == "" {
			mi.Email = c.Email
		}
		if is.CARoots != "" {
			pool, err := loadRoots(is.CARoots)
			if err != nil {
				return s, nil, fmt.Errorf("issuer %s: ca_roots: %w", is.Name, err)
			}
			mi.Roots = pool
		}
		if is.EAB != nil {
			k, err := is.EAB.macKey()
			if err != nil {
				return s, nil, fmt.Errorf("issuer %s: eab: %w", is.Name, err)
			}
			mi.EAB = &acme.EAB{KeyID: is.EAB.KeyID, MACKey: k}
		}
		s.Issuers = append(s.Issuers, mi)
	}
	var specs []manager.Spec
	for _, cc := range c.Certificates {
		for _, n := range cc.Names {
			specs = append(specs, manager.Spec{Name: n, KeyType: orDefault(cc.KeyType, "p256"), Issuers: cc.Issuers, Challenge: orDefault(cc.Challenge, manager.ChallengeHTTP01), Source: manager.SourceConfig})
		}
	}
	return s, specs, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
