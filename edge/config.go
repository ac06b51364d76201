// Package edge is edged, edgestack's caching CDN edge: listeners (HTTP,
// HTTPS with SNI certificates), distributions chosen by Host, ordered cache
// behaviors chosen by path, the cache (edge/cache) with request coalescing,
// origins (edge/origin), invalidation, compression, access control, access
// logs and metrics. See README.md for the configuration.
package edge

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgestack/edgestack/edge/origin"
	"github.com/edgestack/edgestack/internal/accesslog"
	"github.com/edgestack/edgestack/internal/app"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/edgestack/edgestack/internal/h2"
)

// Config is edged's configuration.
type Config struct {
	app.Base `yaml:",inline"`
	// Listeners are the viewer-facing sockets. Default: one plain HTTP
	// listener on :8080.
	Listeners []Listener `yaml:"listeners"`
	// Cache sizes the in-memory cache.
	Cache CacheConfig `yaml:"cache"`
	// Limits bound viewer requests.
	Limits Limits `yaml:"limits"`
	// Timeouts of viewer connections.
	Timeouts Timeouts `yaml:"timeouts"`
	// HTTP2 picks and sizes the HTTP/2 server of the TLS listeners
	// (internal/h2): server edgestack (default) or net/http.
	HTTP2 h2.Config `yaml:"http2"`
	// AccessLog writes one line per viewer request. Default: off.
	AccessLog AccessLog `yaml:"access_log"`
	// GeoSets name CIDR sets for geo restriction ("eu": [...]). Default: none.
	GeoSets map[string][]string `yaml:"geo_sets"`
	// SigningKeys name HMAC-SHA256 secrets for signed URLs. Default: none.
	SigningKeys map[string]string `yaml:"signing_keys" secret:"true"`
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed when
	// finding the viewer's address. Default: none (the peer address).
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Distributions are the sites this edge serves.
	Distributions []Distribution `yaml:"distributions"`
}

// Listener is a viewer-facing socket.
type Listener struct {
	// Name identifies the listener in logs. Default: its address.
	Name string `yaml:"name"`
	// Address to listen on, e.g. ":443".
	Address string `yaml:"address"`
	// TLS makes this an HTTPS listener (HTTP/2 and HTTP/1.1). Default: off.
	TLS *TLSConfig `yaml:"tls"`
}

// TLSConfig selects certificates: static pairs, and/or certd's storage.
type TLSConfig struct {
	// Certificates are static cert/key PEM file pairs, chosen by SNI.
	Certificates []CertPair `yaml:"certificates"`
	// CertdDir is certd's storage folder (read-only), polled for new and
	// renewed certificates. Default: none.
	CertdDir string `yaml:"certd_dir"`
}

