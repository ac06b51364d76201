// Package httpguard is a strict HTTP/1.1 request-framing guard against
// request smuggling (desync) for edgestack's HTTP/1.1 front ends (lbd,
// edged). It classifies every raw request head the way AWS ALB's desync
// mitigation ("defensive mode") does — Compliant, Acceptable, Ambiguous,
// Severe — and refuses Ambiguous and Severe requests with 400 before
// net/http (let alone a target) sees them.
//
// net/http normalises some ambiguities away before a handler could see
// them (it drops Content-Length next to chunked, folds obs-fold lines,
// trims header names), so the guard works on raw bytes: NewListener wraps
// a net.Listener, and each connection's Read hands net/http only request
// heads that passed, followed by their bodies (Content-Length counted,
// chunked framing checked chunk by chunk). A refused head is replaced by a
// synthetic request carrying an unforgeable marker, which Wrap (the
// http.Handler half) answers with 400 and the reason, closing the
// connection. Use both:
//
//	ln = httpguard.NewListener(ln, opts)
//	srv := &http.Server{Handler: httpguard.Wrap(h, opts)}
//
// Classify is the pure classifier, usable on its own.
package httpguard

import (
	"bytes"
	"strconv"
)

// Tier is the classification of a request, from best to worst.
type Tier uint8

// Tiers, as in ALB's desync mitigation.
const (
	// Compliant requests follow RFC 7230.
	Compliant Tier = iota
	// Acceptable requests deviate in ways that do not affect framing; the
	// guard forwards them after normalising (dropping a malformed header
	// that is not framing-related, fixing the request line).
	Acceptable
	// Ambiguous requests could be framed differently by another parser;
	// refused with 400.
	Ambiguous
	// Severe requests are malformed or smuggling-shaped; refused with 400.
	Severe
)

func (t Tier) String() string {
	switch t {
	case Compliant:
		return "Compliant"
	case Acceptable:
		return "Acceptable"
	case Ambiguous:
		return "Ambiguous"
	case Severe:
		return "Severe"
	}
	return "Tier(" + strconv.Itoa(int(t)) + ")"
}

// Reasons for a classification (the names follow ALB's).
const (
	ReasonCompliant              = "Compliant"
	ReasonEmptyHeader            = "EmptyHeader"
	ReasonSuspiciousHeader       = "SuspiciousHeader"
	ReasonNonCompliantHeader     = "NonCompliantHeader"
	ReasonBadHeader              = "BadHeader"
	ReasonAmbiguousURI           = "AmbiguousUri"
	ReasonBadURI                 = "BadUri"
	ReasonSpaceInURI             = "SpaceInUri"
	ReasonBadMethod              = "BadMethod"
	ReasonNonCompliantVersion    = "NonCompliantVersion"
	ReasonBadVersion             = "BadVersion"
	ReasonGetHeadZeroCL          = "GetHeadZeroContentLength"
	ReasonUndefinedCLSemantics   = "UndefinedContentLengthSemantics"
	ReasonMultipleCL             = "MultipleContentLength"
	ReasonDuplicateCL            = "DuplicateContentLength"
	ReasonBadCL                  = "BadContentLength"
	ReasonUndefinedTESemantics   = "UndefinedTransferEncodingSemantics"
	ReasonMultipleTEChunked      = "MultipleTransferEncodingChunked"
	ReasonBadTE                  = "BadTransferEncoding"
	ReasonBothTECL               = "BothTeClPresent"
	ReasonHeadTooLarge           = "HeadTooLarge"
	ReasonTooManyHeaders         = "TooManyHeaders"
	ReasonBadChunk               = "BadChunkFraming"
	ReasonMalformedRequestLine   = "MalformedRequestLine"
	ReasonUnsupportedTransferEnc = "UnsupportedTransferEncoding"
)

// Result is the verdict on one request head.
type Result struct {
	Tier   Tier
	Reason string
	// Message says why, naming the header ("Content-Length: multiple
	// different values").
	Message string

	// Framing, valid when Tier is Compliant or Acceptable.
	Chunked       bool  // body is chunked
	ContentLength int64 // body length when not chunked (0 = none)
	// Upgrade is set for requests with an Upgrade header or CONNECT: after
	// them the connection may stop being HTTP/1.1.
	Upgrade bool
	// Normalized is the head to hand on when it differs from the input
	// (Acceptable requests: malformed non-framing headers dropped, request
	// line repaired); nil when the input can be used as is.
	Normalized []byte
}

