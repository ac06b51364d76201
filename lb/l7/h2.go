package l7

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/edgestack/edgestack/internal/h2client"
)

// HTTP/2 to targets: target groups with protocol_version http2 or grpc
// are forwarded by httputil.ReverseProxy over an x/net/http2 Transport —
// h2c with prior knowledge for http groups, TLS with ALPN "h2" for https
// groups — wrapped in the same retrier as HTTP/1.1 groups (in-flight
// counts, passive health, retries on connection failures).

// StatusIncompatibleProtocol is ALB's 464: the request's protocol does not
// fit the target group's protocol version (an upgrade to an HTTP/2 group,
// a request that is not gRPC to a grpc group).
const StatusIncompatibleProtocol = 464

// newH2Transport returns the HTTP/2 transport of one upstream: d dials
// (its timeout is connect_timeout, which also bounds the TLS handshake),
// tlsConf is nil for h2c.
func newH2Transport(d *net.Dialer, tlsConf *tls.Config, connect time.Duration) *http.Transport {
	return h2client.New(h2client.Options{
		Dial: d.DialContext, TLS: tlsConf, HandshakeTimeout: connect,
		IdleConnTimeout: 90 * time.Second,
		// A target that vanished without a reset would otherwise hold its
		// streams (gRPC ones have no request timeout) until the kernel
		// gives up: a PING after 30 s of silence, 15 s to answer.
		SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second,
	})
}

// h2ByTarget is an HTTP/2 transport per target address: http.Transport
// cannot close one host's connections, and a target that left its group
// should not keep an idle connection (with its PINGs) for the idle
// timeout.
type h2ByTarget struct {
	m   sync.Map // target address -> *http.Transport
	new func() *http.Transport
}

func (h *h2ByTarget) RoundTrip(r *http.Request) (*http.Response, error) {
	host := r.URL.Host
	if tr, ok := h.m.Load(host); ok {
		return tr.(*http.Transport).RoundTrip(r)
	}
	tr, _ := h.m.LoadOrStore(host, h.new())
	return tr.(*http.Transport).RoundTrip(r)
}

// drop closes the idle connections to addr and forgets its transport.
// Streams still open on it finish (deregistration waits for them, up to
// its delay); a connection they kept busy then closes after the idle
// timeout.
func (h *h2ByTarget) drop(addr string) {
	if tr, ok := h.m.LoadAndDelete(addr); ok {
		tr.(*http.Transport).CloseIdleConnections()
	}
}

func (h *h2ByTarget) CloseIdleConnections() {
	h.m.Range(func(_, tr any) bool {
		tr.(*http.Transport).CloseIdleConnections()
		return true
	})
}

// incompatible says why r cannot go to this HTTP/2 upstream ("" if it
// can).
func (u *upstream) incompatible(r *http.Request) string {
	if r.ProtoMajor == 1 && r.Header.Get("Upgrade") != "" {
		// HTTP/2 has no Upgrade; WebSockets need an http1 group.
		return "protocol upgrades need a target group with protocol_version http1"
	}
	if u.grpc && !strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/grpc") {
		return "not a gRPC request (content-type application/grpc)"
	}
	return ""
}

// headerTimeout bounds the wait for a target's response headers, as
// http.Transport's ResponseHeaderTimeout does for HTTP/1.1 (the HTTP/2
// transport has none); the body then takes as long as it takes.
type headerTimeout struct {
	rt http.RoundTripper
	d  time.Duration
}

// errHeaderTimeout is a net.Error timeout: 504, and not retried.
type errHeaderTimeout struct{}

func (errHeaderTimeout) Error() string   { return "timeout awaiting response headers" }
func (errHeaderTimeout) Timeout() bool   { return true }
func (errHeaderTimeout) Temporary() bool { return true }

func (t *headerTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(t.d, func() { cancel(errHeaderTimeout{}) })
	resp, err := t.rt.RoundTrip(req.WithContext(ctx))
	if !timer.Stop() {
		// Fired: the headers came too late, or not at all.
		if err == nil {
			_ = resp.Body.Close()
		}
		cancel(nil)
		return nil, errHeaderTimeout{}
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody ends its request's context once the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}