// CertPair is a certificate chain and key in PEM files.
type CertPair struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// CacheConfig sizes the cache.
type CacheConfig struct {
	// MaxSize is the memory budget for cached objects, counted in real
	// bytes (body + headers + ~512 B overhead each). Default: 256MiB.
	MaxSize Size `yaml:"max_size"`
	// MaxObjectSize: larger responses are streamed through uncached; for
	// a while after (a small marker in the cache) GET/HEAD requests for
	// them pass to the origin with their Range and conditionals (see
	// README, "Ranges"). Default: 16MiB.
	MaxObjectSize Size `yaml:"max_object_size"`
	// SendfileMinSize: cached bodies at least this large also get a copy
	// in an anonymous memory file so plain-HTTP hits are sent with
	// sendfile(2) (less CPU per request, twice the memory for those
	// objects, both counted in max_size). 0 turns it off. Linux only.
	// Default: 64KiB, or 160KiB where the kernel runs the Meltdown
	// mitigation (PTI), whose costlier system calls move the point where
	// sendfile (a second call per response) starts to win.
	SendfileMinSize Size `yaml:"sendfile_min_size"`
	// SendfileMaxSize: bodies larger than this are written from memory
	// instead. 0 means no upper bound. Default: auto, which is 0 when
	// sendfile_dir is set (from a disk file's large folios sendfile won
	// on most machines measured: 1 MiB hits 147-152 against 224-230 µs of
	// CPU on an Intel VM where a memfd lost) and otherwise measured once
	// when edged starts: 0 where sendfile from a memfd sends a 1 MiB body
	// over loopback for at least 10% less CPU than a write from memory
	// (the majority of three measurements), else 768KiB. On one VM (Linux
	// 6.18) memfd sendfile cost 25-35% more CPU than a write from 1 MiB
	// on; on another with the same kernel it cost 20-30% less, up to
	// 2 MiB; on a third, 10-25% more. With auto, hits of 512 KiB and more
	// that have a copy go out by whichever of sendfile and a write from
	// memory has cost the process less CPU on its own recent traffic
	// (sendchoice.go): sendfile from an ext4 copy lost to a write by a
	// fifth at 1 MiB on one Intel VM while winning by two fifths on an
	// AMD one.
	// A size given here sends every copied body with sendfile.
	SendfileMaxSize Size `yaml:"sendfile_max_size"`
	// SendfileDir is where those copies live. Empty (default): anonymous
	// memory files (memfd). A directory on a disk filesystem (ext4, xfs):
	// unnamed temporary files there (O_TMPFILE), as nginx keeps its
	// proxy_cache on disk. The kernel holds such files' pages in large
	// folios, which cost less CPU per sendfile than memfd's 4 KiB pages
	// (1 MiB hits: 12-20% less on Linux 6.18, where shmem huge pages are
	// off by default); their pages are also written to that disk in the
	// background and may be evicted and read back under memory pressure.
	// Checked at start: the directory must accept O_TMPFILE. Linux only.
	SendfileDir string `yaml:"sendfile_dir"`
}

// Limits bound viewer requests.
type Limits struct {
	// MaxHeaderBytes caps the request head. Default: 32KiB.
	MaxHeaderBytes Size `yaml:"max_header_bytes"`
	// MaxURLLength caps the request target. Default: 8192.
	MaxURLLength int `yaml:"max_url_length"`
	// MaxBodySize caps request bodies forwarded to origins. Default: 10MiB.
	MaxBodySize Size `yaml:"max_body_size"`
}

// Timeouts of viewer connections.
type Timeouts struct {
	// ReadHeader bounds reading a request head. Default: 10s.
	ReadHeader config.Duration `yaml:"read_header"`
	// Read bounds reading a whole request. Default: 60s.
	Read config.Duration `yaml:"read"`
	// Write bounds writing a response. Default: 0 (none: large objects
	// take their time; idle viewers are cut by the origin read).
	Write config.Duration `yaml:"write"`
	// Idle closes keep-alive connections idle this long. Default: 120s.
	Idle config.Duration `yaml:"idle"`
	// WebSocketIdle closes a relayed WebSocket when no byte has moved
	// either way for this long (Varnish's pipe_timeout, HAProxy's timeout
	// tunnel). 0 keeps tunnels open until a side closes. Default: 10m.
	WebSocketIdle config.Duration `yaml:"websocket_idle"`
}

// AccessLog configures the access log.
type AccessLog struct {
	// Path is a file, or "stdout"/"stderr". Default: none (off).
	Path string `yaml:"path"`
	// Format is json, common or combined. Default: json.
	Format string `yaml:"format"`
}

// Distribution is one site: its domain names, origins and behaviors.
type Distribution struct {
	// Name identifies the distribution (invalidations, metrics, logs).
	Name string `yaml:"name"`
	// Domains are the alternate domain names it answers (Host/SNI);
	// "*.example.test" matches one label, "*" anything. Required.
	Domains []string `yaml:"domains"`
	// Origins are where content comes from.
	Origins []OriginConfig `yaml:"origins"`
	// OriginGroups fail over between origins.
	OriginGroups []OriginGroup `yaml:"origin_groups"`
	// Behaviors are tried in order by path pattern; the first match wins.
	Behaviors []Behavior `yaml:"behaviors"`
	// DefaultBehavior applies when no behavior matches (path is ignored).
	DefaultBehavior Behavior `yaml:"default_behavior"`
	// Access restricts viewers by address. Default: everyone.
	Access AccessConfig `yaml:"access"`
}

