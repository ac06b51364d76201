package health

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgestack/edgestack/internal/config"
)

// Kind is the kind of a check.
type Kind string

// The kinds of check.
const (
	// KindHTTP sends GET path to address over plain HTTP/1.1.
	KindHTTP Kind = "http"
	// KindHTTPS sends GET path to address over HTTP/1.1 in TLS.
	KindHTTPS Kind = "https"
	// KindTCP opens a TCP connection to address and closes it.
	KindTCP Kind = "tcp"
	// KindGRPC sends a unary gRPC call (by default grpc.health.v1
	// Health/Check) to address over cleartext HTTP/2 with prior knowledge
	// (h2c).
	KindGRPC Kind = "grpc"
	// KindGRPCS is KindGRPC over TLS, with ALPN h2.
	KindGRPCS Kind = "grpcs"
	// KindCalculated is healthy when at least min_healthy of its children are.
	KindCalculated Kind = "calculated"
)

// Kinds lists every Kind, in a fixed order.
func Kinds() []Kind {
	return []Kind{KindHTTP, KindHTTPS, KindTCP, KindGRPC, KindGRPCS, KindCalculated}
}

func (k Kind) probes() bool { return k == KindTCP || k.isHTTP() || k.isGRPC() }
func (k Kind) isHTTP() bool { return k == KindHTTP || k == KindHTTPS }
func (k Kind) isGRPC() bool { return k == KindGRPC || k == KindGRPCS }
func (k Kind) isTLS() bool  { return k == KindHTTPS || k == KindGRPCS }

// Defaults and limits of CheckConfig.
const (
	DefaultInterval           = 10 * time.Second
	DefaultTimeout            = 2 * time.Second
	DefaultHealthyThreshold   = 3
	DefaultUnhealthyThreshold = 3
	DefaultPath               = "/"
	DefaultExpectedStatus     = "200-399"
	// DefaultGRPCPath is the method grpc and grpcs checks call: the
	// standard health service, whose answer must also say SERVING.
	DefaultGRPCPath = "/grpc.health.v1.Health/Check"
	// DefaultExpectedGRPCStatus is the grpc-status grpc checks accept.
	DefaultExpectedGRPCStatus = "0"

	// MinInterval and MaxInterval bound interval.
	MinInterval = 100 * time.Millisecond
	MaxInterval = time.Hour
	// MaxThreshold bounds healthy_threshold and unhealthy_threshold (ALB allows 2..10;
	// we also allow 1).
	MaxThreshold = 10
	// BodyLimit is how many bytes of a response body are searched for
	// body_contains; the rest is discarded.
	BodyLimit = 5120
)

