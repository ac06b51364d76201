// Package origin holds the places edged fetches from: HTTP(S) origins with a
// pooled transport, the bucket origin (a local folder served as a static
// site) and origin groups that fail over on connection errors or chosen
// status codes. Every origin is an http.RoundTripper.
package origin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Origin is a place to fetch from.
type Origin interface {
	http.RoundTripper
	// Name is the origin's config name (for logs, metrics, X-Cache).
	Name() string
}

// HTTPOptions configure an HTTP origin.
type HTTPOptions struct {
	Name string
	// URL is the origin's base, e.g. http://10.0.0.5:8080 or
	// https://origin.example.test/prefix. A path prefix is prepended to
	// every request path.
	URL string
	// HostHeader sets the Host sent to the origin; empty sends the URL's
	// host; "viewer" forwards the viewer's Host.
	HostHeader string
	// ConnectTimeout bounds dialing (and TLS). ResponseTimeout bounds the
	// wait for response headers after the request is written.
	ConnectTimeout, ResponseTimeout time.Duration
	// IdleTimeout closes pooled connections idle this long.
	IdleTimeout time.Duration
	// MaxConnsPerHost caps connections (0: no cap); MaxIdleConns caps the
	// idle pool.
	MaxConnsPerHost, MaxIdleConns int
	// InsecureSkipVerify disables TLS verification (tests, self-signed
	// private origins).
	InsecureSkipVerify bool
}

// HTTP is an HTTP(S) origin with its own pooled transport.
type HTTP struct {
	name   string
	base   *url.URL
	host   string
	viewer bool
	tr     http.RoundTripper
	close  func() // drops idle pooled connections
	// up carries upgrade requests (WebSocket): net/http's transport hands
	// back a 101's connection as the response body. HTTP/1.1 only, since
	// an upgrade cannot ride HTTP/2.
	up *http.Transport
	// rawGet: SendGet works (the lean transport, and a base path that
	// needs no escaping, so it goes out as it is, as RoundTrip sends it).
	rawGet bool
}

// NewHTTP builds an HTTP origin.
func NewHTTP(o HTTPOptions) (*HTTP, error) {
	u, err := ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("origin %q: %w", o.Name, err)
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 90 * time.Second
	}
	if o.MaxIdleConns <= 0 {
		o.MaxIdleConns = 256
	}
	d := &net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second}
	h := &HTTP{name: o.Name, base: u, host: o.HostHeader}
	if u.Scheme == "http" && o.MaxConnsPerHost == 0 {
		h1 := newH1Transport(u.Host, d, o.IdleTimeout, o.MaxIdleConns, o.ResponseTimeout)
		h.tr, h.close = h1, h1.pool.CloseIdle
		h.rawGet = u.EscapedPath() == u.Path
	} else {
		tr := &http.Transport{
			Proxy:                  nil,
			DialContext:            d.DialContext,
			ForceAttemptHTTP2:      true,
			MaxIdleConns:           o.MaxIdleConns,
			MaxIdleConnsPerHost:    o.MaxIdleConns,
			MaxConnsPerHost:        o.MaxConnsPerHost,
			IdleConnTimeout:        o.IdleTimeout,
			TLSHandshakeTimeout:    o.ConnectTimeout,
			ResponseHeaderTimeout:  o.ResponseTimeout,
			ExpectContinueTimeout:  time.Second,
			DisableCompression:     true, // the edge compresses; bodies pass as they are
			MaxResponseHeaderBytes: 64 << 10,
		}
		if o.InsecureSkipVerify {
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opt-in for private origins
		}
		h.tr, h.close = tr, tr.CloseIdleConnections
	}
	h.up = &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		TLSHandshakeTimeout:    o.ConnectTimeout,
		ResponseHeaderTimeout:  o.ResponseTimeout,
		DisableCompression:     true,
		DisableKeepAlives:      true, // an upgrade is one connection's whole life
		MaxResponseHeaderBytes: 64 << 10,
		TLSNextProto:           map[string]func(string, *tls.Conn) http.RoundTripper{}, // no HTTP/2
	}
	if o.InsecureSkipVerify {
		h.up.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opt-in for private origins
	}
	if o.HostHeader == "viewer" {
		h.viewer, h.host = true, ""
	}
	return h, nil
}

// ParseURL accepts a URL or a bare host:port (taken as http).
func ParseURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("url %q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("url %q: no host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("url %q: no query or fragment allowed", s)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Name returns the origin's name.
func (h *HTTP) Name() string { return h.name }

// Addr is the origin's host:port as configured.
func (h *HTTP) Addr() string { return h.base.Host }

// RoundTrip sends req (an outgoing request built by the edge, owned by the
// caller) to the origin, rewriting its URL and Host.
func (h *HTTP) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.tr.RoundTrip(h.target(req))
	if err != nil {
		return nil, fmt.Errorf("origin %q: %w", h.name, err)
	}
	return resp, nil
}

// Upgrade sends an upgrade request (WebSocket) on a connection of its own.
// On 101 the response body is that connection, an io.ReadWriteCloser the
// caller copies both ways and closes.
func (h *HTTP) Upgrade(req *http.Request) (*http.Response, error) {
	resp, err := h.up.RoundTrip(h.target(req))
	if err != nil {
		return nil, fmt.Errorf("origin %q: %w", h.name, err)
	}
	return resp, nil
}