// OriginConfig is an HTTP origin (url) or a bucket origin (bucket).
type OriginConfig struct {
	Name string `yaml:"name"`
	// URL of an HTTP(S) origin: http://host:port[/prefix] or host:port.
	URL string `yaml:"url"`
	// HostHeader sent to an HTTP origin: empty sends the URL's host,
	// "viewer" forwards the viewer's Host.
	HostHeader string `yaml:"host_header"`
	// ConnectTimeout. Default: 5s.
	ConnectTimeout config.Duration `yaml:"connect_timeout"`
	// ResponseTimeout bounds the wait for response headers. Default: 30s.
	ResponseTimeout config.Duration `yaml:"response_timeout"`
	// ReadTimeout bounds the whole body read of a cache fill. Default: 60s.
	ReadTimeout config.Duration `yaml:"read_timeout"`
	// MaxConns caps connections to the origin. Default: 0 (no cap).
	MaxConns int `yaml:"max_conns"`
	// InsecureSkipVerify skips TLS verification. Default: false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// Bucket makes this a bucket origin (a local folder).
	Bucket *BucketConfig `yaml:"bucket"`
}

// BucketConfig is a local folder served as a static site.
type BucketConfig struct {
	// Dir is the site's folder. Required.
	Dir string `yaml:"dir"`
	// IndexDocument for folder requests. Default: index.html.
	IndexDocument string `yaml:"index_document"`
	// ErrorDocument served with 404 for missing objects. Default: none.
	ErrorDocument string `yaml:"error_document"`
	// CacheControl sent with every object. Default: none.
	CacheControl string `yaml:"cache_control"`
}

// OriginGroup fails over between origins.
type OriginGroup struct {
	Name string `yaml:"name"`
	// Members are origin names, tried in order.
	Members []string `yaml:"members"`
	// FailoverStatus codes make the group try the next member.
	// Default: [500, 502, 503, 504].
	FailoverStatus []int `yaml:"failover_status"`
}

// Behavior is a cache behavior.
type Behavior struct {
	// Path pattern ("/api/*", "*.jpg"); not used on the default behavior.
	Path string `yaml:"path"`
	// Origin is an origin or origin group name. Required.
	Origin string `yaml:"origin"`
	// AllowedMethods. Default: [GET, HEAD]. Only GET and HEAD are cached;
	// others pass to the origin and invalidate the URL on success.
	AllowedMethods []string `yaml:"allowed_methods"`
	// MinTTL is the least time an object stays fresh. Default: 0s.
	MinTTL config.Duration `yaml:"min_ttl"`
	// DefaultTTL applies when the origin sends no freshness information
	// (to cacheable-by-default statuses only; 4xx/5xx at most 10s).
	// Default: 24h.
	DefaultTTL *config.Duration `yaml:"default_ttl"`
	// MaxTTL caps the origin's freshness. Default: 8760h (365 days).
	MaxTTL *config.Duration `yaml:"max_ttl"`
	// StaleWhileRevalidate when the origin does not set it. Default: 0s.
	StaleWhileRevalidate config.Duration `yaml:"stale_while_revalidate"`
	// Grace serves stale objects when the origin is down or erring
	// (unless the response forbids stale). Default: 0s.
	Grace config.Duration `yaml:"grace"`
	// Keep holds expired objects with validators for revalidation.
	// Default: 10m.
	Keep *config.Duration `yaml:"keep"`
	// CacheKey: what besides host and path distinguishes objects. Only
	// key parts are forwarded to the origin.
	CacheKey CacheKey `yaml:"cache_key"`
	// Compress with brotli/gzip by Accept-Encoding. Default: false.
	Compress bool `yaml:"compress"`
	// ViewerProtocol: allow, redirect-to-https or https-only. Default: allow.
	ViewerProtocol string `yaml:"viewer_protocol"`
	// ErrorResponses replace origin error responses with pages.
	ErrorResponses []ErrorResponse `yaml:"error_responses"`
	// ResponseHeaders are set on every response. Default: none.
	ResponseHeaders map[string]string `yaml:"response_headers"`
	// SignedURLs requires a valid signature (see README). Default: false.
	SignedURLs bool `yaml:"signed_urls"`
}

