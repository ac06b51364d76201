package dnsserver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/edgestack/edgestack/dns/zone"
	"github.com/edgestack/edgestack/internal/app"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/edgestack/edgestack/internal/health"
	"github.com/miekg/dns"
)

// zoneFor returns the zone Validate loaded for zc if its file did not
// change since, else loads it.
func (c *Config) zoneFor(zc ZoneConfig) (*zone.Zone, fileStamp, error) {
	st := stampOf(zc.File)
	if lz, ok := c.loaded[zc]; ok && lz.stamp == st && st != (fileStamp{}) {
		delete(c.loaded, zc) // used once: the service owns it now
		return lz.z, st, nil
	}
	z, err := zone.LoadFile(zc.File, zc.Name)
	return z, st, err
}

// Config is dnsd's configuration.
type Config struct {
	app.Base `yaml:",inline"`
	// Listen is the DNS address served over UDP and TCP. Default ":53".
	Listen string `yaml:"listen"`
	// Zones are served from master files. Default: none.
	Zones []ZoneConfig `yaml:"zones"`
	// ZoneCheckInterval is how often zone files are checked for changes
	// (modification time and size); a changed file is reloaded, and if it
	// fails to load the last good version keeps serving. Default 2s; 0
	// turns checking off (SIGHUP still reloads).
	ZoneCheckInterval config.Duration `yaml:"zone_check_interval"`
	// Storage is the bbolt file holding API-managed zones, change batches
	// and health checks. Default "" (changes are kept in memory only and
	// lost on restart).
	Storage string `yaml:"storage"`
	// TCP tunes the TCP listener.
	TCP TCPConfig `yaml:"tcp"`
	// Views are private versions of zones answered to listed sources
	// (Route 53 private hosted zones). Default: none.
	Views []ViewConfig `yaml:"views"`
	// CIDRCollections are named CIDR collections for IP-based routing:
	// collection → location → prefixes. Default: none.
	CIDRCollections map[string]map[string][]string `yaml:"cidr_collections"`
	// HealthChecks are checks defined in the config, by ID (more can be
	// added through the API). Default: none.
	HealthChecks map[string]health.CheckConfig `yaml:"health_checks"`
	// Transfer controls AXFR/IXFR out and NOTIFY.
	Transfer TransferConfig `yaml:"transfer"`
	// RRL is response rate limiting over UDP; off by default.
	RRL RRLConfig `yaml:"rrl"`
	// Cache bounds the precomputed wire answers of the UDP fast path.
	// Default 200000 entries; 0 turns the fast path off.
	CacheEntries int `yaml:"cache_entries"`

	// loaded keeps the zones Validate parsed, so that starting or
	// reloading does not parse every file twice.
	loaded map[ZoneConfig]loadedZone
}

type loadedZone struct {
	z     *zone.Zone
	stamp fileStamp
}

// ZoneConfig is one zone served from a master file.
type ZoneConfig struct {
	// Name is the zone's origin. Required.
	Name string `yaml:"name"`
	// File is the RFC 1035 master file. Required.
	File string `yaml:"file"`
	// View names the view the zone belongs to; "" is the public view.
	View string `yaml:"view"`
}

// ViewConfig is a view: the sources that see its zones.
type ViewConfig struct {
	// Name identifies the view. Required.
	Name string `yaml:"name"`
	// Sources are the client prefixes that get this view. Required.
	Sources []string `yaml:"sources"`
}

// TCPConfig tunes DNS over TCP (RFC 7766).
type TCPConfig struct {
	// IdleTimeout closes a connection that sends nothing for this long.
	// Default 10s.
	IdleTimeout config.Duration `yaml:"idle_timeout"`
	// MaxConnections bounds concurrent TCP connections; more are closed at
	// once. Default 1000.
	MaxConnections int `yaml:"max_connections"`
}

// TransferConfig controls zone transfers out.
type TransferConfig struct {
	// Allow lists the prefixes allowed to transfer. Default: none (no
	// transfers).
	Allow []string `yaml:"allow"`
	// TSIGKeys are the keys transfers may be signed with; when any is set,
	// transfers must be signed. Default: none.
	TSIGKeys []TSIGKey `yaml:"tsig_keys"`
	// Notify lists secondaries (host:port) told of every change. Default:
	// none.
	Notify []string `yaml:"notify"`
}

// TSIGKey is a shared TSIG secret.
type TSIGKey struct {
	// Name of the key, e.g. "xfr.". Required.
	Name string `yaml:"name"`
	// Algorithm: hmac-sha256 (default), hmac-sha512, hmac-sha1.
	Algorithm string `yaml:"algorithm"`
	// Secret is base64. Required.
	Secret string `yaml:"secret" secret:"true"`
}

// DefaultConfig returns every default.
func DefaultConfig() *Config {
	return &Config{
		Base:              app.DefaultBase("127.0.0.1:9101"),
		Listen:            ":53",
		TCP:               TCPConfig{IdleTimeout: config.Duration(10e9), MaxConnections: 1000},
		CacheEntries:      200000,
		ZoneCheckInterval: config.Duration(2e9),
		RRL:               RRLConfig{Slip: 2, IPv4Prefix: 24, IPv6Prefix: 56},
	}
}