// target is req aimed at the origin: its URL and Host rewritten.
func (h *HTTP) target(req *http.Request) *http.Request {
	// A shallow copy: only the URL and Host change (a group may send req
	// to its next member).
	out := req.WithContext(req.Context())
	u := *req.URL
	out.URL = &u
	out.URL.Scheme = h.base.Scheme
	out.URL.Host = h.base.Host
	if h.base.Path != "" {
		out.URL.Path = h.base.Path + req.URL.Path
		if req.URL.RawPath != "" {
			out.URL.RawPath = h.base.Path + req.URL.RawPath
		}
	}
	switch {
	case h.viewer:
		out.Host = req.Host
	case h.host != "":
		out.Host = h.host
	default:
		out.Host = h.base.Host
	}
	out.RequestURI = ""
	return out
}

// Lean reports whether SendGet works: the origin is plain HTTP on the
// lean transport, and its base path needs no escaping.
func (h *HTTP) Lean() bool { return h.rawGet }

// SendGet sends a body-less GET whose head the caller builds, for the
// edge's pass relay: it appends to buf the request line for path and
// query (path as the viewer sent it, made only of characters that need no
// escaping), the Host line for the viewer's host and Go's User-Agent line,
// then hdr (complete lines, in the order req.Write would sort them) and
// the blank line: byte for byte what RoundTrip sends for the same request
// built as an http.Request (TestSendGetMatchesRoundTrip). ok is false,
// and nothing is sent, unless Lean. With take, the answer may come back
// raw (Raw.Taken) instead of as resp.
func (h *HTTP) SendGet(buf *[]byte, path, query, viewerHost string, hdr []byte, deadline time.Time, take Taker) (resp *http.Response, raw Raw, ok bool, err error) {
	t, ok := h.tr.(*h1Transport)
	if !ok || !h.rawGet {
		return nil, Raw{}, false, nil
	}
	b := append((*buf)[:0], "GET "...)
	b = append(b, h.base.Path...)
	b = append(b, path...)
	if query != "" {
		b = append(b, '?')
		b = append(b, query...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	switch {
	case h.viewer:
		b = append(b, viewerHost...)
	case h.host != "":
		b = append(b, h.host...)
	default:
		b = append(b, h.base.Host...)
	}
	b = append(b, "\r\nUser-Agent: Go-http-client/1.1\r\n"...)
	b = append(b, hdr...)
	b = append(b, "\r\n"...)
	*buf = b
	resp, raw, err = t.sendRaw(b, deadline, take)
	if err != nil {
		return nil, Raw{}, true, fmt.Errorf("origin %q: %w", h.name, err)
	}
	return resp, raw, true, nil
}

// Close drops pooled connections.
func (h *HTTP) Close() { h.close() }

// Upgrader is an origin that takes upgrade requests (HTTP origins and
// groups of them; a bucket does not).
type Upgrader interface {
	Upgrade(req *http.Request) (*http.Response, error)
}

// GroupOptions configure an origin group.
type GroupOptions struct {
	Name string
	// Members are tried in order.
	Members []Origin
	// FailoverStatus lists the origin status codes that make the group try
	// the next member (connection errors always do).
	FailoverStatus []int
}

// Group fails over from one origin to the next, for GET, HEAD and OPTIONS
// only (as CloudFront does); other methods go to the first member.
type Group struct {
	name    string
	members []Origin
	status  []int
}

// NewGroup builds a group.
func NewGroup(o GroupOptions) (*Group, error) {
	if len(o.Members) == 0 {
		return nil, fmt.Errorf("origin group %q: no members", o.Name)
	}
	return &Group{name: o.Name, members: o.Members, status: o.FailoverStatus}, nil
}

// Name returns the group's name.
func (g *Group) Name() string { return g.name }

// RoundTrip tries each member in turn.
func (g *Group) RoundTrip(req *http.Request) (*http.Response, error) {
	idempotent := req.Method == http.MethodGet || req.Method == http.MethodHead || req.Method == http.MethodOptions
	var errs []error
	for i, m := range g.members {
		last := i == len(g.members)-1 || !idempotent
		resp, err := m.RoundTrip(req)
		if err != nil {
			if errors.Is(err, context.Canceled) || last {
				return nil, errors.Join(append(errs, err)...)
			}
			errs = append(errs, err)
			continue
		}
		if !last && slices.Contains(g.status, resp.StatusCode) {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			errs = append(errs, fmt.Errorf("origin %q: status %d", m.Name(), resp.StatusCode))
			continue
		}
		return resp, nil
	}
	return nil, errors.Join(errs...)
}

// CloseIdle drops idle pooled connections (after a reload replaced it).
func (h *HTTP) CloseIdle() { h.close() }

// Upgrade sends an upgrade request to the first member that takes
// upgrades and can be reached, failing over on connection errors only
// (an answer, even an error status, is the origin's).
func (g *Group) Upgrade(req *http.Request) (*http.Response, error) {
	var errs []error
	for _, m := range g.members {
		u, ok := m.(Upgrader)
		if !ok {
			continue
		}
		resp, err := u.Upgrade(req)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, err)
		if errors.Is(err, context.Canceled) {
			break
		}
	}
	if len(errs) == 0 {
		return nil, ErrNoUpgrade
	}
	return nil, errors.Join(errs...)
}

// ErrNoUpgrade: no member of the group takes upgrade requests.
var ErrNoUpgrade = errors.New("no origin that takes upgrade requests")
