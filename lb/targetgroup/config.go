// Package targetgroup holds lbd's target groups: the targets (host:port)
// a listener or rule forwards to, their health (active checks through the
// shared health engine, passive ejection on failures), registration and
// draining, and the choice of a target per request or connection (round
// robin, least outstanding requests, weighted random; stickiness; slow
// start; fail-open when no target is healthy).
package targetgroup

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/edgestack/edgestack/internal/config"
	"github.com/edgestack/edgestack/internal/health"
)

// Algorithm is how a target is chosen.
type Algorithm string

// Algorithms.
const (
	RoundRobin               Algorithm = "round_robin"
	LeastOutstandingRequests Algorithm = "least_outstanding_requests"
	WeightedRandom           Algorithm = "weighted_random"
)

// Protocols of a target group.
const (
	ProtoHTTP  = "http"
	ProtoHTTPS = "https"
	ProtoTCP   = "tcp"
	ProtoUDP   = "udp"
)

// Protocol versions spoken to the targets of http and https groups (ALB's
// target-group ProtocolVersion).
const (
	VersionHTTP1 = "http1"
	VersionHTTP2 = "http2"
	VersionGRPC  = "grpc"
)

// Config is one target group.
type Config struct {
	// Name identifies the group in rules, the API and metrics. Required.
	Name string `yaml:"name"`
	// Protocol spoken to targets: http, https (TLS to targets), tcp or udp.
	// Default http.
	Protocol string `yaml:"protocol"`
	// ProtocolVersion (http and https groups) is the HTTP version spoken
	// to targets: http1 (HTTP/1.1), http2 (HTTP/2: cleartext with prior
	// knowledge, h2c, for http groups; TLS with ALPN "h2" for https
	// groups) or grpc (HTTP/2 as http2, for gRPC: only requests with a
	// content-type of application/grpc* are forwarded, responses are
	// streamed unbuffered, request_timeout does not apply). Listeners
	// forwarding to http2 or grpc groups use the net/http engine. Default
	// http1.
	ProtocolVersion string `yaml:"protocol_version"`
	// Algorithm: round_robin, least_outstanding_requests or
	// weighted_random. Default round_robin.
	Algorithm Algorithm `yaml:"algorithm"`
	// Targets registered from config. More can be registered through the
	// admin API; those survive reloads. Default: none.
	Targets []TargetConfig `yaml:"targets"`
	// HealthCheck is the active check of every target. Default: an http
	// check of "/" (https for https groups; for grpc groups a grpc check,
	// grpcs in https groups, of grpc.health.v1 Health/Check; tcp connect
	// for tcp groups and for http2 groups, whose targets may not answer
	// HTTP/1.1; none for udp) every 10s.
	HealthCheck HealthCheck `yaml:"health_check"`
	// Stickiness binds a client to a target with a load-balancer cookie
	// (HTTP only). Default off.
	Stickiness Stickiness `yaml:"stickiness"`
	// SlowStart ramps a newly healthy target's share of requests linearly
	// over this long (round_robin and least_outstanding_requests). Default
	// 0 (off).
	SlowStart config.Duration `yaml:"slow_start"`
	// DeregistrationDelay is how long a deregistered target keeps serving
	// its in-flight requests and connections (it gets no new ones) before
	// it is dropped; it is dropped earlier when nothing is in flight.
	// Default 30s.
	DeregistrationDelay config.Duration `yaml:"deregistration_delay"`
	// PassiveHealth takes a failing target out of rotation before the
	// active check notices.
	PassiveHealth PassiveHealth `yaml:"passive_health"`
	// InsecureSkipVerify skips verification of targets' certificates
	// (https groups). Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// ConnectTimeout bounds opening a connection to a target (TCP connect,
	// plus the TLS handshake for https groups). A target that vanished
	// without a reset (a stopped container, a host gone from the network)
	// costs a request this long before it is retried on another target,
	// so keep it well under clients' timeouts. Default 3s.
	ConnectTimeout config.Duration `yaml:"connect_timeout"`
}

// TargetConfig is one target.
type TargetConfig struct {
	// Address is host:port (or [IPv6]:port). Required.
	Address string `yaml:"address" json:"address"`
	// Weight is the target's relative share (weighted algorithms and slow
	// start). Default 1.
	Weight int `yaml:"weight" json:"weight,omitempty"`
}