// Validate reports every problem, loading zone files to check them.
func (c *Config) Validate() error {
	errs := []error{c.Base.Validate()}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, config.Errorf("listen", "%v", err))
	}
	views := map[string]bool{"": true}
	for i, v := range c.Views {
		f := fmt.Sprintf("views[%d]", i)
		if v.Name == "" {
			errs = append(errs, config.Errorf(f+".name", "required"))
		} else if views[v.Name] {
			errs = append(errs, config.Errorf(f+".name", "duplicate view %q", v.Name))
		}
		views[v.Name] = true
		if len(v.Sources) == 0 {
			errs = append(errs, config.Errorf(f+".sources", "at least one prefix is required"))
		}
		for j, s := range v.Sources {
			if _, err := parsePrefix(s); err != nil {
				errs = append(errs, config.Errorf(fmt.Sprintf("%s.sources[%d]", f, j), "%v", err))
			}
		}
	}
	seen := map[string]bool{}
	for i, z := range c.Zones {
		f := fmt.Sprintf("zones[%d]", i)
		if z.Name == "" {
			errs = append(errs, config.Errorf(f+".name", "required"))
		} else if _, ok := dns.IsDomainName(z.Name); !ok {
			errs = append(errs, config.Errorf(f+".name", "%q is not a domain name", z.Name))
		}
		k := z.View + "|" + dns.CanonicalName(z.Name)
		if seen[k] {
			errs = append(errs, config.Errorf(f+".name", "zone %q is listed twice", z.Name))
		}
		seen[k] = true
		if !views[z.View] {
			errs = append(errs, config.Errorf(f+".view", "no view named %q", z.View))
		}
		if z.File == "" {
			errs = append(errs, config.Errorf(f+".file", "required"))
			continue
		}
		if z.Name != "" {
			st := stampOf(z.File)
			lz, err := zone.LoadFile(z.File, z.Name)
			if err != nil {
				errs = append(errs, config.Errorf(f+".file", "%v", err))
			} else {
				if c.loaded == nil {
					c.loaded = map[ZoneConfig]loadedZone{}
				}
				c.loaded[z] = loadedZone{lz, st}
			}
		}
	}
	for name, locs := range c.CIDRCollections {
		for loc, ps := range locs {
			for j, p := range ps {
				if _, err := parsePrefix(p); err != nil {
					errs = append(errs, config.Errorf(fmt.Sprintf("cidr_collections.%s.%s[%d]", name, loc, j), "%v", err))
				}
			}
		}
	}
	if len(c.HealthChecks) > 0 {
		if err := health.ValidateAll(c.HealthChecks); err != nil {
			errs = append(errs, config.Nest("health_checks", err))
		}
	}
	if c.TCP.IdleTimeout <= 0 {
		errs = append(errs, config.Errorf("tcp.idle_timeout", "must be positive"))
	}
	if c.TCP.MaxConnections <= 0 {
		errs = append(errs, config.Errorf("tcp.max_connections", "must be positive"))
	}
	if c.RRL.ResponsesPerSecond < 0 {
		errs = append(errs, config.Errorf("rrl.responses_per_second", "must not be negative"))
	}
	if c.RRL.Slip < 0 || c.RRL.Slip > 10 {
		errs = append(errs, config.Errorf("rrl.slip", "must be 0..10"))
	}
	if c.RRL.IPv4Prefix < 8 || c.RRL.IPv4Prefix > 32 {
		errs = append(errs, config.Errorf("rrl.ipv4_prefix", "must be 8..32"))
	}
	if c.RRL.IPv6Prefix < 16 || c.RRL.IPv6Prefix > 128 {
		errs = append(errs, config.Errorf("rrl.ipv6_prefix", "must be 16..128"))
	}
	if c.ZoneCheckInterval < 0 {
		errs = append(errs, config.Errorf("zone_check_interval", "must not be negative"))
	}
	if c.CacheEntries < 0 {
		errs = append(errs, config.Errorf("cache_entries", "must not be negative"))
	}
	for j, s := range c.Transfer.Allow {
		if _, err := parsePrefix(s); err != nil {
			errs = append(errs, config.Errorf(fmt.Sprintf("transfer.allow[%d]", j), "%v", err))
		}
	}
	for j, k := range c.Transfer.TSIGKeys {
		f := fmt.Sprintf("transfer.tsig_keys[%d]", j)
		if k.Name == "" {
			errs = append(errs, config.Errorf(f+".name", "required"))
		}
		if _, err := tsigAlgorithm(k.Algorithm); err != nil {
			errs = append(errs, config.Errorf(f+".algorithm", "%v", err))
		}
		if k.Secret == "" {
			errs = append(errs, config.Errorf(f+".secret", "required"))
		}
	}
	for j, a := range c.Transfer.Notify {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, config.Errorf(fmt.Sprintf("transfer.notify[%d]", j), "%v", err))
		}
	}
	if c.Storage != "" {
		if st, err := os.Stat(c.Storage); err == nil && st.IsDir() {
			errs = append(errs, config.Errorf("storage", "%s is a folder; name a file", c.Storage))
		}
	}
	return errors.Join(errs...)
}

func tsigAlgorithm(a string) (string, error) {
	switch strings.ToLower(a) {
	case "", "hmac-sha256":
		return dns.HmacSHA256, nil
	case "hmac-sha512":
		return dns.HmacSHA512, nil
	case "hmac-sha1":
		return dns.HmacSHA1, nil
	}
	return "", fmt.Errorf("unknown algorithm %q (want hmac-sha256, hmac-sha512 or hmac-sha1)", a)
}

// parsePrefix accepts a prefix or a bare address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a prefix or address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func parsePrefixes(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}