// CheckConfig describes one check. The zero value of every optional field
// means "use the default" (stated on each field); WithDefaults fills them in.
// Fields that do not apply to the check's kind must be left empty; Validate
// reports them.
type CheckConfig struct {
	// Kind is one of http, https, tcp, grpc, grpcs, calculated. Required.
	Kind Kind `yaml:"kind"`

	// Address is the endpoint to probe as host:port; the host may be a name,
	// an IPv4 address or a bracketed IPv6 address ("[::1]:8080"). For http and
	// https the port may be left out (default 80 and 443). Required for http,
	// https, tcp, grpc and grpcs.
	Address string `yaml:"address,omitempty"`
	// Path is the request path (and query) for http and https; for grpc
	// and grpcs the method called, "/package.Service/Method". Default "/"
	// (http, https), "/grpc.health.v1.Health/Check" (grpc, grpcs).
	Path string `yaml:"path,omitempty"`
	// Host overrides the Host header (:authority for grpc, grpcs) sent and
	// is the default TLS server name (https, grpcs). Default: the address.
	Host string `yaml:"host,omitempty"`
	// ServerName overrides the TLS SNI name, which is also the name the
	// certificate must be valid for (https and grpcs only). Default: the
	// host part of host if set, else of address.
	ServerName string `yaml:"server_name,omitempty"`
	// InsecureSkipVerify skips certificate verification (https and grpcs
	// only). Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify,omitempty"`
	// ExpectedStatus lists the status codes that count as success, as
	// comma-separated codes and inclusive ranges: "200-399", "200,204".
	// http and https only. Default "200-399".
	ExpectedStatus string `yaml:"expected_status,omitempty"`
	// BodyContains, when set, must appear in the first 5,120 bytes of the
	// response body (http and https only). Default "" (body not checked).
	BodyContains string `yaml:"body_contains,omitempty"`

	// ExpectedGRPCStatus lists the grpc-status codes that count as success
	// (grpc and grpcs only; the HTTP status must be 200), with the syntax
	// of expected_status and codes 0..99: "0", "0,12", "0-99". Default "0".
	ExpectedGRPCStatus string `yaml:"expected_grpc_status,omitempty"`
	// GRPCService is the service name asked about in the
	// grpc.health.v1.HealthCheckRequest (grpc and grpcs with the default
	// path only). Default "" (the server as a whole).
	GRPCService string `yaml:"grpc_service,omitempty"`

	// Children lists the IDs of the checks a calculated check combines
	// (calculated only; required there). A child that does not exist (yet)
	// counts as unknown.
	Children []string `yaml:"children,omitempty"`
	// MinHealthy is how many children must be healthy for a calculated check
	// to be healthy, 1..len(children) (calculated only). Default: all
	// children. (Use disabled for a check that is always healthy.)
	MinHealthy int `yaml:"min_healthy,omitempty"`

	// Interval is the time between probes (for calculated checks: between
	// scheduled re-evaluations), 100ms..1h. Default 10s.
	Interval config.Duration `yaml:"interval,omitempty"`
	// Timeout bounds one probe, connecting (and the TLS handshake) included,
	// and must not exceed interval (every kind but calculated). Default 2s,
	// or interval when that is shorter.
	Timeout config.Duration `yaml:"timeout,omitempty"`
	// HealthyThreshold is how many consecutive successful probes make a check
	// healthy, 1..10 (every kind but calculated). Default 3.
	HealthyThreshold int `yaml:"healthy_threshold,omitempty"`
	// UnhealthyThreshold is how many consecutive failed probes make a check
	// unhealthy, 1..10 (every kind but calculated). Default 3.
	UnhealthyThreshold int `yaml:"unhealthy_threshold,omitempty"`

	// Inverted reports healthy as unhealthy and the reverse (unknown stays
	// unknown). Any kind. Default false.
	Inverted bool `yaml:"inverted,omitempty"`
	// Disabled stops probing and reports the check as always healthy, whatever
	// inverted says (Route 53 semantics). Any kind. Default false.
	Disabled bool `yaml:"disabled,omitempty"`
}

// WithDefaults returns c with every unset optional field that applies to its
// kind set to its default. It is the only place defaults are applied.
func (c CheckConfig) WithDefaults() CheckConfig {
	if c.Interval == 0 {
		c.Interval = config.Duration(DefaultInterval)
	}
	if c.Kind.probes() {
		if c.Timeout == 0 {
			c.Timeout = config.Duration(min(DefaultTimeout, c.Interval.D()))
		}
		if c.HealthyThreshold == 0 {
			c.HealthyThreshold = DefaultHealthyThreshold
		}
		if c.UnhealthyThreshold == 0 {
			c.UnhealthyThreshold = DefaultUnhealthyThreshold
		}
	}
	if c.Kind.isHTTP() {
		if c.Path == "" {
			c.Path = DefaultPath
		}
		if c.ExpectedStatus == "" {
			c.ExpectedStatus = DefaultExpectedStatus
		}
	}
	if c.Kind.isGRPC() {
		if c.Path == "" {
			c.Path = DefaultGRPCPath
		}
		if c.ExpectedGRPCStatus == "" {
			c.ExpectedGRPCStatus = DefaultExpectedGRPCStatus
		}
	}
	if c.Kind == KindCalculated && c.MinHealthy == 0 {
		c.MinHealthy = len(c.Children)
	}
	return c
}

