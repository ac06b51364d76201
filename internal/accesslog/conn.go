package accesslog

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Conn is one L4 connection (tcp, tls) or UDP flow, logged when it ends
// (HAProxy's tcplog, NLB's flow logs). Zero fields are omitted from json
// and written as "-" (or left out) in common/combined.
type Conn struct {
	Time        time.Time // accepted (UDP: the flow's first datagram)
	Listener    string
	Proto       string // tcp, tls or udp
	Remote      string // client address (host, without port)
	RemotePort  int
	SNI         string // TLS server name, when known
	TargetGroup string
	// UpstreamAddr is the target; "" when none was connected.
	UpstreamAddr string
	// Status is what nginx's stream module logs: 200 a session with a
	// target, 400 a client protocol error, 502 no target could be
	// connected, 503 none to pick. It keeps common/combined lines
	// parseable by CLF tools; Result says more.
	Status int
	// Result is how it ended, e.g. ok, idle_timeout, client_reset,
	// no_target, connect_failed.
	Result string
	// Bytes (and packets, for UDP) forwarded: in is client to target,
	// out target to client.
	BytesIn, BytesOut     int64
	PacketsIn, PacketsOut int64
	// Duration: accept to close (UDP: first to last datagram).
	Duration time.Duration
}

// LogConn writes one L4 record. A nil Logger discards it.
func (l *Logger) LogConn(c *Conn) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.format == "json" {
		l.write(AppendConnJSON(l.buf[:0], c))
	} else {
		l.write(AppendConnCommon(l.buf[:0], c, l.format == "combined"))
	}
}

// AppendConnCommon appends c in the shape of a Common (or Combined) Log
// Format line, so one parser reads HTTP and L4 lines: the request is
// "PROTO listener target_group", the size is the bytes sent to the
// client, referer and user agent are "-"; the rest follows as key=value.
func AppendConnCommon(b []byte, c *Conn, combined bool) []byte {
	b = appendCLFStart(b, c.Remote, "", c.Time)
	b = appendEscaped(b, strings.ToUpper(c.Proto))
	b = append(b, ' ')
	b = appendTokenDash(b, c.Listener)
	b = append(b, ' ')
	b = appendTokenDash(b, c.TargetGroup)
	b = appendCLFStatus(b, c.Status, c.BytesOut)
	if combined {
		b = append(b, ` "-" "-"`...)
	}
	b = append(b, " duration_ms="...)
	b = strconv.AppendFloat(b, float64(c.Duration)/1e6, 'f', 3, 64)
	b = append(b, " result="...)
	b = appendDash(b, c.Result)
	b = append(b, " bytes_in="...)
	b = strconv.AppendInt(b, c.BytesIn, 10)
	if c.Proto == "udp" {
		b = append(b, " packets_in="...)
		b = strconv.AppendInt(b, c.PacketsIn, 10)
		b = append(b, " packets_out="...)
		b = strconv.AppendInt(b, c.PacketsOut, 10)
	}
	if c.RemotePort != 0 {
		b = append(b, " remote_port="...)
		b = strconv.AppendInt(b, int64(c.RemotePort), 10)
	}
	if c.UpstreamAddr != "" {
		b = append(b, " upstream="...)
		b = appendToken(b, c.UpstreamAddr)
	}
	if c.SNI != "" {
		b = append(b, " sni="...)
		b = appendToken(b, c.SNI)
	}
	return b
}

// appendToken escapes like appendEscaped, and spaces too, so a value
// (a client's SNI) cannot split a field or a key=value pair.
func appendToken(b []byte, s string) []byte {
	for {
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			return appendEscaped(b, s)
		}
		b = append(appendEscaped(b, s[:i]), `\x20`...)
		s = s[i+1:]
	}
}

func appendTokenDash(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendToken(b, s)
}

type jsonConn struct {
	Time         string  `json:"time"`
	Remote       string  `json:"remote,omitempty"`
	RemotePort   int     `json:"remote_port,omitempty"`
	Listener     string  `json:"listener,omitempty"`
	Proto        string  `json:"proto"`
	SNI          string  `json:"sni,omitempty"`
	TargetGroup  string  `json:"target_group,omitempty"`
	UpstreamAddr string  `json:"upstream_addr,omitempty"`
	Status       int     `json:"status"`
	Result       string  `json:"result"`
	BytesIn      int64   `json:"bytes_in"`
	BytesOut     int64   `json:"bytes_out"`
	PacketsIn    *int64  `json:"packets_in,omitempty"` // udp only, where 0 says something
	PacketsOut   *int64  `json:"packets_out,omitempty"`
	DurationMS   float64 `json:"duration_ms"`
}

// AppendConnJSON appends c as one JSON object. L4 records have proto
// tcp, tls or udp and no method or uri, which tells them from HTTP ones.
func AppendConnJSON(b []byte, c *Conn) []byte {
	j := jsonConn{
		Time: c.Time.UTC().Format(time.RFC3339Nano), Remote: c.Remote, RemotePort: c.RemotePort,
		Listener: c.Listener, Proto: c.Proto, SNI: c.SNI, TargetGroup: c.TargetGroup, UpstreamAddr: c.UpstreamAddr,
		Status: c.Status, Result: c.Result, BytesIn: c.BytesIn, BytesOut: c.BytesOut, DurationMS: ms(c.Duration),
	}
	if c.Proto == "udp" {
		j.PacketsIn, j.PacketsOut = &c.PacketsIn, &c.PacketsOut
	}
	out, err := json.Marshal(j)
	if err != nil { // cannot happen with these field types
		return append(b, `{"error":"accesslog encode"}`...)
	}
	return append(b, out...)
}
