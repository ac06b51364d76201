// Package rules is lbd's L7 routing: listener rules with priorities,
// conditions (host with wildcards, path pattern, header, method, query
// string, source IP; all ANDed, the values of one condition ORed) and
// actions (forward to one or several weighted target groups, redirect,
// fixed response), compiled once per config into a Table that is matched
// without allocation.
package rules

import (
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/edgestack/edgestack/internal/config"
)

// Rule is one listener rule.
type Rule struct {
	// Priority orders rules, lowest first; unique per listener. Required
	// (1..50000).
	Priority int `yaml:"priority"`
	// Conditions that must all hold. At least one is required.
	Conditions Conditions `yaml:"conditions"`
	// Action taken when the conditions hold. Required.
	Action Action `yaml:"action"`
}

// Conditions of a rule. Every set condition must match (AND); within one,
// any value may match (OR). Patterns take * (any run of characters) and ?
// (one character).
type Conditions struct {
	// Host patterns matched case-insensitively against the Host header
	// without port, e.g. "*.example.com". Default: any.
	Host []string `yaml:"host"`
	// Path patterns matched case-sensitively against the URL path, e.g.
	// "/api/*". Default: any.
	Path []string `yaml:"path"`
	// Method names, e.g. GET. Default: any.
	Method []string `yaml:"method"`
	// Header conditions: a header whose value matches one of the patterns
	// (case-insensitive). Default: none.
	Header []HeaderMatch `yaml:"header"`
	// Query conditions: a key/value pair of the query string (patterns,
	// case-insensitive; empty key matches any key). Default: none.
	Query []QueryMatch `yaml:"query"`
	// SourceIP lists CIDRs (or addresses) of the client. Default: any.
	SourceIP []string `yaml:"source_ip"`
}

// HeaderMatch is one header condition.
type HeaderMatch struct {
	Name   string   `yaml:"name"`
	Values []string `yaml:"values"`
}

// QueryMatch is one query-string pair.
type QueryMatch struct {
	Key   string `yaml:"key"`
	Value string `yaml:"value"`
}

// Action is what a rule does; exactly one field is set.
type Action struct {
	Forward       *Forward       `yaml:"forward"`
	Redirect      *Redirect      `yaml:"redirect"`
	FixedResponse *FixedResponse `yaml:"fixed_response"`
}

// Forward sends the request to a target group, or to one of several by
// weight.
type Forward struct {
	// TargetGroup is the one group. Set this or TargetGroups.
	TargetGroup string `yaml:"target_group"`
	// TargetGroups splits requests by weight (0..999; all zero is an
	// error).
	TargetGroups []WeightedGroup `yaml:"target_groups"`
}

// WeightedGroup is a group with its share.
type WeightedGroup struct {
	Name   string `yaml:"name"`
	Weight int    `yaml:"weight"`
}

// Redirect answers with a redirect. Fields may use #{protocol}, #{host},
// #{port}, #{path} (without the leading slash) and #{query}; empty
// fields keep the request's value.
type Redirect struct {
	// Protocol: http, https or #{protocol}. Default #{protocol}.
	Protocol string `yaml:"protocol"`
	// Host. Default #{host}.
	Host string `yaml:"host"`
	// Port. Default #{port}.
	Port string `yaml:"port"`
	// Path, starting with "/". Default /#{path}.
	Path string `yaml:"path"`
	// Query without "?". Default #{query}.
	Query string `yaml:"query"`
	// StatusCode 301 or 302. Default 301.
	StatusCode int `yaml:"status_code"`
}

// FixedResponse answers directly.
type FixedResponse struct {
	// StatusCode 200..599. Required.
	StatusCode int `yaml:"status_code"`
	// ContentType. Default "text/plain; charset=utf-8".
	ContentType string `yaml:"content_type"`
	// Body, at most 1 KiB. Default empty.
	Body string `yaml:"body"`
}