// Validate reports every problem with c (after defaults are applied), each
// as a *config.FieldError naming the YAML field, joined with errors.Join. It
// cannot see cycles between calculated checks; Engine.Set and ValidateAll
// report those.
func (c CheckConfig) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, config.Errorf(field, format, args...))
	}
	notFor := func(field string, set bool) {
		if set {
			bad(field, "not used by kind %s", c.Kind)
		}
	}

	if iv := c.Interval.D(); iv < MinInterval || iv > MaxInterval {
		bad("interval", "must be between %v and %v, got %v", MinInterval, MaxInterval, iv)
	}
	switch c.Kind {
	case KindHTTP, KindHTTPS, KindTCP, KindGRPC, KindGRPCS, KindCalculated:
	case "":
		bad("kind", "required (one of http, https, tcp, grpc, grpcs, calculated)")
		return errors.Join(errs...) // which other fields apply depends on kind
	default:
		bad("kind", "unknown kind %q (want http, https, tcp, grpc, grpcs or calculated)", c.Kind)
		return errors.Join(errs...)
	}

	if c.Kind.probes() {
		// gRPC has no well-known port to default to.
		if err := validateAddress(c.Address, !c.Kind.isHTTP()); err != nil {
			bad("address", "%v", err)
		}
		if t := c.Timeout.D(); t <= 0 {
			bad("timeout", "must be positive, got %v", t)
		} else if t > c.Interval.D() {
			bad("timeout", "must not exceed interval (%v), got %v", c.Interval.D(), t)
		}
		if n := c.HealthyThreshold; n < 1 || n > MaxThreshold {
			bad("healthy_threshold", "must be between 1 and %d, got %d", MaxThreshold, n)
		}
		if n := c.UnhealthyThreshold; n < 1 || n > MaxThreshold {
			bad("unhealthy_threshold", "must be between 1 and %d, got %d", MaxThreshold, n)
		}
	} else {
		notFor("address", c.Address != "")
		notFor("timeout", c.Timeout != 0)
		notFor("healthy_threshold", c.HealthyThreshold != 0)
		notFor("unhealthy_threshold", c.UnhealthyThreshold != 0)
	}

	if c.Kind.isHTTP() {
		if u, err := url.ParseRequestURI(c.Path); err != nil || !strings.HasPrefix(c.Path, "/") || u.Host != "" || strings.ContainsAny(c.Path, " \t\r\n#") {
			bad("path", "must be an absolute request path like \"/healthz\", got %q", c.Path)
		}
		if c.Host != "" {
			if err := validateHostHeader(c.Host); err != nil {
				bad("host", "%v", err)
			}
		}
		if _, err := ParseStatusRanges(c.ExpectedStatus); err != nil {
			bad("expected_status", "%v", err)
		}
		if len(c.BodyContains) > BodyLimit {
			bad("body_contains", "longer than the %d bytes of body searched (%d bytes)", BodyLimit, len(c.BodyContains))
		}
	} else {
		notFor("expected_status", c.ExpectedStatus != "")
		notFor("body_contains", c.BodyContains != "")
	}

	if c.Kind.isGRPC() {
		if err := validateGRPCPath(c.Path); err != nil {
			bad("path", "%v", err)
		}
		if c.Host != "" {
			if err := validateHostHeader(c.Host); err != nil {
				bad("host", "%v", err)
			}
		}
		if _, err := ParseGRPCCodes(c.ExpectedGRPCStatus); err != nil {
			bad("expected_grpc_status", "%v", err)
		}
		switch {
		case c.GRPCService == "":
		case c.Path != DefaultGRPCPath:
			// Other methods get an empty request message.
			bad("grpc_service", "only used with path %s, not %s", DefaultGRPCPath, c.Path)
		case !utf8.ValidString(c.GRPCService) || len(c.GRPCService) > maxGRPCService:
			bad("grpc_service", "must be valid UTF-8 of at most %d bytes", maxGRPCService)
		}
	} else {
		notFor("expected_grpc_status", c.ExpectedGRPCStatus != "")
		notFor("grpc_service", c.GRPCService != "")
	}
	if !c.Kind.isHTTP() && !c.Kind.isGRPC() {
		notFor("path", c.Path != "")
		notFor("host", c.Host != "")
	}

	if c.Kind.isTLS() {
		if c.ServerName != "" {
			if err := validateHostName(c.ServerName); err != nil {
				bad("server_name", "%v", err)
			}
		}
	} else {
		notFor("server_name", c.ServerName != "")
		notFor("insecure_skip_verify", c.InsecureSkipVerify)
	}

	if c.Kind == KindCalculated {
		if len(c.Children) == 0 {
			bad("children", "required for kind calculated")
		}
		seen := make(map[string]bool, len(c.Children))
		for i, ch := range c.Children {
			field := "children[" + strconv.Itoa(i) + "]"
			switch {
			case strings.TrimSpace(ch) == "":
				bad(field, "empty check ID")
			case seen[ch]:
				bad(field, "duplicate child %q", ch)
			}
			seen[ch] = true
		}
		if len(c.Children) > 0 && (c.MinHealthy < 1 || c.MinHealthy > len(c.Children)) {
			bad("min_healthy", "must be between 1 and the number of children (%d), got %d", len(c.Children), c.MinHealthy)
		}
	} else {
		notFor("children", len(c.Children) != 0)
		notFor("min_healthy", c.MinHealthy != 0)
	}
	return errors.Join(errs...)
}

