package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http2"
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

// errNoH2 is the failure of a TLS target that did not agree to HTTP/2.
var errNoH2 = errors.New("target did not negotiate HTTP/2 (ALPN h2)")

// newH2Transport returns the HTTP/2 transport of one upstream: d dials
// (its timeout is connect_timeout), tlsConf is nil for h2c. It is
// net/http's own HTTP/2 client, limited to HTTP/2 by Protocols.
func newH2Transport(d *net.Dialer, tlsConf *tls.Config, connect time.Duration) *http.Transport {
	t := &http.Transport{
		DisableCompression: true,
		IdleConnTimeout:    90 * time.Second,
		Protocols:          new(http.Protocols),
		// A target that vanished without a reset would otherwise hold its
		// streams (gRPC ones have no request timeout) until the kernel
		// gives up: a PING after 30 s of silence, 15 s to answer.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	if tlsConf == nil {
		t.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
		t.DialContext = d.DialContext
		return t
	}
	t.Protocols.SetHTTP2(true)
	base := tlsConf.Clone()
	// http/1.1 offered too, so that a target without HTTP/2 completes
	// the handshake (rather than refusing it) and is named as such.
	base.NextProtos = []string{http2.NextProtoTLS, "http/1.1"}
	t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := base.Clone()
		if host, _, err := net.SplitHostPort(addr); err == nil && cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, connect)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
			_ = tc.Close()
			return nil, fmt.Errorf("%w: %s offered %q", errNoH2, addr, p)
		}
		return tc, nil
	}
	return t
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
