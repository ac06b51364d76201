// Package health is edgestack's health-check engine, shared by dnsd
// (health-checked DNS records, Route 53 style) and lbd (target groups, ALB
// style).
//
// An Engine holds any number of checks, each identified by a string ID and
// described by a CheckConfig. Probing checks (http, https, tcp, grpc, grpcs)
// are run by one scheduler — a min-heap of next-run times — feeding a
// bounded pool of probe goroutines; calculated checks combine the states of other checks. Every
// check starts Unknown and moves between Healthy and Unhealthy after
// healthy_threshold consecutive successes or unhealthy_threshold consecutive
// failures. Consumers read states without blocking (State), get a fuller
// picture with Status and List, and are told of every change through
// Subscribe. See README.md for the configuration syntax, the state machine
// and the metrics.
package health

import (
	"strconv"
	"time"
)

// State is the health of a check as consumers see it (after inverted and
// disabled have been applied).
type State uint8

// The states of a check. The numeric values are also the values of the
// <ns>_health_check_state gauge.
const (
	// Unknown is the state of a check that has not yet reached a threshold
	// (or a calculated check whose outcome depends on unknown children).
	// Consumers decide how to treat it.
	Unknown State = iota
	// Healthy means the check passed.
	Healthy
	// Unhealthy means the check failed.
	Unhealthy
)

// String returns "unknown", "healthy" or "unhealthy".
func (s State) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	default:
		return "state(" + strconv.Itoa(int(s)) + ")"
	}
}

// MarshalText makes State appear as its name in JSON and YAML.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// inverted swaps Healthy and Unhealthy; Unknown stays Unknown.
func (s State) inverted() State {
	switch s {
	case Healthy:
		return Unhealthy
	case Unhealthy:
		return Healthy
	default:
		return s
	}
}

// Reason classifies a failed probe. The set is closed: these are the only
// values of the reason label of <ns>_health_probe_failures_total.
type Reason string

// The failure reasons.
const (
	// ReasonTimeout: the probe did not finish within the check's timeout.
	ReasonTimeout Reason = "timeout"
	// ReasonRefused: the connection was refused.
	ReasonRefused Reason = "refused"
	// ReasonStatus: the HTTP status code was not one of expected_status (not
	// 200, for grpc checks).
	ReasonStatus Reason = "status"
	// ReasonBody: body_contains was not found in the first 5,120 bytes.
	ReasonBody Reason = "body"
	// ReasonTLS: the TLS handshake or certificate verification failed.
	ReasonTLS Reason = "tls"
	// ReasonDNS: the address's host name could not be resolved.
	ReasonDNS Reason = "dns"
	// ReasonGRPCStatus: a gRPC answer's grpc-status was missing, malformed or
	// not one of expected_grpc_status.
	ReasonGRPCStatus Reason = "grpc_status"
	// ReasonNotServing: the grpc.health.v1 service answered, but not SERVING.
	ReasonNotServing Reason = "not_serving"
	// ReasonProtocol: the target does not speak HTTP/2, or its gRPC answer is
	// malformed.
	ReasonProtocol Reason = "protocol"
	// ReasonOther: any other failure (reset connection, malformed response, ...).
	ReasonOther Reason = "other"
)

// Reasons lists every Reason, in a fixed order.
func Reasons() []Reason {
	return []Reason{ReasonTimeout, ReasonRefused, ReasonStatus, ReasonBody, ReasonTLS, ReasonDNS,
		ReasonGRPCStatus, ReasonNotServing, ReasonProtocol, ReasonOther}
}

// Result is the outcome of one probe, or of one evaluation of a calculated
// check.
type Result struct {
	// At is when the probe started; zero when the check has no result yet.
	At time.Time
	// OK reports whether the probe succeeded (for a calculated check: whether
	// enough children were healthy). It is the raw outcome, before inverted.
	OK bool
	// Reason classifies a failed probe; empty when OK and for calculated
	// checks.
	Reason Reason
	// Error describes a failure; empty when OK.
	Error string
	// Duration is how long the probe took (zero for calculated checks).
	Duration time.Duration
	// StatusCode is the HTTP status code received, or 0.
	StatusCode int
}

// Status is a snapshot of one check.
type Status struct {
	// ID is the check's ID.
	ID string
	// Kind is the check's kind.
	Kind Kind
	// State is the state consumers see (after inverted and disabled).
	State State
	// LastResult is the most recent probe or evaluation; LastResult.At is zero
	// when there has been none.
	LastResult Result
	// LastError is the error text of the most recent failed probe, kept after
	// later successes; empty if no probe has failed.
	LastError string
	// LastErrorAt is when that failed probe started.
	LastErrorAt time.Time
	// LastChange is when State last changed (when the check was added, if it
	// never changed).
	LastChange time.Time
	// ConsecutiveSuccesses and ConsecutiveFailures count the raw probe
	// outcomes (before inverted) since the last outcome of the other kind;
	// for calculated checks, healthy and unhealthy evaluations.
	ConsecutiveSuccesses int
	ConsecutiveFailures  int
}

// Subscriber is told of every change of a check's State. Calls come from a
// single goroutine, never while the engine holds a lock, and in order for each
// check; a slow subscriber delays the others (events queue meanwhile). It may
// call the Engine's methods.
type Subscriber interface {
	HealthChanged(id string, from, to State)
}

// SubscriberFunc adapts a function to Subscriber.
type SubscriberFunc func(id string, from, to State)

// HealthChanged calls f.
func (f SubscriberFunc) HealthChanged(id string, from, to State) { f(id, from, to) }