func (r *Result) raise(t Tier, reason, msg string) {
	if t > r.Tier {
		r.Tier, r.Reason, r.Message = t, reason, msg
	} else if r.Reason == "" || r.Reason == ReasonCompliant {
		r.Reason, r.Message = reason, msg
	}
}

// Limits bound what Classify accepts.
type Limits struct {
	// MaxHeaders is the most header lines a request may have. Default 100.
	MaxHeaders int
}

// Classify classifies one raw request head: the request line and header
// lines up to and including the empty line, as read from the wire. The
// head must end with "\r\n\r\n" (a truncated head is Severe).
func Classify(head []byte) Result { return classify(head, Limits{}) }

var (
	crlf      = []byte("\r\n")
	teLetters = "transferencoding"
	clLetters = "contentlength"
)

func classify(head []byte, lim Limits) Result {
	if lim.MaxHeaders <= 0 {
		lim.MaxHeaders = 100
	}
	res := Result{Tier: Compliant, Reason: ReasonCompliant}
	if !bytes.HasSuffix(head, []byte("\r\n\r\n")) || len(head) < 6 {
		res.raise(Severe, ReasonBadHeader, "request head does not end with CRLF CRLF")
		return res
	}
	body := head[:len(head)-2] // drop the final empty line's CRLF
	nl := bytes.Index(body, crlf)
	line := body[:nl]
	rest := body[nl+2:]

	method, uri, version, lineFixed := classifyRequestLine(line, &res)
	if res.Tier == Severe {
		return res
	}

	var (
		normalized    []byte
		dropped       bool
		clCount       int
		clValue       int64 = -1
		clConflict    bool
		teSeen        bool
		teChunkedN    int
		teLastChunked bool
		teBad         bool
		nHeaders      int
	)
	// Header lines, each ending with CRLF.
	type kept struct{ start, end int }
	var keepBuf [48]kept
	keep := keepBuf[:0]
	off := 0
	for off < len(rest) {
		i := bytes.Index(rest[off:], crlf)
		if i < 0 {
			res.raise(Severe, ReasonBadHeader, "header line without CRLF")
			return res
		}
		hl := rest[off : off+i]
		start, end := off, off+i+2
		off = end
		nHeaders++
		if nHeaders > lim.MaxHeaders {
			res.raise(Severe, ReasonTooManyHeaders, "more than "+strconv.Itoa(lim.MaxHeaders)+" header lines")
			return res
		}
		if bytes.IndexByte(hl, '\r') >= 0 || bytes.IndexByte(hl, '\n') >= 0 || bytes.IndexByte(hl, 0) >= 0 {
			res.raise(Severe, ReasonBadHeader, "header line contains CR, LF or NUL: "+quoteName(hl))
			return res
		}
		if len(hl) > 0 && (hl[0] == ' ' || hl[0] == '\t') {
			// obs-fold, or a name starting with whitespace.
			colon := bytes.IndexByte(hl, ':')
			if colon >= 0 && len(bytes.TrimLeft(hl[:colon], " \t")) == 0 {
				res.raise(Ambiguous, ReasonEmptyHeader, "empty header name")
				continue
			}
			if colon >= 0 && isFramingName(bytes.TrimLeft(hl[:colon], " \t")) {
				kind := framingKind(bytes.TrimSpace(hl[:colon]))
				if kind == "Content-Length" {
					clCount++
					if v, ok := parseCL(TrimOWS(hl[colon+1:])); ok {
						if clValue >= 0 && clValue != v {
							clConflict = true
						}
						clValue = v
					}
				} else if kind == "Transfer-Encoding" {
					teSeen = true
					if bytes.Contains(bytes.ToLower(hl[colon+1:]), []byte("chunked")) {
						teChunkedN++
					}
				}
				res.raise(Ambiguous, ReasonSuspiciousHeader, kind+": name starts with whitespace (obs-fold?)")
				continue
			}
			res.raise(Severe, ReasonBadHeader, "obs-fold (header continuation line) is not allowed")
			return res
		}
		colon := bytes.IndexByte(hl, ':')
		if colon < 0 {
			res.raise(Severe, ReasonBadHeader, "header line without colon: "+quoteName(hl))
			return res
		}
		name, value := hl[:colon], TrimOWS(hl[colon+1:])
		if len(name) == 0 {
			res.raise(Ambiguous, ReasonEmptyHeader, "empty header name")
			continue
		}
		validName := isToken(name)
		switch {
		case validName && asciiEqualFold(name, "Content-Length"):
			clCount++
			v, ok := parseCL(value)
			if !ok {
				res.raise(Severe, ReasonBadCL, "Content-Length: invalid value")
				return res
			}
			if clValue >= 0 && clValue != v {
				clConflict = true
			}
			clValue = v
			keep = append(keep, kept{start, end})
		case validName && asciiEqualFold(name, "Transfer-Encoding"):
			teSeen = true
			n, last, ok := parseTE(value)
			if !ok {
				teBad = true
				res.raise(Severe, ReasonBadTE, "Transfer-Encoding: invalid or unknown coding")
				return res
			}
			teChunkedN += n
			if n > 0 || len(bytes.TrimSpace(value)) > 0 {
				teLastChunked = last
			}
			keep = append(keep, kept{start, end})
		case isFramingName(name):
			kind := framingKind(name)
			// A Content-Length or Transfer-Encoding look-alike: another
			// parser may take it for the real thing.
			if kind == "Content-Length" {
				clCount++
				if v, ok := parseCL(value); ok {
					if clValue >= 0 && clValue != v {
						clConflict = true
					}
					clValue = v
				}
			} else {
				teSeen = true
				if n, _, ok := parseTE(value); ok {
					teChunkedN += n
				}
			}
			res.raise(Ambiguous, ReasonSuspiciousHeader, kind+": suspicious header name "+quoteName(name))
		case !validName:
			res.raise(Acceptable, ReasonNonCompliantHeader, "invalid header name "+quoteName(name)+" (dropped)")
			dropped = true
		default:
			if !validValue(value) {
				res.raise(Acceptable, ReasonNonCompliantHeader, "invalid characters in the value of "+quoteName(name)+" (dropped)")
				dropped = true
				continue
			}
			if asciiEqualFold(name, "Upgrade") {
				res.Upgrade = true
			}
			keep = append(keep, kept{start, end})
		}
	}
	if res.Tier == Severe {
		return res
	}
	_ = teBad
	isGetHead := string(method) == "GET" || string(method) == "HEAD"
	http11 := string(version) == "HTTP/1.1"
	switch {
	case clConflict:
		res.raise(Severe, ReasonMultipleCL, "Content-Length: multiple headers with different values")
		return res
	case teChunkedN > 1:
		res.raise(Severe, ReasonMultipleTEChunked, "Transfer-Encoding: chunked more than once")
		return res
	}
	if teSeen && clCount > 0 {
		res.raise(Ambiguous, ReasonBothTECL, "both Transfer-Encoding and Content-Length present")
	}
	if clCount > 1 {
		res.raise(Ambiguous, ReasonDuplicateCL, "Content-Length: repeated")
	}
	if teSeen {
		switch {
		case !http11:
			res.raise(Ambiguous, ReasonUndefinedTESemantics, "Transfer-Encoding in a request that is not HTTP/1.1")
		case isGetHead:
			res.raise(Ambiguous, ReasonUndefinedTESemantics, "Transfer-Encoding in a "+string(method)+" request")
		case !teLastChunked:
			res.raise(Ambiguous, ReasonUnsupportedTransferEnc, "Transfer-Encoding: chunked is not the final coding, the body length is undefined")
		}
	}
	if clCount > 0 && clValue > 0 {
		switch {
		case isGetHead:
			res.raise(Ambiguous, ReasonUndefinedCLSemantics, "Content-Length in a "+string(method)+" request")
		case len(version) == 0 || string(version) == "HTTP/0.9":
			res.raise(Ambiguous, ReasonUndefinedCLSemantics, "Content-Length in an HTTP/0.9 request")
		}
	} else if clCount > 0 && isGetHead {
		res.raise(Acceptable, ReasonGetHeadZeroCL, "Content-Length: 0 in a "+string(method)+" request")
	}
	if res.Tier >= Ambiguous {
		return res
	}
	res.Chunked = teSeen
	if !res.Chunked && clValue > 0 {
		res.ContentLength = clValue
	}
	if string(method) == "CONNECT" {
		res.Upgrade = true
	}
	if lineFixed != nil || dropped {
		if lineFixed == nil {
			lineFixed = line
		}
		normalized = make([]byte, 0, len(head))
		normalized = append(normalized, lineFixed...)
		normalized = append(normalized, crlf...)
		for _, k := range keep {
			normalized = append(normalized, rest[k.start:k.end]...)
		}
		normalized = append(normalized, crlf...)
		res.Normalized = normalized
	}
	_ = uri
	return res
}

