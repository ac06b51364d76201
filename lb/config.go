// Package lb is lbd, edgestack's L4/L7 load balancer (what ALB and NLB
// do): listeners (http, https, tcp, tls, udp) forward to target groups
// through prioritised rules; config reloads and target changes swap
// snapshots atomically without touching listeners or live connections.
// See README.md for the config syntax, API and metrics.
package lb

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/edgestack/edgestack/internal/app"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/edgestack/edgestack/internal/h2"
	"github.com/edgestack/edgestack/lb/rules"
	"github.com/edgestack/edgestack/lb/targetgroup"
)

// Listener protocols.
const (
	ProtoHTTP  = "http"
	ProtoHTTPS = "https"
	ProtoTCP   = "tcp"
	ProtoTLS   = "tls"
	ProtoUDP   = "udp"
)

// Config is lbd's configuration.
type Config struct {
	app.Base `yaml:",inline"`
	// TargetGroups are the groups listeners and rules forward to.
	// Default: none.
	TargetGroups []targetgroup.Config `yaml:"target_groups"`
	// Listeners accept client traffic. Default: none.
	Listeners []ListenerConfig `yaml:"listeners"`
	// CertStore is certd's storage folder, read for certificates (https
	// and tls listeners with tls.certd) and ACME HTTP-01 challenges (http
	// listeners with acme_http01). Static; changes need a restart.
	CertStore CertStoreConfig `yaml:"cert_store"`
	// AccessLog writes one line per HTTP request, per finished L4
	// connection and per ended UDP flow.
	AccessLog AccessLogConfig `yaml:"access_log"`
	// HTTP2 picks and sizes the HTTP/2 server of the https listeners
	// (internal/h2): server edgestack (default) or net/http. A reload
	// that changes it gives the https listeners new servers on their
	// sockets; connections already open keep the old one until they end.
	HTTP2 h2.Config `yaml:"http2"`
}

// CertStoreConfig locates certd's certificates.
type CertStoreConfig struct {
	// Dir is certd's storage folder (shared read-only volume). Default:
	// none (no certd certificates).
	Dir string `yaml:"dir"`
	// Poll is how often it is scanned for new certificates. Default 250ms.
	Poll config.Duration `yaml:"poll"`
	// DefaultName is the certificate served to clients without SNI.
	// Default: none (such handshakes fail).
	DefaultName string `yaml:"default_name"`
}

// AccessLogConfig configures access logs.
type AccessLogConfig struct {
	// Format: "" (off), json, common or combined. Default off.
	Format string `yaml:"format"`
	// File to append to; "" or "-" is stdout. Default stdout.
	File string `yaml:"file"`
}