// CacheKey lists what goes into the cache key (and to the origin).
type CacheKey struct {
	// QueryStrings: none, all, or allow (with QueryStringNames). Default: none.
	QueryStrings string `yaml:"query_strings"`
	// QueryStringNames for QueryStrings: allow.
	QueryStringNames []string `yaml:"query_string_names"`
	// Headers in the key (and forwarded). Default: none.
	Headers []string `yaml:"headers"`
	// Cookies in the key (and forwarded). Default: none.
	Cookies []string `yaml:"cookies"`
}

// ErrorResponse is a custom error response.
type ErrorResponse struct {
	// Status is the origin status to replace (400-599).
	Status int `yaml:"status"`
	// Page is a path fetched through this distribution. Default: none
	// (origin body kept).
	Page string `yaml:"page"`
	// ResponseCode sent to the viewer. Default: Status.
	ResponseCode int `yaml:"response_code"`
	// TTL caches the error for this long. Default: 10s.
	TTL *config.Duration `yaml:"ttl"`
}

// AccessConfig restricts viewers.
type AccessConfig struct {
	// Allow: if set, only these CIDRs (or geo set names prefixed "geo:")
	// may connect. Deny is checked first.
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
}

// DefaultConfig returns every default.
func DefaultConfig() *Config {
	return &Config{
		Base:      app.DefaultBase("127.0.0.1:9103"),
		Listeners: []Listener{{Name: "http", Address: ":8080"}},
		Cache:     CacheConfig{MaxSize: 256 << 20, MaxObjectSize: 16 << 20, SendfileMinSize: defaultSendfileMin(), SendfileMaxSize: SizeAuto},
		Limits:    Limits{MaxHeaderBytes: 32 << 10, MaxURLLength: 8192, MaxBodySize: 10 << 20},
		Timeouts: Timeouts{
			ReadHeader: config.Duration(10 * time.Second), Read: config.Duration(60 * time.Second),
			Idle: config.Duration(120 * time.Second), WebSocketIdle: config.Duration(10 * time.Minute),
		},
		AccessLog: AccessLog{Format: "json"},
		HTTP2:     h2.Config{Server: h2.ServerEdgestack, MaxConcurrentStreams: 250},
	}
}