// classifyRequestLine checks "METHOD SP URI SP VERSION" and returns its
// parts and, for Acceptable deviations, a repaired line.
func classifyRequestLine(line []byte, res *Result) (method, uri, version, fixed []byte) {
	if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, '\n') >= 0 || bytes.IndexByte(line, 0) >= 0 {
		res.raise(Severe, ReasonBadURI, "request line contains CR, LF or NUL")
		return
	}
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		if sp < 0 && isToken(line) {
			res.raise(Severe, ReasonMalformedRequestLine, "request line has no URI")
		} else {
			res.raise(Severe, ReasonBadMethod, "invalid method")
		}
		return
	}
	method = line[:sp]
	if !isToken(method) {
		res.raise(Severe, ReasonBadMethod, "invalid method "+quoteName(method))
		return
	}
	rest := line[sp+1:]
	trimmed := bytes.TrimRight(rest, " \t")
	repair := false
	if len(trimmed) != len(rest) {
		res.raise(Acceptable, ReasonNonCompliantVersion, "trailing whitespace after the version")
		repair = true
	}
	rest = trimmed
	if last := bytes.LastIndexByte(rest, ' '); last >= 0 && looksLikeVersion(rest[last+1:]) {
		uri, version = rest[:last], rest[last+1:]
	} else {
		uri = rest // HTTP/0.9 style, no version
	}
	if bytes.Contains(uri, []byte(" HTTP/")) {
		res.raise(Severe, ReasonBadVersion, "more than one version in the request line")
		return
	}
	for _, c := range uri {
		if c < 0x20 || c == 0x7f {
			res.raise(Ambiguous, ReasonAmbiguousURI, "control character in the URI")
			return
		}
	}
	if bytes.IndexByte(uri, ' ') >= 0 {
		res.raise(Acceptable, ReasonSpaceInURI, "unescaped space in the URI (escaped)")
		repair = true
	}
	if len(uri) == 0 {
		repair = true
	}
	switch {
	case string(version) == "HTTP/1.1" || string(version) == "HTTP/1.0":
	case len(version) == 0 || looksLikeVersion(version):
		res.raise(Acceptable, ReasonNonCompliantVersion, "HTTP version "+strconv.Quote(string(version)))
		repair = true
	default:
		res.raise(Severe, ReasonBadVersion, "invalid HTTP version")
		return
	}
	if repair {
		v := string(version)
		switch {
		case v == "HTTP/1.1" || v == "HTTP/1.0":
		case len(v) == 8 && v[5] == '1':
			v = "HTTP/1.1" // a later 1.x minor version is handled as 1.1
		default:
			v = "HTTP/1.0"
		}
		u := bytes.ReplaceAll(uri, []byte(" "), []byte("%20"))
		if len(u) == 0 {
			u = []byte("/")
		}
		fixed = make([]byte, 0, len(method)+len(u)+len(v)+2)
		fixed = append(fixed, method...)
		fixed = append(fixed, ' ')
		fixed = append(fixed, u...)
		fixed = append(fixed, ' ')
		fixed = append(fixed, v...)
	}
	return
}