// ListenerConfig is one listener.
type ListenerConfig struct {
	// Name identifies the listener in metrics and logs. Required, unique.
	Name string `yaml:"name"`
	// Protocol: http, https, tcp, tls or udp. Default http.
	Protocol string `yaml:"protocol"`
	// Listen is the address, e.g. ":80". Required.
	Listen string `yaml:"listen"`

	// Rules (http, https) are tried by priority; the first match acts.
	// Default: none.
	Rules []rules.Rule `yaml:"rules"`
	// DefaultAction (http, https) acts when no rule matches. Required for
	// http and https.
	DefaultAction *rules.Action `yaml:"default_action"`
	// Engine (http, https) picks the HTTP/1.1 implementation: fast (lbd's
	// own HTTP/1.1 engine: no per-request goroutines, pooled buffers and
	// upstream connections), std (net/http and httputil.ReverseProxy) or
	// auto: fast unless the listener has acme_http01 or forwards (in a
	// rule or its default action) to a target group with protocol_version
	// http2 or grpc, which only std does. fast with either is a config
	// error. HTTP/2 on https listeners always uses net/http's HTTP/2
	// server. A reload that changes the outcome re-creates the listener's
	// server on the same socket. Default auto.
	Engine string `yaml:"engine"`
	// ACMEHTTP01 (http) answers ACME HTTP-01 challenges from the cert
	// store before any rule. Default false.
	ACMEHTTP01 bool `yaml:"acme_http01"`

	// TargetGroup (tcp, tls, udp) receives the connections. Required for
	// tcp and udp, and for tls unless sni routes cover every name.
	TargetGroup string `yaml:"target_group"`
	// SNI (tls) routes connections by server name to other groups.
	SNI []SNIRoute `yaml:"sni"`
	// TLSMode (tls): terminate (decrypt with our certificates and forward
	// plain TCP) or passthrough (forward the encrypted stream, routed by
	// the SNI of the ClientHello). Default terminate.
	TLSMode string `yaml:"tls_mode"`
	// ProxyProtocol (tcp, tls) sends a PROXY protocol v2 header to targets
	// so they see the client's address. Default false.
	ProxyProtocol bool `yaml:"proxy_protocol"`

	// TLS certificates (https, tls terminate).
	TLS TLSConfig `yaml:"tls"`

	// IdleTimeout closes idle client connections (keep-alive for HTTP,
	// no traffic for L4; UDP flows expire). Default 60s (UDP 30s).
	IdleTimeout config.Duration `yaml:"idle_timeout"`
	// RequestTimeout (http, https) bounds the wait for a target's response
	// headers; the client gets 504 after it. It does not apply to target
	// groups with protocol_version grpc (streaming RPCs). Default 60s.
	RequestTimeout config.Duration `yaml:"request_timeout"`
	// ReadHeaderTimeout (http, https) bounds reading a request head (and
	// the TLS handshake). Default 10s.
	ReadHeaderTimeout config.Duration `yaml:"read_header_timeout"`
	// MaxHeaderBytes (http, https) bounds a request head. Default 65536.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxConnections bounds concurrent client connections (0: no limit).
	// Default 0.
	MaxConnections int `yaml:"max_connections"`
}

// SNIRoute sends TLS connections for matching server names to a group.
type SNIRoute struct {
	// Host pattern, e.g. "*.example.com" (case-insensitive). Required.
	Host string `yaml:"host"`
	// TargetGroup receiving them. Required.
	TargetGroup string `yaml:"target_group"`
}

// TLSConfig holds a listener's certificates.
type TLSConfig struct {
	// Certificates are static PEM pairs; the one matching the client's SNI
	// is served (the first one when none matches and certd has none).
	Certificates []CertPair `yaml:"certificates"`
	// Certd serves certificates from the cert store (certd), by SNI.
	// Default false.
	Certd bool `yaml:"certd"`
}

// CertPair is a certificate chain and its key, PEM files.
type CertPair struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DefaultConfig returns lbd's defaults.
func DefaultConfig() *Config {
	return &Config{Base: app.DefaultBase("127.0.0.1:9104"), HTTP2: h2.Config{Server: h2.ServerEdgestack, MaxConcurrentStreams: 250}}
}

// withDefaults returns l with defaults applied.
func (l ListenerConfig) withDefaults() ListenerConfig {
	if l.Protocol == "" {
		l.Protocol = ProtoHTTP
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = config.Duration(60 * time.Second)
		if l.Protocol == ProtoUDP {
			l.IdleTimeout = config.Duration(30 * time.Second)
		}
	}
	if l.RequestTimeout == 0 {
		l.RequestTimeout = config.Duration(60 * time.Second)
	}
	if l.ReadHeaderTimeout == 0 {
		l.ReadHeaderTimeout = config.Duration(10 * time.Second)
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = 64 << 10
	}
	if l.TLSMode == "" {
		l.TLSMode = "terminate"
	}
	return l
}

