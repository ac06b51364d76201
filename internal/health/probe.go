package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
)

// prober runs one probe. It returns "" and nil on success; on failure a
// Reason from the closed set and an error describing what went wrong.
// statusCode is the HTTP status received, if any.
type prober interface {
	probe(ctx context.Context) (statusCode int, reason Reason, err error)
}

// userAgent is sent with every HTTP probe.
const userAgent = "edgestack-health/1"

// maxDrain is how much of a response body beyond BodyLimit is read and
// discarded so the connection can be reused; a longer body closes the
// connection instead.
const maxDrain = 64 << 10

// httpProber probes one URL.
type httpProber struct {
	rt     http.RoundTripper
	url    string
	host   string // Host header override, or ""
	status StatusRanges
	body   []byte     // substring to find, or nil
	bufs   *sync.Pool // of *[BodyLimit]byte, shared by the engine's probers
}

func (p *httpProber) probe(ctx context.Context) (int, Reason, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return 0, ReasonOther, fmt.Errorf("build request for %s: %w", p.url, err)
	}
	if p.host != "" {
		req.Host = p.host
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := p.rt.RoundTrip(req)
	if err != nil {
		return 0, classify(ctx, err), fmt.Errorf("GET %s: %w", p.url, err)
	}
	defer func() {
		// Drain a little so the connection can be reused; Close tears it down
		// if more is left.
		_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
		_ = resp.Body.Close()
	}()
	if !p.status.Contains(resp.StatusCode) {
		return resp.StatusCode, ReasonStatus, fmt.Errorf("GET %s: status %d, want %s", p.url, resp.StatusCode, p.status)
	}
	if p.body == nil {
		return resp.StatusCode, "", nil
	}
	buf := p.bufs.Get().(*[BodyLimit]byte)
	defer p.bufs.Put(buf)
	n, err := io.ReadFull(resp.Body, buf[:])
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return resp.StatusCode, classify(ctx, err), fmt.Errorf("GET %s: read body: %w", p.url, err)
	}
	if !bytes.Contains(buf[:n], p.body) {
		return resp.StatusCode, ReasonBody, fmt.Errorf("GET %s: %q not found in the first %d bytes of the body", p.url, p.body, BodyLimit)
	}
	return resp.StatusCode, "", nil
}

// tcpProber connects to an address and closes the connection.
type tcpProber struct {
	dialer *net.Dialer
	addr   string
}

func (p *tcpProber) probe(ctx context.Context) (int, Reason, error) {
	conn, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return 0, classify(ctx, err), fmt.Errorf("connect %s: %w", p.addr, err)
	}
	// Close with RST rather than FIN so the prober does not accumulate
	// TIME_WAIT sockets at thousands of probes a second (as HAProxy does).
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
	return 0, "", nil
}

// classify maps a probe error to a Reason.
func classify(ctx context.Context, err error) Reason {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return ReasonDNS
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ReasonTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReasonTimeout
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return ReasonRefused
	}
	if isTLSError(err) {
		return ReasonTLS
	}
	return ReasonOther
}

func isTLSError(err error) bool {
	var (
		certErr     *tls.CertificateVerificationError
		recErr      tls.RecordHeaderError
		alertErr    tls.AlertError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidErr  x509.CertificateInvalidError
		echErr      *tls.ECHRejectionError
	)
	switch {
	case errors.As(err, &certErr), errors.As(err, &recErr), errors.As(err, &alertErr),
		errors.As(err, &unknownAuth), errors.As(err, &hostErr), errors.As(err, &invalidErr),
		errors.As(err, &echErr):
		return true
	}
	// Handshake failures without a typed error ("tls: handshake failure",
	// "tls: first record does not look like a TLS handshake").
	return strings.Contains(err.Error(), "tls: ")
}