// Validate checks an action; groupExists tells which groups exist.
func (a Action) Validate(groupExists func(string) bool) error {
	var errs []error
	n := 0
	if a.Forward != nil {
		n++
		f := a.Forward
		switch {
		case f.TargetGroup != "" && len(f.TargetGroups) > 0:
			errs = append(errs, config.Errorf("forward", "set target_group or target_groups, not both"))
		case f.TargetGroup != "":
			if !groupExists(f.TargetGroup) {
				errs = append(errs, config.Errorf("forward.target_group", "no target group named %q", f.TargetGroup))
			}
		case len(f.TargetGroups) > 0:
			total := 0
			for i, wg := range f.TargetGroups {
				p := "forward.target_groups[" + strconv.Itoa(i) + "]"
				if !groupExists(wg.Name) {
					errs = append(errs, config.Errorf(p+".name", "no target group named %q", wg.Name))
				}
				if wg.Weight < 0 || wg.Weight > 999 {
					errs = append(errs, config.Errorf(p+".weight", "must be 0..999, got %d", wg.Weight))
				}
				total += wg.Weight
			}
			if total == 0 {
				errs = append(errs, config.Errorf("forward.target_groups", "weights must not all be zero"))
			}
		default:
			errs = append(errs, config.Errorf("forward", "target_group or target_groups is required"))
		}
	}
	if r := a.Redirect; r != nil {
		n++
		switch r.Protocol {
		case "", "http", "https", "#{protocol}":
		default:
			errs = append(errs, config.Errorf("redirect.protocol", "want http, https or #{protocol}, got %q", r.Protocol))
		}
		switch r.StatusCode {
		case 0, 301, 302, 303, 307, 308:
		default:
			errs = append(errs, config.Errorf("redirect.status_code", "want 301, 302, 303, 307 or 308, got %d", r.StatusCode))
		}
		if r.Path != "" && !strings.HasPrefix(r.Path, "/") {
			errs = append(errs, config.Errorf("redirect.path", "must start with /, got %q", r.Path))
		}
		if strings.ContainsAny(r.Host+r.Port+r.Path+r.Query, "\r\n") {
			errs = append(errs, config.Errorf("redirect", "control characters"))
		}
	}
	if fr := a.FixedResponse; fr != nil {
		n++
		if fr.StatusCode < 200 || fr.StatusCode > 599 {
			errs = append(errs, config.Errorf("fixed_response.status_code", "must be 200..599, got %d", fr.StatusCode))
		}
		if len(fr.Body) > 1024 {
			errs = append(errs, config.Errorf("fixed_response.body", "at most 1024 bytes, got %d", len(fr.Body)))
		}
	}
	if n != 1 {
		errs = append(errs, config.Errorf("", "exactly one of forward, redirect, fixed_response is required"))
	}
	return errors.Join(errs...)
}

// Validate checks a rule.
func (r Rule) Validate(groupExists func(string) bool) error {
	var errs []error
	if r.Priority < 1 || r.Priority > 50000 {
		errs = append(errs, config.Errorf("priority", "must be 1..50000, got %d", r.Priority))
	}
	c := r.Conditions
	if len(c.Host)+len(c.Path)+len(c.Method)+len(c.Header)+len(c.Query)+len(c.SourceIP) == 0 {
		errs = append(errs, config.Errorf("conditions", "at least one condition is required"))
	}
	for i, h := range c.Host {
		if h == "" || strings.ContainsAny(h, " /\r\n") {
			errs = append(errs, config.Errorf("conditions.host["+strconv.Itoa(i)+"]", "invalid host pattern %q", h))
		}
	}
	for i, p := range c.Path {
		if !strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "*") {
			errs = append(errs, config.Errorf("conditions.path["+strconv.Itoa(i)+"]", "must start with / or *, got %q", p))
		}
	}
	for i, m := range c.Method {
		if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " \t\r\n") {
			errs = append(errs, config.Errorf("conditions.method["+strconv.Itoa(i)+"]", "want an upper-case method name, got %q", m))
		}
	}
	for i, h := range c.Header {
		if h.Name == "" || strings.ContainsAny(h.Name, " :\t\r\n") {
			errs = append(errs, config.Errorf("conditions.header["+strconv.Itoa(i)+"].name", "invalid header name %q", h.Name))
		}
		if len(h.Values) == 0 {
			errs = append(errs, config.Errorf("conditions.header["+strconv.Itoa(i)+"].values", "at least one value is required"))
		}
	}
	for i, q := range c.Query {
		if q.Value == "" {
			errs = append(errs, config.Errorf("conditions.query["+strconv.Itoa(i)+"].value", "required"))
		}
	}
	for i, s := range c.SourceIP {
		if _, err := parsePrefix(s); err != nil {
			errs = append(errs, config.Errorf("conditions.source_ip["+strconv.Itoa(i)+"]", "%v", err))
		}
	}
	errs = append(errs, config.Nest("action", r.Action.Validate(groupExists)))
	return errors.Join(errs...)
}