func looksLikeVersion(v []byte) bool {
	return len(v) == 8 && string(v[:5]) == "HTTP/" && isDigit(v[5]) && v[6] == '.' && isDigit(v[7])
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseCL parses a Content-Length value: digits only, fitting int64.
func parseCL(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

var knownCodings = map[string]bool{
	"chunked": true, "compress": true, "deflate": true, "gzip": true,
	"identity": true, "x-gzip": true, "x-compress": true,
}

// parseTE parses a Transfer-Encoding value: a comma list of known codings,
// each with optional ";param" parts. It returns how often chunked appears
// and whether the last coding is chunked.
func parseTE(v []byte) (chunked int, lastChunked bool, ok bool) {
	for _, c := range v {
		if c < 0x20 && c != '\t' || c >= 0x7f {
			return 0, false, false
		}
	}
	items := bytes.Split(v, []byte(","))
	for _, it := range items {
		it = TrimOWS(it)
		if len(it) == 0 {
			continue // empty list elements are allowed (RFC 7230 7)
		}
		name := it
		if i := bytes.IndexByte(it, ';'); i >= 0 {
			name = TrimOWS(it[:i])
			for _, p := range bytes.Split(it[i+1:], []byte(";")) {
				p = TrimOWS(p)
				if len(p) == 0 {
					continue
				}
				k := p
				if j := bytes.IndexByte(p, '='); j >= 0 {
					k = TrimOWS(p[:j])
				}
				if !isToken(k) {
					return 0, false, false
				}
			}
		}
		lower := string(bytes.ToLower(name))
		if !knownCodings[lower] {
			return 0, false, false
		}
		lastChunked = lower == "chunked"
		if lastChunked {
			chunked++
		}
	}
	return chunked, lastChunked, true
}

// TrimOWS trims optional whitespace (SP and HTAB, RFC 9110 5.6.3) from
// both ends of b. Like bytes.Trim(b, " \t"), which costs two and a half
// times as much on every field line, it returns nil when nothing is left.
func TrimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return nil
	}
	return b
}