func (l ListenerConfig) isHTTP() bool { return l.Protocol == ProtoHTTP || l.Protocol == ProtoHTTPS }

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Base.Validate(), c.HTTP2.Validate("http2")}
	groups := map[string]targetgroup.Config{}
	for i, g := range c.TargetGroups {
		p := "target_groups[" + strconv.Itoa(i) + "]"
		errs = append(errs, config.Nest(p, g.Validate()))
		if _, dup := groups[g.Name]; dup && g.Name != "" {
			errs = append(errs, config.Errorf(p+".name", "duplicate target group %q", g.Name))
		}
		groups[g.Name] = g.WithDefaults()
	}
	exists := func(n string) bool { _, ok := groups[n]; return ok }
	names := map[string]bool{}
	addrs := map[string]bool{}
	for i, l := range c.Listeners {
		p := "listeners[" + strconv.Itoa(i) + "]"
		l = l.withDefaults()
		bad := func(field, format string, args ...any) {
			errs = append(errs, config.Errorf(p+"."+field, format, args...))
		}
		if l.Name == "" {
			bad("name", "required")
		} else if names[l.Name] {
			bad("name", "duplicate listener %q", l.Name)
		}
		names[l.Name] = true
		if _, port, err := net.SplitHostPort(l.Listen); err != nil {
			bad("listen", "want host:port, got %q", l.Listen)
		} else if port != "0" {
			key := l.Listen
			if l.Protocol == ProtoUDP {
				key = "udp/" + key
			}
			if addrs[key] {
				bad("listen", "address %s used by two listeners", l.Listen)
			}
			addrs[key] = true
		}
		switch l.Protocol {
		case ProtoHTTP, ProtoHTTPS:
			errs = append(errs, config.Nest(p+".rules", rules.ValidateRules(l.Rules, exists)))
			if l.DefaultAction == nil {
				bad("default_action", "required for %s listeners", l.Protocol)
			} else {
				errs = append(errs, config.Nest(p+".default_action", l.DefaultAction.Validate(exists)))
			}
			for _, f := range []struct {
				name string
				set  bool
			}{{"target_group", l.TargetGroup != ""}, {"sni", len(l.SNI) > 0}, {"proxy_protocol", l.ProxyProtocol}} {
				if f.set {
					bad(f.name, "not used by %s listeners", l.Protocol)
				}
			}
			if l.ACMEHTTP01 && c.CertStore.Dir == "" {
				bad("acme_http01", "needs cert_store.dir")
			}
			switch l.Engine {
			case "", "auto", "std":
			case "fast":
				if l.ACMEHTTP01 {
					bad("engine", "the fast engine cannot answer acme_http01 challenges; use auto or std")
				}
				if g := http2Group(groups, l); g != "" {
					bad("engine", "listener %q: the fast engine speaks only HTTP/1.1 to targets and cannot forward to target group %q (protocol_version %s); use auto or std",
						l.Name, g, groups[g].ProtocolVersion)
				}
			default:
				bad("engine", "want auto, fast or std, got %q", l.Engine)
			}
			if l.ACMEHTTP01 && l.Protocol != ProtoHTTP {
				bad("acme_http01", "only for http listeners")
			}
			// Groups behind http listeners must speak http(s).
			for _, g := range referencedGroups(l) {
				if gc, ok := groups[g]; ok && gc.Protocol != targetgroup.ProtoHTTP && gc.Protocol != targetgroup.ProtoHTTPS {
					bad("rules", "target group %q has protocol %s; http listeners need http or https groups", g, gc.Protocol)
				}
			}
		case ProtoTCP, ProtoTLS, ProtoUDP:
			if len(l.Rules) > 0 || l.DefaultAction != nil {
				bad("rules", "rules and default_action are for http and https listeners")
			}
			if l.TargetGroup == "" && !(l.Protocol == ProtoTLS && len(l.SNI) > 0) {
				bad("target_group", "required for %s listeners", l.Protocol)
			}
			want := targetgroup.ProtoTCP
			if l.Protocol == ProtoUDP {
				want = targetgroup.ProtoUDP
			}
			check := func(field, name string) {
				if name == "" {
					return
				}
				if gc, ok := groups[name]; !ok {
					bad(field, "no target group named %q", name)
				} else if gc.Protocol != want {
					bad(field, "target group %q has protocol %s; %s listeners need %s groups", name, gc.Protocol, l.Protocol, want)
				}
			}
			check("target_group", l.TargetGroup)
			for j, s := range l.SNI {
				if l.Protocol != ProtoTLS {
					bad("sni", "only for tls listeners")
					break
				}
				if s.Host == "" {
					bad("sni["+strconv.Itoa(j)+"].host", "required")
				}
				check("sni["+strconv.Itoa(j)+"].target_group", s.TargetGroup)
			}
			if l.TLSMode != "terminate" && l.TLSMode != "passthrough" {
				bad("tls_mode", "want terminate or passthrough, got %q", l.TLSMode)
			}
			if l.ProxyProtocol && l.Protocol == ProtoUDP {
				bad("proxy_protocol", "not supported for udp listeners")
			}
		default:
			bad("protocol", "unknown protocol %q (want http, https, tcp, tls or udp)", l.Protocol)
		}
		needsCert := l.Protocol == ProtoHTTPS || (l.Protocol == ProtoTLS && l.TLSMode == "terminate")
		if needsCert && len(l.TLS.Certificates) == 0 && !l.TLS.Certd {
			bad("tls", "%s listeners need tls.certificates or tls.certd", l.Protocol)
		}
		if !needsCert && (len(l.TLS.Certificates) > 0 || l.TLS.Certd) {
			bad("tls", "certificates are only used by https and terminating tls listeners")
		}
		if l.TLS.Certd && c.CertStore.Dir == "" {
			bad("tls.certd", "needs cert_store.dir")
		}
		for j, cp := range l.TLS.Certificates {
			if _, err := tls.LoadX509KeyPair(cp.CertFile, cp.KeyFile); err != nil {
				bad("tls.certificates["+strconv.Itoa(j)+"]", "%v", err)
			}
		}
		if l.IdleTimeout < 0 || l.RequestTimeout < 0 || l.ReadHeaderTimeout < 0 {
			bad("idle_timeout", "timeouts must not be negative")
		}
		if l.MaxHeaderBytes < 1024 || l.MaxHeaderBytes > 1<<20 {
			bad("max_header_bytes", "must be 1024..1048576, got %d", l.MaxHeaderBytes)
		}
		if l.MaxConnections < 0 {
			bad("max_connections", "must not be negative")
		}
	}
	if c.CertStore.Dir != "" {
		if st, err := os.Stat(c.CertStore.Dir); err != nil || !st.IsDir() {
			errs = append(errs, config.Errorf("cert_store.dir", "not a readable folder: %q", c.CertStore.Dir))
		}
	}
	switch c.AccessLog.Format {
	case "", "json", "common", "combined":
	default:
		errs = append(errs, config.Errorf("access_log.format", "want json, common or combined, got %q", c.AccessLog.Format))
	}
	return errors.Join(errs...)
}

