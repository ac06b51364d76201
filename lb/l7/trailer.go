package l7

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/edgestack/edgestack/internal/httpguard"
)

// Trailers between HTTP/2 clients and lbd's HTTP/1.1 upstream
// connections (forwardPooled). HTTP/1.1 clients of the fast engine get a
// chunked body's trailer section as the target sent it.

// maxTrailerBytes bounds a trailer section read from a target, as
// response heads are bounded.
const maxTrailerBytes = 64 << 10

var (
	errBadTrailer      = errors.New("malformed trailer field")
	errTrailerTooLarge = errors.New("trailer section too large")
)

// forwardableTrailer reports whether a trailer field (canonical name)
// may be relayed: not one RFC 9110 §6.5.1 keeps out of trailers
// (framing, routing, authentication, request modifiers, content
// processing: Content-Length, Transfer-Encoding, Host, Authorization...)
// and not one lbd sets or strips per hop (Connection, X-Forwarded-*).
func forwardableTrailer(name string) bool {
	return httpguts.ValidHeaderFieldName(name) && httpguts.ValidTrailerHeader(name) && !hopHeaders[name]
}

// parseTrailerField splits one trailer field line ("Name: value\r\n")
// into its canonical name and value. Like a header field: a token name
// directly followed by the colon, no obs-fold, a valid value.
func parseTrailerField(line []byte) (name, value string, ok bool) {
	line, ok = bytes.CutSuffix(line, crlf)
	if !ok {
		return "", "", false
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return "", "", false
	}
	// Copies: line points into a reused read buffer.
	n, v := string(line[:colon]), string(httpguard.TrimOWS(line[colon+1:]))
	if !httpguts.ValidHeaderFieldName(n) || !httpguts.ValidHeaderFieldValue(v) {
		return "", "", false
	}
	return http.CanonicalHeaderKey(n), v, true
}

// trailerSink collects the trailer section of a target's chunked
// response for an HTTP/2 client, dropping fields that may not be
// relayed.
type trailerSink struct {
	h    http.Header
	size int
}

// add takes one trailer field line (copyChunkedTrailer's callback).
func (t *trailerSink) add(line []byte) error {
	if t.size += len(line); t.size > maxTrailerBytes {
		return errTrailerTooLarge
	}
	name, value, ok := parseTrailerField(line)
	if !ok {
		return errBadTrailer
	}
	if !forwardableTrailer(name) {
		return nil
	}
	if t.h == nil {
		t.h = http.Header{}
	}
	t.h[name] = append(t.h[name], value)
	return nil
}

// setOn hands the collected fields to an HTTP/2 ResponseWriter after the
// body: net/http sends Header() keys prefixed with http.TrailerPrefix as
// trailers, whether or not they were announced.
func (t *trailerSink) setOn(h http.Header) {
	for k, vs := range t.h {
		h[http.TrailerPrefix+k] = vs
	}
}

// trailerNames keeps the forwardable names of Trailer header values
// (comma-separated lists), canonical, for announcing them onward.
func trailerNames(values []string) []string {
	var names []string
	for _, v := range values {
		for n := range strings.SplitSeq(v, ",") {
			n = http.CanonicalHeaderKey(strings.TrimSpace(n))
			if forwardableTrailer(n) && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return names
}

// requestTrailerNames lists the trailers an HTTP/2 client announced
// (net/http puts their names in r.Trailer before the body is read),
// sorted so the announcement is stable.
func requestTrailerNames(r *http.Request) []string {
	var names []string
	for k := range r.Trailer {
		if forwardableTrailer(k) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return names
}

// writeTrailerFields writes the announced request trailers that arrived
// (r.Trailer is filled once the body was read to its end) as a chunked
// trailer section, without the empty line that ends it.
func writeTrailerFields(w *bufio.Writer, r *http.Request, names []string) {
	for _, k := range names {
		for _, v := range r.Trailer[k] {
			if !httpguts.ValidHeaderFieldValue(v) {
				continue
			}
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
}
