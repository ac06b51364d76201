package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgestack/edgestack/internal/h2client"
)

// gRPC checks speak just enough gRPC by hand — one unary call, one
// length-prefixed message each way, the grpc.health.v1 messages encoded
// and decoded directly — over x/net/http2's Transport, so the engine needs
// no gRPC or protobuf library.

// errNotHTTP2 is the failure of a target that does not speak HTTP/2: an
// HTTP/1.x answer to the h2c preface, or a TLS handshake without ALPN h2.
var errNotHTTP2 = errors.New("protocol: not HTTP/2")

// Health service serving statuses (grpc.health.v1.HealthCheckResponse.ServingStatus).
const (
	servingUnknown        = 0
	serving               = 1
	servingNotServing     = 2
	servingServiceUnknown = 3
)

// servingName names a serving status as the proto enum does.
func servingName(s int32) string {
	switch s {
	case servingUnknown:
		return "UNKNOWN"
	case serving:
		return "SERVING"
	case servingNotServing:
		return "NOT_SERVING"
	case servingServiceUnknown:
		return "SERVICE_UNKNOWN"
	default:
		return "serving status " + strconv.Itoa(int(s))
	}
}

// grpcCodeNames are the names of gRPC's status codes, for error messages.
var grpcCodeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
}

// maxGRPCMessage is how much of a grpc-message trailer goes into an error.
const maxGRPCMessage = 200

// grpcProber makes one unary gRPC call.
type grpcProber struct {
	rt     http.RoundTripper // an HTTP/2-only *http.Transport shared by the engine
	url    string
	host   string // :authority override, or ""
	codes  StatusRanges
	frame  []byte     // the request body: one gRPC message frame
	health bool       // grpc.health.v1 Check: the answer must say SERVING
	bufs   *sync.Pool // of *[BodyLimit]byte, shared by the engine's probers
}

func (p *grpcProber) probe(ctx context.Context) (int, Reason, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(p.frame))
	if err != nil {
		return 0, ReasonOther, fmt.Errorf("build request for %s: %w", p.url, err)
	}
	if p.host != "" {
		req.Host = p.host
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", userAgent)
	if dl, ok := ctx.Deadline(); ok {
		// Lets the server give up when we do.
		req.Header.Set("Grpc-Timeout", grpcTimeout(time.Until(dl)))
	}
	resp, err := p.rt.RoundTrip(req)
	if err != nil {
		return 0, classifyGRPC(ctx, err), fmt.Errorf("POST %s: %w", p.url, err)
	}
	// Closing an unread HTTP/2 body only resets the stream; the
	// connection stays usable.
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, ReasonStatus, fmt.Errorf("POST %s: HTTP %d, want 200", p.url, resp.StatusCode)
	}

	// The body must be read to its end for the trailers to arrive.
	var body []byte
	if p.health {
		buf := p.bufs.Get().(*[BodyLimit]byte)
		defer p.bufs.Put(buf)
		n, err := io.ReadFull(resp.Body, buf[:])
		switch {
		case err == nil:
			if _, err := io.ReadFull(resp.Body, make([]byte, 1)); err == nil {
				return resp.StatusCode, ReasonProtocol, fmt.Errorf("POST %s: protocol: response longer than %d bytes", p.url, BodyLimit)
			}
		case !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
			return resp.StatusCode, classifyGRPC(ctx, err), fmt.Errorf("POST %s: read response: %w", p.url, err)
		}
		body = buf[:n]
	} else {
		n, err := io.CopyN(io.Discard, resp.Body, maxDrain+1)
		if err != nil && !errors.Is(err, io.EOF) {
			return resp.StatusCode, classifyGRPC(ctx, err), fmt.Errorf("POST %s: read response: %w", p.url, err)
		}
		if n > maxDrain {
			return resp.StatusCode, ReasonProtocol, fmt.Errorf("POST %s: protocol: response longer than %d bytes", p.url, maxDrain)
		}
	}

	// grpc-status comes in the trailers, or in the headers of a
	// trailers-only response (an error without a message).
	raw, ok := resp.Trailer["Grpc-Status"]
	if !ok {
		raw, ok = resp.Header["Grpc-Status"]
	}
	if !ok || len(raw) == 0 {
		return resp.StatusCode, ReasonGRPCStatus, fmt.Errorf("POST %s: no grpc-status in the response", p.url)
	}
	code, err := strconv.Atoi(raw[0])
	if err != nil || code < 0 {
		return resp.StatusCode, ReasonGRPCStatus, fmt.Errorf("POST %s: malformed grpc-status %q", p.url, raw[0])
	}
	if !p.codes.Contains(code) {
		return resp.StatusCode, ReasonGRPCStatus, fmt.Errorf("POST %s: grpc-status %d%s, want %s", p.url, code, describeGRPC(code, resp), p.codes)
	}
	// Only an OK answer carries a message; another accepted code (a
	// matcher of "0,12") has nothing to say about serving.
	if !p.health || code != 0 {
		return resp.StatusCode, "", nil
	}
	st, err := decodeHealthResponse(body)
	if err != nil {
		return resp.StatusCode, ReasonProtocol, fmt.Errorf("POST %s: protocol: %w", p.url, err)
	}
	if st != serving {
		return resp.StatusCode, ReasonNotServing, fmt.Errorf("POST %s: %s", p.url, servingName(st))
	}
	return resp.StatusCode, "", nil
}