// referencedGroups lists the groups an http listener forwards to.
func referencedGroups(l ListenerConfig) []string {
	var out []string
	add := func(a *rules.Action) {
		if a == nil || a.Forward == nil {
			return
		}
		if a.Forward.TargetGroup != "" {
			out = append(out, a.Forward.TargetGroup)
		}
		for _, wg := range a.Forward.TargetGroups {
			out = append(out, wg.Name)
		}
	}
	for i := range l.Rules {
		add(&l.Rules[i].Action)
	}
	add(l.DefaultAction)
	return out
}

// http2Group names the first group an http listener forwards to that
// speaks HTTP/2 to its targets, or "".
func http2Group(groups map[string]targetgroup.Config, l ListenerConfig) string {
	for _, g := range referencedGroups(l) {
		if gc, ok := groups[g]; ok && gc.HTTP2() {
			return g
		}
	}
	return ""
}

// groupConfigs maps group names to their configs, defaults applied.
func (c *Config) groupConfigs() map[string]targetgroup.Config {
	m := make(map[string]targetgroup.Config, len(c.TargetGroups))
	for _, g := range c.TargetGroups {
		m[g.Name] = g.WithDefaults()
	}
	return m
}

// usedGroups names every group some listener uses.
func (c *Config) usedGroups() map[string]bool {
	used := map[string]bool{}
	for _, l := range c.Listeners {
		for _, g := range referencedGroups(l) {
			used[g] = true
		}
		if l.TargetGroup != "" {
			used[l.TargetGroup] = true
		}
		for _, s := range l.SNI {
			used[s.TargetGroup] = true
		}
	}
	return used
}