var viewerProtocols = []string{"", "allow", "redirect-to-https", "https-only"}

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Base.Validate(), c.HTTP2.Validate("http2")}
	if len(c.Listeners) == 0 {
		errs = append(errs, config.Errorf("listeners", "at least one listener is needed"))
	}
	seenAddr := map[string]bool{}
	for i, l := range c.Listeners {
		f := fmt.Sprintf("listeners[%d]", i)
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			errs = append(errs, config.Errorf(f+".address", "invalid address %q: %v", l.Address, err))
		} else if seenAddr[l.Address] {
			errs = append(errs, config.Errorf(f+".address", "address %q used twice", l.Address))
		}
		seenAddr[l.Address] = true
		if l.TLS != nil {
			if len(l.TLS.Certificates) == 0 && l.TLS.CertdDir == "" {
				errs = append(errs, config.Errorf(f+".tls", "needs certificates or certd_dir"))
			}
			for j, p := range l.TLS.Certificates {
				if _, err := loadPair(p); err != nil {
					errs = append(errs, config.Errorf(fmt.Sprintf("%s.tls.certificates[%d]", f, j), "%v", err))
				}
			}
			if l.TLS.CertdDir != "" {
				if fi, err := os.Stat(l.TLS.CertdDir); err != nil || !fi.IsDir() {
					errs = append(errs, config.Errorf(f+".tls.certd_dir", "not a folder: %s", l.TLS.CertdDir))
				}
			}
		}
	}
	if c.Cache.MaxSize < 1<<20 {
		errs = append(errs, config.Errorf("cache.max_size", "must be at least 1MiB"))
	}
	if c.Cache.MaxObjectSize <= 0 || c.Cache.MaxObjectSize > c.Cache.MaxSize/2 {
		errs = append(errs, config.Errorf("cache.max_object_size", "must be positive and at most half of cache.max_size (%s)", c.Cache.MaxSize))
	}
	if m := c.Cache.SendfileMaxSize; m != 0 && m != SizeAuto && m < c.Cache.SendfileMinSize {
		errs = append(errs, config.Errorf("cache.sendfile_max_size", "must be auto, 0 (no bound) or at least sendfile_min_size"))
	}
	if d := c.Cache.SendfileDir; d != "" {
		if !filepath.IsAbs(d) {
			errs = append(errs, config.Errorf("cache.sendfile_dir", "must be an absolute path, not %q", d))
		} else if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			errs = append(errs, config.Errorf("cache.sendfile_dir", "%q is not a directory", d))
		}
	}
	if c.Cache.SendfileMinSize != 0 && c.Cache.SendfileMinSize < 16<<10 {
		errs = append(errs, config.Errorf("cache.sendfile_min_size", "must be 0 (off) or at least 16KiB"))
	}
	if c.Limits.MaxHeaderBytes < 1024 {
		errs = append(errs, config.Errorf("limits.max_header_bytes", "must be at least 1KiB"))
	}
	if c.Limits.MaxURLLength < 64 {
		errs = append(errs, config.Errorf("limits.max_url_length", "must be at least 64"))
	}
	if c.Limits.MaxBodySize < 0 {
		errs = append(errs, config.Errorf("limits.max_body_size", "must not be negative"))
	}
	for name, d := range map[string]config.Duration{"read_header": c.Timeouts.ReadHeader, "read": c.Timeouts.Read, "write": c.Timeouts.Write, "idle": c.Timeouts.Idle, "websocket_idle": c.Timeouts.WebSocketIdle} {
		if d < 0 {
			errs = append(errs, config.Errorf("timeouts."+name, "must not be negative"))
		}
	}
	if c.AccessLog.Path != "" {
		if _, err := accesslog.New(nil, c.AccessLog.Format); err != nil {
			errs = append(errs, config.Errorf("access_log.format", "%v", err))
		}
	}
	for name, cidrs := range c.GeoSets {
		for j, s := range cidrs {
			if _, err := parsePrefix(s); err != nil {
				errs = append(errs, config.Errorf(fmt.Sprintf("geo_sets.%s[%d]", name, j), "%v", err))
			}
		}
	}
	for name, k := range c.SigningKeys {
		if len(k) < 16 {
			errs = append(errs, config.Errorf("signing_keys."+name, "secret must be at least 16 bytes"))
		}
	}
	for j, s := range c.TrustedProxies {
		if _, err := parsePrefix(s); err != nil {
			errs = append(errs, config.Errorf(fmt.Sprintf("trusted_proxies[%d]", j), "%v", err))
		}
	}
	if len(c.Distributions) == 0 {
		errs = append(errs, config.Errorf("distributions", "at least one distribution is needed"))
	}
	names := map[string]bool{}
	domains := map[string]string{}
	for i := range c.Distributions {
		d := &c.Distributions[i]
		f := fmt.Sprintf("distributions[%d]", i)
		if d.Name == "" {
			errs = append(errs, config.Errorf(f+".name", "required"))
		} else if names[d.Name] {
			errs = append(errs, config.Errorf(f+".name", "distribution %q defined twice", d.Name))
		}
		names[d.Name] = true
		for j, dom := range d.Domains {
			dom = strings.ToLower(dom)
			if other, ok := domains[dom]; ok {
				errs = append(errs, config.Errorf(fmt.Sprintf("%s.domains[%d]", f, j), "domain %q already belongs to distribution %q", dom, other))
			}
			domains[dom] = d.Name
			if dom == "" || strings.ContainsAny(dom, " /:") || (strings.Contains(dom, "*") && dom != "*" && !strings.HasPrefix(dom, "*.")) {
				errs = append(errs, config.Errorf(fmt.Sprintf("%s.domains[%d]", f, j), "invalid domain %q", dom))
			}
		}
		if len(d.Domains) == 0 {
			errs = append(errs, config.Errorf(f+".domains", "at least one domain is needed (\"*\" for any)"))
		}
		errs = append(errs, config.Nest(f, d.validate(c)))
	}
	return errors.Join(errs...)
}