// ValidateRules checks a listener's rules, including unique priorities.
func ValidateRules(rs []Rule, groupExists func(string) bool) error {
	var errs []error
	seen := map[int]bool{}
	for i, r := range rs {
		p := "[" + strconv.Itoa(i) + "]"
		errs = append(errs, config.Nest(p, r.Validate(groupExists)))
		if seen[r.Priority] {
			errs = append(errs, config.Errorf(p+".priority", "duplicate priority %d", r.Priority))
		}
		seen[r.Priority] = true
	}
	return errors.Join(errs...)
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Compiled is a rule ready to match.
type Compiled struct {
	Rule     Rule
	hosts    []string // lower-cased patterns
	paths    []string
	methods  []string
	headers  []compiledHeader
	queries  []QueryMatch
	prefixes []netip.Prefix
}

type compiledHeader struct {
	name   string // canonical
	values []string
}

// Table is a listener's compiled rules, in priority order.
type Table struct {
	Rules       []*Compiled
	needHeaders bool
}

// NeedsHeaders reports whether some rule has a header condition (so the
// request's headers must be passed to Match).
func (t *Table) NeedsHeaders() bool { return t.needHeaders }

// Compile builds a Table from validated rules.
func Compile(rs []Rule) *Table {
	t := &Table{}
	for _, r := range rs {
		c := &Compiled{Rule: r, paths: r.Conditions.Path, methods: r.Conditions.Method}
		for _, h := range r.Conditions.Host {
			c.hosts = append(c.hosts, strings.ToLower(h))
		}
		for _, h := range r.Conditions.Header {
			ch := compiledHeader{name: http.CanonicalHeaderKey(h.Name)}
			for _, v := range h.Values {
				ch.values = append(ch.values, strings.ToLower(v))
			}
			c.headers = append(c.headers, ch)
		}
		for _, q := range r.Conditions.Query {
			c.queries = append(c.queries, QueryMatch{Key: strings.ToLower(q.Key), Value: strings.ToLower(q.Value)})
		}
		for _, s := range r.Conditions.SourceIP {
			if p, err := parsePrefix(s); err == nil {
				c.prefixes = append(c.prefixes, p)
			}
		}
		t.Rules = append(t.Rules, c)
		t.needHeaders = t.needHeaders || len(c.headers) > 0
	}
	sort.SliceStable(t.Rules, func(i, j int) bool { return t.Rules[i].Rule.Priority < t.Rules[j].Rule.Priority })
	return t
}

// Request is what rules look at.
type Request struct {
	Host     string // without port
	Path     string
	Method   string
	RawQuery string
	Header   http.Header
	Source   netip.Addr
}

// Match returns the first rule (by priority) whose conditions hold, or
// nil.
func (t *Table) Match(r *Request) *Compiled {
	for _, c := range t.Rules {
		if c.Match(r) {
			return c
		}
	}
	return nil
}

// Match reports whether every condition of c holds for r.
func (c *Compiled) Match(r *Request) bool {
	if len(c.hosts) > 0 && !anyGlob(c.hosts, r.Host, true) {
		return false
	}
	if len(c.paths) > 0 && !anyGlob(c.paths, r.Path, false) {
		return false
	}
	if len(c.methods) > 0 {
		ok := false
		for _, m := range c.methods {
			if m == r.Method {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, h := range c.headers {
		ok := false
		for _, v := range r.Header[h.name] {
			if anyGlob(h.values, v, true) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(c.queries) > 0 {
		q, _ := url.ParseQuery(r.RawQuery)
		ok := false
		for _, want := range c.queries {
			for k, vs := range q {
				if want.Key != "" && !Glob(want.Key, strings.ToLower(k), false) {
					continue
				}
				for _, v := range vs {
					if Glob(want.Value, strings.ToLower(v), false) {
						ok = true
					}
				}
			}
		}
		if !ok {
			return false
		}
	}
	if len(c.prefixes) > 0 {
		ok := false
		src := r.Source.Unmap()
		for _, p := range c.prefixes {
			if p.Contains(src) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func anyGlob(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		if Glob(p, s, fold) {
			return true
		}
	}
	return false
}

// Glob matches s against pattern with * (any run, including "/" and
// empty) and ? (exactly one byte). With fold, ASCII letters of s compare
// case-insensitively (the pattern must be lower case).
func Glob(pattern, s string, fold bool) bool {
	px, sx := 0, 0
	nextPx, nextSx := -1, -1
	for px < len(pattern) || sx < len(s) {
		if px < len(pattern) {
			c := pattern[px]
			switch c {
			case '*':
				nextPx, nextSx = px, sx+1
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			default:
				if sx < len(s) {
					d := s[sx]
					if fold && 'A' <= d && d <= 'Z' {
						d += 'a' - 'A'
					}
					if c == d {
						px++
						sx++
						continue
					}
				}
			}
		}
		if nextSx > 0 && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}
