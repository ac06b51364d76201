// Package accesslog writes access logs in json, common or combined
// format: one Entry per HTTP request, one Conn per L4 connection or UDP
// flow. Downstream (what the client got) and upstream (what the origin or
// target answered) status, size and duration are kept apart, so a cache hit
// (no upstream) or a 502 (upstream failed) reads plainly.
//
// A Logger is safe for concurrent use; each entry is written with one Write
// call on the underlying writer.
package accesslog

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Formats lists the supported formats.
var Formats = []string{"json", "common", "combined"}

// Entry is one request. Zero fields are omitted from json and written as
// "-" in common/combined.
type Entry struct {
	Time      time.Time     // when the request started
	Remote    string        // client address (host, without port)
	User      string        // authenticated user, if any
	Method    string        // request method
	URI       string        // request target as received
	Proto     string        // e.g. HTTP/1.1
	Host      string        // Host header
	Status    int           // downstream status sent to the client
	Bytes     int64         // downstream body bytes sent
	Duration  time.Duration // downstream: from request start to last byte
	Referer   string
	UserAgent string

	// Upstream is the origin/target leg; zero when no upstream request was
	// made (e.g. a cache hit).
	UpstreamAddr     string
	UpstreamStatus   int
	UpstreamBytes    int64
	UpstreamDuration time.Duration

	// Cache is the cache status (Hit, Miss, RefreshHit, Stale, Pass...),
	// Route the distribution/behavior or listener/rule that served it.
	Cache     string
	Route     string
	RequestID string
}

// Logger encodes entries to a writer.
type Logger struct {
	mu     sync.Mutex
	w      io.Writer
	format string
	buf    []byte
}

// New returns a logger writing format ("json", "common" or "combined") to w.
func New(w io.Writer, format string) (*Logger, error) {
	switch format {
	case "json", "common", "combined":
	case "":
		format = "json"
	default:
		return nil, fmt.Errorf("accesslog: unknown format %q (want json, common or combined)", format)
	}
	return &Logger{w: w, format: format}, nil
}

// Format returns the logger's format.
func (l *Logger) Format() string { return l.format }

// Log writes one entry. A nil Logger discards it.
func (l *Logger) Log(e *Entry) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.format == "json" {
		l.write(AppendJSON(l.buf[:0], e))
	} else {
		l.write(AppendCommon(l.buf[:0], e, l.format == "combined"))
	}
}

// write ends the line in b (l.buf grown) and writes it; l.mu is held.
func (l *Logger) write(b []byte) {
	b = append(b, '\n')
	_, _ = l.w.Write(b)
	if cap(b) <= 64<<10 {
		l.buf = b // keep the buffer unless one huge entry grew it
	}
}

// appendCLFStart appends `remote - user [time] "` (a CLF line up to its
// request field).
func appendCLFStart(b []byte, remote, user string, t time.Time) []byte {
	b = appendDash(b, remote)
	b = append(b, " - "...)
	b = appendDash(b, user)
	b = append(b, " ["...)
	b = t.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	return append(b, "] \""...)
}

// appendCLFStatus closes the request field and appends status and size
// ("-" for none).
func appendCLFStatus(b []byte, status int, size int64) []byte {
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	if size > 0 {
		return strconv.AppendInt(b, size, 10)
	}
	return append(b, '-')
}

// AppendCommon appends e in Common Log Format, or Combined Log Format
// (with referer and user agent) when combined is set. Upstream fields are
// appended after the standard ones as key=value pairs, which log tools
// treat as trailing text.
func AppendCommon(b []byte, e *Entry, combined bool) []byte {
	b = appendCLFStart(b, e.Remote, e.User, e.Time)
	b = appendEscaped(b, e.Method)
	b = append(b, ' ')
	b = appendEscaped(b, e.URI)
	b = append(b, ' ')
	b = appendEscaped(b, e.Proto)
	b = appendCLFStatus(b, e.Status, e.Bytes)
	if combined {
		b = append(b, " \""...)
		b = appendDash(b, e.Referer)
		b = append(b, "\" \""...)
		b = appendDash(b, e.UserAgent)
		b = append(b, '"')
	}
	b = append(b, " duration_ms="...)
	b = strconv.AppendFloat(b, float64(e.Duration)/1e6, 'f', 3, 64)
	if e.Cache != "" {
		b = append(b, " cache="...)
		b = appendEscaped(b, e.Cache)
	}
	if e.UpstreamStatus != 0 || e.UpstreamAddr != "" {
		b = append(b, " upstream="...)
		b = appendDash(b, e.UpstreamAddr)
		b = append(b, " upstream_status="...)
		b = strconv.AppendInt(b, int64(e.UpstreamStatus), 10)
		b = append(b, " upstream_bytes="...)
		b = strconv.AppendInt(b, e.UpstreamBytes, 10)
		b = append(b, " upstream_ms="...)
		b = strconv.AppendFloat(b, float64(e.UpstreamDuration)/1e6, 'f', 3, 64)
	}
	return b
}

type jsonEntry struct {
	Time             string  `json:"time"`
	Remote           string  `json:"remote,omitempty"`
	User             string  `json:"user,omitempty"`
	Method           string  `json:"method"`
	URI              string  `json:"uri"`
	Proto            string  `json:"proto,omitempty"`
	Host             string  `json:"host,omitempty"`
	Status           int     `json:"status"`
	Bytes            int64   `json:"bytes"`
	DurationMS       float64 `json:"duration_ms"`
	Referer          string  `json:"referer,omitempty"`
	UserAgent        string  `json:"user_agent,omitempty"`
	UpstreamAddr     string  `json:"upstream_addr,omitempty"`
	UpstreamStatus   int     `json:"upstream_status,omitempty"`
	UpstreamBytes    int64   `json:"upstream_bytes,omitempty"`
	UpstreamDuration float64 `json:"upstream_duration_ms,omitempty"`
	Cache            string  `json:"cache,omitempty"`
	Route            string  `json:"route,omitempty"`
	RequestID        string  `json:"request_id,omitempty"`
}

// AppendJSON appends e as one JSON object.
func AppendJSON(b []byte, e *Entry) []byte {
	j := jsonEntry{
		Time: e.Time.UTC().Format(time.RFC3339Nano), Remote: e.Remote, User: e.User,
		Method: e.Method, URI: e.URI, Proto: e.Proto, Host: e.Host,
		Status: e.Status, Bytes: e.Bytes, DurationMS: ms(e.Duration),
		Referer: e.Referer, UserAgent: e.UserAgent,
		UpstreamAddr: e.UpstreamAddr, UpstreamStatus: e.UpstreamStatus,
		UpstreamBytes: e.UpstreamBytes, UpstreamDuration: ms(e.UpstreamDuration),
		Cache: e.Cache, Route: e.Route, RequestID: e.RequestID,
	}
	out, err := json.Marshal(j)
	if err != nil { // cannot happen with these field types
		return append(b, `{"error":"accesslog encode"}`...)
	}
	return append(b, out...)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

func appendDash(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendEscaped(b, s)
}

// appendEscaped writes s with quotes, backslashes, control bytes and
// invalid UTF-8 escaped, so a client cannot forge log lines.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			b = append(b, c)
			i++
			continue
		}
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size > 1 {
				b = append(b, s[i:i+size]...)
				i += size
				continue
			}
		}
		switch c {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		default:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		}
		i++
	}
	return b
}

const hex = "0123456789abcdef"