func (d *Distribution) validate(c *Config) error {
	var errs []error
	targets := map[string]bool{}
	for i, o := range d.Origins {
		f := fmt.Sprintf("origins[%d]", i)
		if o.Name == "" {
			errs = append(errs, config.Errorf(f+".name", "required"))
		} else if targets[o.Name] {
			errs = append(errs, config.Errorf(f+".name", "origin %q defined twice", o.Name))
		}
		targets[o.Name] = true
		switch {
		case o.Bucket != nil && o.URL != "":
			errs = append(errs, config.Errorf(f, "set url or bucket, not both"))
		case o.Bucket != nil:
			if fi, err := os.Stat(o.Bucket.Dir); err != nil || !fi.IsDir() {
				errs = append(errs, config.Errorf(f+".bucket.dir", "not a folder: %q", o.Bucket.Dir))
			}
		case o.URL != "":
			if _, err := origin.ParseURL(o.URL); err != nil {
				errs = append(errs, config.Errorf(f+".url", "%v", err))
			}
		default:
			errs = append(errs, config.Errorf(f, "needs url or bucket"))
		}
		for n, v := range map[string]config.Duration{"connect_timeout": o.ConnectTimeout, "response_timeout": o.ResponseTimeout, "read_timeout": o.ReadTimeout} {
			if v < 0 {
				errs = append(errs, config.Errorf(f+"."+n, "must not be negative"))
			}
		}
	}
	if len(d.Origins) == 0 {
		errs = append(errs, config.Errorf("origins", "at least one origin is needed"))
	}
	for i, g := range d.OriginGroups {
		f := fmt.Sprintf("origin_groups[%d]", i)
		if g.Name == "" || targets[g.Name] {
			errs = append(errs, config.Errorf(f+".name", "name %q missing or already used", g.Name))
		}
		if len(g.Members) == 0 {
			errs = append(errs, config.Errorf(f+".members", "at least one member is needed"))
		}
		for j, m := range g.Members {
			if !targets[m] || slices.ContainsFunc(d.OriginGroups, func(o OriginGroup) bool { return o.Name == m }) {
				errs = append(errs, config.Errorf(fmt.Sprintf("%s.members[%d]", f, j), "no origin named %q", m))
			}
		}
		for j, s := range g.FailoverStatus {
			if s < 400 || s > 599 {
				errs = append(errs, config.Errorf(fmt.Sprintf("%s.failover_status[%d]", f, j), "status %d is not 4xx/5xx", s))
			}
		}
	}
	for _, g := range d.OriginGroups {
		targets[g.Name] = true
	}
	for i := range d.Behaviors {
		b := &d.Behaviors[i]
		f := fmt.Sprintf("behaviors[%d]", i)
		if b.Path == "" {
			errs = append(errs, config.Errorf(f+".path", "required"))
		}
		errs = append(errs, config.Nest(f, b.validate(targets, c)))
	}
	if d.DefaultBehavior.Path != "" {
		errs = append(errs, config.Errorf("default_behavior.path", "the default behavior has no path"))
	}
	errs = append(errs, config.Nest("default_behavior", d.DefaultBehavior.validate(targets, c)))
	for i, s := range d.Access.Allow {
		if err := checkAccessItem(s, c); err != nil {
			errs = append(errs, config.Errorf(fmt.Sprintf("access.allow[%d]", i), "%v", err))
		}
	}
	for i, s := range d.Access.Deny {
		if err := checkAccessItem(s, c); err != nil {
			errs = append(errs, config.Errorf(fmt.Sprintf("access.deny[%d]", i), "%v", err))
		}
	}
	return errors.Join(errs...)
}