// ValidateAll validates a complete set of checks keyed by ID: each check's
// own problems (fields prefixed with the ID, e.g. "web.interval"), calculated
// children that name no check in the set, and cycles between calculated
// checks. Engine.Set, which may be given children before they exist, checks
// only cycles.
func ValidateAll(checks map[string]CheckConfig) error {
	ids := make([]string, 0, len(checks))
	for id := range checks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var errs []error
	for _, id := range ids {
		c := checks[id]
		if err := validateID(id); err != nil {
			errs = append(errs, config.Errorf(id, "%v", err))
		}
		errs = append(errs, config.Nest(id, c.Validate()))
		if c.Kind != KindCalculated {
			continue
		}
		for i, ch := range c.Children {
			if _, ok := checks[ch]; !ok && ch != "" {
				errs = append(errs, config.Errorf(id+".children["+strconv.Itoa(i)+"]", "no check named %q", ch))
			}
		}
	}
	reported := map[string]bool{}
	for _, id := range ids {
		c := checks[id]
		if c.Kind != KindCalculated || reported[id] {
			continue
		}
		cycle := findCycle(id, c.Children, func(x string) []string {
			if xc, ok := checks[x]; ok && xc.Kind == KindCalculated {
				return xc.Children
			}
			return nil
		})
		if cycle != nil {
			for _, x := range cycle {
				reported[x] = true
			}
			errs = append(errs, config.Errorf(id+".children", "cycle: %s", strings.Join(cycle, " -> ")))
		}
	}
	return errors.Join(errs...)
}

// findCycle returns a path id -> ... -> id if id is reachable from children
// through the child lists returned by childrenOf, or nil.
func findCycle(id string, children []string, childrenOf func(string) []string) []string {
	visited := map[string]bool{}
	var path []string
	var walk func(x string) bool
	walk = func(x string) bool {
		if x == id {
			path = append(path, x)
			return true
		}
		if visited[x] {
			return false
		}
		visited[x] = true
		path = append(path, x)
		if slices.ContainsFunc(childrenOf(x), walk) {
			return true
		}
		path = path[:len(path)-1]
		return false
	}
	for _, ch := range children {
		path = path[:0]
		if walk(ch) {
			return append([]string{id}, path...)
		}
	}
	return nil
}

func validateID(id string) error {
	if strings.TrimSpace(id) == "" {
		return errors.New("empty check ID")
	}
	return nil
}

// validateAddress checks a host:port (port optional unless needPort).
func validateAddress(addr string, needPort bool) error {
	if addr == "" {
		return errors.New("required")
	}
	if strings.Contains(addr, "://") || strings.ContainsAny(addr, "/ \t\r\n") {
		return fmt.Errorf("want host:port like \"10.0.0.1:8080\" (no scheme or path), got %q", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if needPort {
			return fmt.Errorf("want host:port, got %q", addr)
		}
		host = addr
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		} else if strings.Contains(host, ":") {
			return fmt.Errorf("IPv6 addresses must be bracketed, got %q", addr)
		}
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port must be 1..65535, got %q", port)
	}
	if host == "" {
		return fmt.Errorf("missing host in %q", addr)
	}
	return nil
}

// maxGRPCService bounds grpc_service; service names are short.
const maxGRPCService = 1024

// validateGRPCPath checks a gRPC method path, "/package.Service/Method".
func validateGRPCPath(p string) error {
	svc, method, ok := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	if !strings.HasPrefix(p, "/") || !ok || svc == "" || method == "" || strings.Contains(method, "/") ||
		strings.ContainsAny(p, "?# \t\r\n") {
		return fmt.Errorf("want a gRPC method like %q, got %q", DefaultGRPCPath, p)
	}
	return nil
}

func validateHostHeader(h string) error {
	if strings.ContainsAny(h, "/ \t\r\n@?#") || strings.Contains(h, "://") {
		return fmt.Errorf("want a host name (optionally with :port), got %q", h)
	}
	return nil
}

func validateHostName(h string) error {
	if strings.ContainsAny(h, "/:[] \t\r\n@?#") {
		return fmt.Errorf("want a host name without port, got %q", h)
	}
	return nil
}

// probeDef is the part of a CheckConfig that defines what a probe does (or
// how a calculated check combines). When Set replaces a check with an equal
// probeDef the state is kept; interval, timeout, thresholds and inverted may
// change freely.
type probeDef struct {
	kind                                    Kind
	address, path, host, serverName, status string
	body, grpcStatus, grpcService           string
	insecure, disabled                      bool
	children                                string
	minHealthy                              int
}

func (c CheckConfig) def() probeDef {
	return probeDef{
		kind: c.Kind, address: c.Address, path: c.Path, host: c.Host, serverName: c.ServerName,
		status: c.ExpectedStatus, body: c.BodyContains, insecure: c.InsecureSkipVerify,
		grpcStatus: c.ExpectedGRPCStatus, grpcService: c.GRPCService,
		disabled: c.Disabled, children: strings.Join(c.Children, "\x00"), minHealthy: c.MinHealthy,
	}
}