// describeGRPC renders a status code's name and the grpc-message, if any,
// as " (UNAVAILABLE: backend down)".
func describeGRPC(code int, resp *http.Response) string {
	name := "code " + strconv.Itoa(code)
	if code < len(grpcCodeNames) {
		name = grpcCodeNames[code]
	}
	msg := resp.Trailer.Get("Grpc-Message")
	if msg == "" {
		msg = resp.Header.Get("Grpc-Message")
	}
	if msg == "" {
		return " (" + name + ")"
	}
	// grpc-message is percent-encoded; show it raw if it is not.
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	if len(msg) > maxGRPCMessage {
		msg = msg[:maxGRPCMessage] + "..."
	}
	return fmt.Sprintf(" (%s: %q)", name, msg)
}

// classifyGRPC is classify, plus targets that do not speak HTTP/2.
func classifyGRPC(ctx context.Context, err error) Reason {
	// x/net/http2 says so when the server answered the preface with
	// HTTP/1.1 before our connection wrapper could (a partial first read).
	if errors.Is(err, errNotHTTP2) || errors.Is(err, h2client.ErrNoH2) || strings.Contains(err.Error(), "looked like an HTTP/1.1 header") {
		return ReasonProtocol
	}
	return classify(ctx, err)
}

// grpcTimeout renders d as a grpc-timeout header value (milliseconds;
// at most 8 digits, far beyond MaxInterval).
func grpcTimeout(d time.Duration) string {
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "m"
}