func checkAccessItem(s string, c *Config) error {
	if name, ok := strings.CutPrefix(s, "geo:"); ok {
		if _, ok := c.GeoSets[name]; !ok {
			return fmt.Errorf("no geo set named %q", name)
		}
		return nil
	}
	_, err := parsePrefix(s)
	return err
}

func (b *Behavior) validate(targets map[string]bool, c *Config) error {
	var errs []error
	if b.Origin == "" {
		errs = append(errs, config.Errorf("origin", "required"))
	} else if !targets[b.Origin] {
		errs = append(errs, config.Errorf("origin", "no origin or origin group named %q", b.Origin))
	}
	for i, m := range b.AllowedMethods {
		if !slices.Contains([]string{"GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"}, m) {
			errs = append(errs, config.Errorf(fmt.Sprintf("allowed_methods[%d]", i), "unknown method %q", m))
		}
	}
	if b.MinTTL < 0 {
		errs = append(errs, config.Errorf("min_ttl", "must not be negative"))
	}
	if b.DefaultTTL != nil && *b.DefaultTTL < 0 {
		errs = append(errs, config.Errorf("default_ttl", "must not be negative"))
	}
	if b.MaxTTL != nil && (*b.MaxTTL < b.MinTTL || (b.DefaultTTL != nil && *b.MaxTTL < *b.DefaultTTL)) {
		errs = append(errs, config.Errorf("max_ttl", "must be at least min_ttl and default_ttl"))
	}
	if b.Grace < 0 || b.StaleWhileRevalidate < 0 || (b.Keep != nil && *b.Keep < 0) {
		errs = append(errs, config.Errorf("grace", "grace, stale_while_revalidate and keep must not be negative"))
	}
	switch b.CacheKey.QueryStrings {
	case "", "none", "all":
		if len(b.CacheKey.QueryStringNames) > 0 {
			errs = append(errs, config.Errorf("cache_key.query_string_names", "only with query_strings: allow"))
		}
	case "allow":
	default:
		errs = append(errs, config.Errorf("cache_key.query_strings", "want none, all or allow, not %q", b.CacheKey.QueryStrings))
	}
	for i, h := range b.CacheKey.Headers {
		if !validToken(h) {
			errs = append(errs, config.Errorf(fmt.Sprintf("cache_key.headers[%d]", i), "invalid header name %q", h))
		}
	}
	if !slices.Contains(viewerProtocols, b.ViewerProtocol) {
		errs = append(errs, config.Errorf("viewer_protocol", "want allow, redirect-to-https or https-only, not %q", b.ViewerProtocol))
	}
	for i, e := range b.ErrorResponses {
		f := fmt.Sprintf("error_responses[%d]", i)
		if e.Status < 400 || e.Status > 599 {
			errs = append(errs, config.Errorf(f+".status", "status %d is not 4xx/5xx", e.Status))
		}
		if e.ResponseCode != 0 && (e.ResponseCode < 200 || e.ResponseCode > 599) {
			errs = append(errs, config.Errorf(f+".response_code", "invalid status %d", e.ResponseCode))
		}
		if e.Page != "" && !strings.HasPrefix(e.Page, "/") {
			errs = append(errs, config.Errorf(f+".page", "must be a path starting with /"))
		}
	}
	for k, v := range b.ResponseHeaders {
		if !validToken(k) || strings.ContainsAny(v, "\r\n\x00") {
			errs = append(errs, config.Errorf("response_headers."+k, "invalid header"))
		}
	}
	if b.SignedURLs && len(c.SigningKeys) == 0 {
		errs = append(errs, config.Errorf("signed_urls", "needs signing_keys"))
	}
	return errors.Join(errs...)
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return http.CanonicalHeaderKey(s) != ""
}

// parsePrefix accepts a CIDR or a bare address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("invalid CIDR %q", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid address or CIDR %q", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
