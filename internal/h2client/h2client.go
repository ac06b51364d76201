// Package h2client builds HTTP/2-only clients for talking to targets:
// cleartext HTTP/2 with prior knowledge (h2c), or HTTP/2 over TLS where a
// target that does not agree to "h2" in ALPN is refused by name rather
// than spoken to in HTTP/1.1. It is net/http's own HTTP/2 client
// (http.Transport limited by Protocols); lbd forwards to http2/grpc target
// groups with it and the health engine sends its gRPC probes with it.
package h2client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ErrNoH2 is the dial error of a TLS target that did not negotiate HTTP/2.
var ErrNoH2 = errors.New("did not negotiate HTTP/2 (ALPN h2)")

// Options configure New. Zero durations mean net/http's defaults (no
// pings, no idle limit, no handshake bound beyond the request's context).
type Options struct {
	// Dial opens the TCP connection. Required.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS, when set, makes the transport speak HTTP/2 over TLS with this
	// config (NextProtos is replaced; ServerName defaults to the host of
	// the address dialled). Nil: h2c.
	TLS *tls.Config
	// HandshakeTimeout bounds the TLS handshake.
	HandshakeTimeout time.Duration
	// IdleConnTimeout closes connections idle this long.
	IdleConnTimeout time.Duration
	// SendPingTimeout: after this long without a frame from the target,
	// a PING is sent; PingTimeout: how long it may take to answer before
	// the connection is closed.
	SendPingTimeout, PingTimeout time.Duration
	// MaxResponseHeaderBytes bounds response headers (0: net/http's).
	MaxResponseHeaderBytes int64
}

// New returns an HTTP/2-only transport.
func New(o Options) *http.Transport {
	t := &http.Transport{
		DisableCompression:     true,
		IdleConnTimeout:        o.IdleConnTimeout,
		MaxResponseHeaderBytes: o.MaxResponseHeaderBytes,
		Protocols:              new(http.Protocols),
		HTTP2:                  &http.HTTP2Config{SendPingTimeout: o.SendPingTimeout, PingTimeout: o.PingTimeout},
	}
	if o.TLS == nil {
		t.Protocols.SetUnencryptedHTTP2(true) // prior knowledge
		t.DialContext = o.Dial
		return t
	}
	t.Protocols.SetHTTP2(true)
	base := o.TLS.Clone()
	// http/1.1 offered too, so that a target without HTTP/2 completes the
	// handshake (rather than failing it) and is named as such.
	base.NextProtos = []string{"h2", "http/1.1"}
	t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := o.Dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := base.Clone()
		if host, _, err := net.SplitHostPort(addr); err == nil && cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		hctx, cancel := ctx, context.CancelFunc(func() {})
		if o.HandshakeTimeout > 0 {
			hctx, cancel = context.WithTimeout(ctx, o.HandshakeTimeout)
		}
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			_ = tc.Close()
			return nil, fmt.Errorf("%w: %s negotiated ALPN %q", ErrNoH2, addr, p)
		}
		return tc, nil
	}
	return t
}