// grpcFrame returns msg as one gRPC length-prefixed message: a zero
// (uncompressed) flag byte, the 4-byte big-endian length, the message.
func grpcFrame(msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// encodeHealthRequest encodes a grpc.health.v1.HealthCheckRequest: field
// 1, service, a string (tag 0x0a, varint length, bytes); the empty service
// is the empty message, as proto3 leaves default values out.
func encodeHealthRequest(service string) []byte {
	if service == "" {
		return nil
	}
	b := []byte{0x0a}
	b = binary.AppendUvarint(b, uint64(len(service)))
	return append(b, service...)
}

// decodeHealthResponse reads the response body of a Check call: exactly
// one uncompressed message frame holding a
// grpc.health.v1.HealthCheckResponse, whose serving status it returns.
func decodeHealthResponse(body []byte) (int32, error) {
	msg, err := decodeGRPCFrame(body)
	if err != nil {
		return 0, err
	}
	return decodeServingStatus(msg)
}

// decodeGRPCFrame returns the message of the single frame in body.
func decodeGRPCFrame(body []byte) ([]byte, error) {
	if len(body) == 0 {
		return nil, errors.New("no response message")
	}
	if len(body) < 5 {
		return nil, fmt.Errorf("truncated gRPC frame header (%d bytes)", len(body))
	}
	switch body[0] {
	case 0:
	case 1:
		// We send no grpc-accept-encoding, so a compressed answer breaks
		// the protocol.
		return nil, errors.New("compressed response message")
	default:
		return nil, fmt.Errorf("bad gRPC frame flag %d", body[0])
	}
	n := binary.BigEndian.Uint32(body[1:5])
	rest := body[5:]
	if uint64(n) > uint64(len(rest)) {
		return nil, fmt.Errorf("truncated gRPC message: %d bytes of %d", len(rest), n)
	}
	if uint64(n) < uint64(len(rest)) {
		return nil, fmt.Errorf("%d bytes after the response message (a unary call has one)", uint64(len(rest))-uint64(n))
	}
	return rest, nil
}

// decodeServingStatus decodes a grpc.health.v1.HealthCheckResponse: field
// 1, status, an enum (varint). Unknown fields are skipped, the last status
// wins (protobuf's rules) and a missing one is UNKNOWN (0).
func decodeServingStatus(msg []byte) (int32, error) {
	var status int32
	for len(msg) > 0 {
		tag, n := binary.Uvarint(msg)
		if n <= 0 {
			return 0, errors.New("HealthCheckResponse: bad field tag")
		}
		msg = msg[n:]
		field, wire := tag>>3, tag&7
		if field == 0 {
			return 0, errors.New("HealthCheckResponse: field number 0")
		}
		switch wire {
		case 0: // varint
			v, n := binary.Uvarint(msg)
			if n <= 0 {
				return 0, fmt.Errorf("HealthCheckResponse: bad varint in field %d", field)
			}
			msg = msg[n:]
			if field == 1 {
				// Enums are int32; negative ones travel as 64-bit two's complement.
				status = int32(v) //nolint:gosec // truncation is protobuf's rule
			}
		case 1: // fixed64
			if len(msg) < 8 {
				return 0, fmt.Errorf("HealthCheckResponse: truncated field %d", field)
			}
			msg = msg[8:]
		case 2: // length-delimited
			l, n := binary.Uvarint(msg)
			if n <= 0 || l > uint64(len(msg)-n) {
				return 0, fmt.Errorf("HealthCheckResponse: bad length of field %d", field)
			}
			msg = msg[n+int(l):]
		case 5: // fixed32
			if len(msg) < 4 {
				return 0, fmt.Errorf("HealthCheckResponse: truncated field %d", field)
			}
			msg = msg[4:]
		default:
			return 0, fmt.Errorf("HealthCheckResponse: unsupported wire type %d in field %d", wire, field)
		}
		if field == 1 && wire != 0 {
			return 0, fmt.Errorf("HealthCheckResponse: status has wire type %d, want varint", wire)
		}
	}
	return status, nil
}

// h2Key identifies an HTTP/2 transport: h2c, or TLS with these settings.
type h2Key struct {
	tls        bool
	insecure   bool
	serverName string
}

// h2TransportFor returns the HTTP/2 transport of gRPC probes with settings
// k, creating it on first use. Like the HTTP transports, it is shared by
// every check with the same settings, and HTTP/2 multiplexes their probes
// of one target over one connection. e.mu is held.
func (e *Engine) h2TransportFor(k h2Key) *http.Transport {
	if t, ok := e.h2transports[k]; ok {
		return t
	}
	o := h2client.Options{
		IdleConnTimeout: 90 * time.Second, MaxResponseHeaderBytes: 64 << 10,
		// A probe's timeout resets its stream but keeps the connection; a
		// target that vanished without a reset is noticed by a PING after
		// 15 s of silence (5 s to answer), so later probes dial again.
		SendPingTimeout: 15 * time.Second, PingTimeout: 5 * time.Second,
	}
	dial := e.dialer.DialContext
	if k.tls {
		o.Dial = dial
		o.TLS = &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: k.insecure, //nolint:gosec // only when the check asks for it
			ServerName:         k.serverName,
		}
	} else {
		o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &h1Sniffer{Conn: c}, nil
		}
	}
	t := h2client.New(o)
	e.h2transports[k] = t
	e.owned = append(e.owned, t)
	return t
}

// h1Sniffer spots an HTTP/1.x server answering the h2c connection preface
// ("HTTP/1.1 400 Bad Request"), so the probe can say the target does not
// speak HTTP/2 instead of reporting a frame-size error. Only the
// transport's read loop reads, so seen needs no lock.
type h1Sniffer struct {
	net.Conn
	seen bool
}

func (c *h1Sniffer) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.seen && n > 0 {
		c.seen = true
		if n >= 5 && bytes.HasPrefix(p[:n], []byte("HTTP/")) {
			return 0, fmt.Errorf("%w: the server answered with HTTP/1 (%q)", errNotHTTP2, firstLine(p[:n]))
		}
	}
	return n, err
}

// firstLine is the first line of b, at most 64 bytes.
func firstLine(b []byte) string {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// newGRPCProber builds the prober of a grpc or grpcs check. e.mu is held.
func (e *Engine) newGRPCProber(cfg CheckConfig, codes StatusRanges) *grpcProber {
	scheme, tk := targetTLS(cfg, cfg.Kind == KindGRPCS)
	key := h2Key{tls: scheme == "https", insecure: tk.insecure, serverName: tk.serverName}
	p := &grpcProber{
		rt:     e.h2TransportFor(key),
		url:    scheme + "://" + cfg.Address + cfg.Path,
		host:   cfg.Host,
		codes:  codes,
		health: cfg.Path == DefaultGRPCPath,
		bufs:   e.bufs,
	}
	p.frame = grpcFrame(nil)
	if p.health {
		p.frame = grpcFrame(encodeHealthRequest(cfg.GRPCService))
	}
	return p
}