// tchar per RFC 7230.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return
}()

// IsToken reports whether b is a non-empty RFC 9110 token, which a field
// name must be.
func IsToken(b []byte) bool { return isToken(b) }

// AppendCanonicalKey appends the canonical form of the field name b, as
// net/textproto writes it ("content-type" → "Content-Type"). b should be
// a token (textproto leaves other names as they are).
func AppendCanonicalKey(dst, b []byte) []byte {
	upper := true
	for _, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		dst = append(dst, c)
		upper = c == '-'
	}
	return dst
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tchar[c] {
			return false
		}
	}
	return true
}

// validValue: field-vchar, SP, HTAB and obs-text only.
func validValue(v []byte) bool {
	for _, c := range v {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// letters appends the lower-case ASCII letters of b to dst.
func letters(dst, b []byte) []byte {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'a' <= c && c <= 'z' {
			dst = append(dst, c)
		}
	}
	return dst
}

// isFramingName reports whether name looks like Content-Length or
// Transfer-Encoding (without being exactly it): its letters are within
// two edits of the real name's.
func isFramingName(name []byte) bool { return framingKind(name) != "" }

func framingKind(name []byte) string {
	if len(name) < 8 || len(name) > 64 {
		return ""
	}
	var buf [64]byte
	l := letters(buf[:0], name)
	if len(l) < len(clLetters)-2 || len(l) > len(teLetters)+2 {
		return ""
	}
	switch {
	case editDistanceAtMost(l, teLetters, 2):
		return "Transfer-Encoding"
	case editDistanceAtMost(l, clLetters, 2):
		return "Content-Length"
	}
	return ""
}

// editDistanceAtMost reports whether the Levenshtein distance of a and b is
// at most k (k small, b at most 23 bytes). It runs for every field name
// of the right length in every request head, so it first compares the
// letters as multisets (each edit changes that difference by at most 2)
// and then fills only the band |i-j| <= k of the table, stopping once a
// whole row is over k.
func editDistanceAtMost(a []byte, b string, k int) bool {
	if d := len(a) - len(b); d > k || -d > k {
		return false
	}
	var count [256]int8
	for _, c := range a {
		count[c]++
	}
	for i := 0; i < len(b); i++ {
		count[b[i]]--
	}
	diff := 0
	for _, c := range a {
		diff += abs8(count[c])
		count[c] = 0
	}
	for i := 0; i < len(b); i++ {
		diff += abs8(count[b[i]])
		count[b[i]] = 0
	}
	if diff > 2*k {
		return false
	}
	const far = 1 << 16
	var pb, cb [24]int
	prev, cur := pb[:len(b)+1], cb[:len(b)+1]
	for j := range prev {
		prev[j] = far
		if j <= k {
			prev[j] = j
		}
	}
	for i := 1; i <= len(a); i++ {
		lo, hi := max(1, i-k), min(len(b), i+k)
		cur[0] = far
		if i <= k {
			cur[0] = i
		}
		if lo > 1 {
			cur[lo-1] = far
		}
		rowMin := cur[0]
		for j := lo; j <= hi; j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if hi < len(b) {
			cur[hi+1] = far
		}
		if rowMin > k {
			return false
		}
		prev, cur = cur, prev
	}
	return prev[len(b)] <= k
}

func abs8(x int8) int {
	if x < 0 {
		return -int(x)
	}
	return int(x)
}

func quoteName(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return strconv.QuoteToASCII(string(b))
}

// ClassifyWith is Classify with limits.
func ClassifyWith(head []byte, lim Limits) Result { return classify(head, lim) }