// HealthCheck configures the active health check of a group's targets.
type HealthCheck struct {
	// Disabled turns active checks off: targets are healthy once
	// registered (passive health still applies). Default false.
	Disabled bool `yaml:"disabled"`
	// Protocol of the check: http, https (both HTTP/1.1), grpc (a unary
	// gRPC call over h2c), grpcs (the same over TLS with ALPN h2) or tcp.
	// Default: http for http groups, https for https groups; for grpc
	// groups grpc (grpcs in https groups); tcp for tcp groups and for
	// http2 groups (set http or https for targets that answer HTTP/1.1
	// too); udp groups are not checked unless set.
	Protocol string `yaml:"protocol"`
	// Port to check. Default: the target's traffic port.
	Port int `yaml:"port"`
	// Path of http(s) checks, or the method grpc(s) checks call. Default
	// "/" (http, https), "/grpc.health.v1.Health/Check" (grpc, grpcs,
	// which must then also answer SERVING).
	Path string `yaml:"path"`
	// Host header (:authority) of http(s) and grpc(s) checks. Default:
	// the target address.
	Host string `yaml:"host"`
	// Matcher lists the codes that pass: HTTP status codes for http(s),
	// e.g. "200-399" or "200,204"; grpc-status codes for grpc(s), e.g.
	// "0" or "0-99" ("12" for ALB's /AWS.ALB/healthcheck path). Default
	// "200-399" (http, https), "0" (grpc, grpcs).
	Matcher string `yaml:"matcher"`
	// GRPCService is the service name a grpc(s) check asks the
	// grpc.health.v1 Check method about. Default "" (the server as a
	// whole). Only with the default path.
	GRPCService string `yaml:"grpc_service"`
	// Interval between checks. Default 10s.
	Interval config.Duration `yaml:"interval"`
	// Timeout of one check. Default 2s (or interval when shorter).
	Timeout config.Duration `yaml:"timeout"`
	// HealthyThreshold consecutive passes make a target healthy. Default 3.
	HealthyThreshold int `yaml:"healthy_threshold"`
	// UnhealthyThreshold consecutive failures make it unhealthy. Default 3.
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`
}

// Stickiness configures load-balancer cookies.
type Stickiness struct {
	// Enabled turns stickiness on. Default false.
	Enabled bool `yaml:"enabled"`
	// Cookie is the cookie's name. Default "lbd_sticky".
	Cookie string `yaml:"cookie"`
	// Duration is the cookie's lifetime. Default 1h.
	Duration config.Duration `yaml:"duration"`
}

// PassiveHealth configures ejection on observed failures.
type PassiveHealth struct {
	// ConsecutiveFailures (connection failures or 5xx answers) that eject
	// a target; 0 disables passive health. Default 5.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// EjectFor is how long an ejected target stays out. Default 10s.
	EjectFor config.Duration `yaml:"eject_for"`
}

// WithDefaults returns c with defaults applied.
func (c Config) WithDefaults() Config {
	if c.Protocol == "" {
		c.Protocol = ProtoHTTP
	}
	if c.ProtocolVersion == "" && (c.Protocol == ProtoHTTP || c.Protocol == ProtoHTTPS) {
		c.ProtocolVersion = VersionHTTP1
	}
	if c.Algorithm == "" {
		c.Algorithm = RoundRobin
	}
	if c.DeregistrationDelay == 0 {
		c.DeregistrationDelay = config.Duration(30 * time.Second)
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = config.Duration(3 * time.Second)
	}
	if c.Stickiness.Cookie == "" {
		c.Stickiness.Cookie = "lbd_sticky"
	}
	if c.Stickiness.Duration == 0 {
		c.Stickiness.Duration = config.Duration(time.Hour)
	}
	if c.PassiveHealth.ConsecutiveFailures == 0 {
		c.PassiveHealth.ConsecutiveFailures = 5
	}
	if c.PassiveHealth.EjectFor == 0 {
		c.PassiveHealth.EjectFor = config.Duration(10 * time.Second)
	}
	ts := make([]TargetConfig, len(c.Targets))
	for i, t := range c.Targets {
		if t.Weight == 0 {
			t.Weight = 1
		}
		ts[i] = t
	}
	c.Targets = ts
	return c
}

// Validate reports every problem of a group (after defaults).
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Name == "" {
		errs = append(errs, config.Errorf("name", "required"))
	}
	switch c.Protocol {
	case ProtoHTTP, ProtoHTTPS, ProtoTCP, ProtoUDP:
	default:
		errs = append(errs, config.Errorf("protocol", "unknown protocol %q (want http, https, tcp or udp)", c.Protocol))
	}
	switch c.ProtocolVersion {
	case "", VersionHTTP1:
	case VersionHTTP2, VersionGRPC:
		if c.Protocol != ProtoHTTP && c.Protocol != ProtoHTTPS {
			errs = append(errs, config.Errorf("protocol_version", "%s needs an http or https group, not %s", c.ProtocolVersion, c.Protocol))
		}
	default:
		errs = append(errs, config.Errorf("protocol_version", "unknown protocol version %q (want http1, http2 or grpc)", c.ProtocolVersion))
	}
	switch c.Algorithm {
	case RoundRobin, LeastOutstandingRequests, WeightedRandom:
	default:
		errs = append(errs, config.Errorf("algorithm", "unknown algorithm %q (want round_robin, least_outstanding_requests or weighted_random)", c.Algorithm))
	}
	seen := map[string]bool{}
	for i, t := range c.Targets {
		f := "targets[" + strconv.Itoa(i) + "]"
		if err := ValidateTarget(t); err != nil {
			errs = append(errs, config.Nest(f, err))
		}
		if seen[t.Address] {
			errs = append(errs, config.Errorf(f+".address", "duplicate target %q", t.Address))
		}
		seen[t.Address] = true
	}
	if c.SlowStart < 0 {
		errs = append(errs, config.Errorf("slow_start", "must not be negative"))
	}
	if c.DeregistrationDelay < 0 {
		errs = append(errs, config.Errorf("deregistration_delay", "must not be negative"))
	}
	if c.ConnectTimeout < 0 {
		errs = append(errs, config.Errorf("connect_timeout", "must not be negative"))
	}
	if c.Stickiness.Enabled && c.Protocol != ProtoHTTP && c.Protocol != ProtoHTTPS {
		errs = append(errs, config.Errorf("stickiness.enabled", "cookie stickiness needs an http or https group"))
	}
	if c.PassiveHealth.ConsecutiveFailures < 0 {
		errs = append(errs, config.Errorf("passive_health.consecutive_failures", "must not be negative"))
	}
	if !c.HealthCheck.Disabled {
		// Validate the check as it would be built for a sample target.
		if cc, ok := c.checkConfig("192.0.2.1:80"); ok {
			errs = append(errs, config.Nest("health_check", mapCheckErrors(cc.Validate())))
		} else if c.HealthCheck.Protocol != "" {
			errs = append(errs, config.Errorf("health_check.protocol", "unknown protocol %q (want http, https, grpc, grpcs or tcp)", c.HealthCheck.Protocol))
		}
	}
	return errors.Join(errs...)
}

// HTTP2 reports whether the group speaks HTTP/2 to its targets
// (protocol_version http2 or grpc).
func (c Config) HTTP2() bool {
	return c.ProtocolVersion == VersionHTTP2 || c.ProtocolVersion == VersionGRPC
}

// ValidateTarget checks one target.
func ValidateTarget(t TargetConfig) error {
	var errs []error
	host, port, err := net.SplitHostPort(t.Address)
	if err != nil || host == "" {
		errs = append(errs, config.Errorf("address", "want host:port, got %q", t.Address))
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		errs = append(errs, config.Errorf("address", "port must be 1..65535, got %q", port))
	}
	if t.Weight < 0 || t.Weight > 1000 {
		errs = append(errs, config.Errorf("weight", "must be 0..1000, got %d", t.Weight))
	}
	return errors.Join(errs...)
}

// mapCheckErrors renames the health engine's field names to ours.
func mapCheckErrors(err error) error {
	rename := map[string]string{"expected_status": "matcher", "expected_grpc_status": "matcher", "kind": "protocol", "address": "port"}
	var out []error
	for _, e := range config.Flatten(err) {
		var fe *config.FieldError
		if errors.As(e, &fe) {
			if n, ok := rename[fe.Field]; ok {
				out = append(out, &config.FieldError{Field: n, Err: fe.Err})
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// checkConfig builds the health engine's check of target addr; ok is false
// when the group has no active check.
func (c Config) checkConfig(addr string) (health.CheckConfig, bool) {
	hc := c.HealthCheck
	if hc.Disabled {
		return health.CheckConfig{}, false
	}
	kind := hc.Protocol
	if kind == "" {
		switch {
		case c.ProtocolVersion == VersionGRPC && c.Protocol == ProtoHTTPS:
			kind = string(health.KindGRPCS) // grpc.health.v1, as ALB checks gRPC groups
		case c.ProtocolVersion == VersionGRPC:
			kind = string(health.KindGRPC)
		case c.HTTP2():
			// The health engine's http checks are HTTP/1.1, which an
			// HTTP/2-only target does not answer, and a plain HTTP/2
			// target need not implement gRPC health.
			kind = "tcp"
		case c.Protocol == ProtoHTTP:
			kind = "http"
		case c.Protocol == ProtoHTTPS:
			kind = "https"
		case c.Protocol == ProtoTCP:
			kind = "tcp"
		default:
			return health.CheckConfig{}, false
		}
	}
	switch health.Kind(kind) {
	case health.KindHTTP, health.KindHTTPS, health.KindTCP, health.KindGRPC, health.KindGRPCS:
	default:
		return health.CheckConfig{}, false
	}
	if hc.Port != 0 {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			addr = net.JoinHostPort(h, strconv.Itoa(hc.Port))
		}
	}
	cc := health.CheckConfig{
		Kind:               health.Kind(kind),
		Address:            addr,
		Interval:           hc.Interval,
		Timeout:            hc.Timeout,
		HealthyThreshold:   hc.HealthyThreshold,
		UnhealthyThreshold: hc.UnhealthyThreshold,
	}
	switch health.Kind(kind) {
	case health.KindHTTP, health.KindHTTPS:
		cc.Path, cc.Host, cc.ExpectedStatus = hc.Path, hc.Host, hc.Matcher
	case health.KindGRPC, health.KindGRPCS:
		cc.Path, cc.Host, cc.ExpectedGRPCStatus = hc.Path, hc.Host, hc.Matcher
	}
	// Set for every kind, so the engine names it when it does not apply.
	cc.GRPCService = hc.GRPCService
	cc.InsecureSkipVerify = (kind == "https" || kind == "grpcs") && c.InsecureSkipVerify
	return cc, true
}

// checkID names a target's check in the health engine.
func checkID(group, addr string) string { return fmt.Sprintf("tg/%s/%s", group, addr) }
