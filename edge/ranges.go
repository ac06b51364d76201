package edge

import (
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
)

// Byte ranges of objects edged does not cache. Cached objects get Range
// from http.ServeContent in deliver; this file covers the first request
// for an object too large to cache, whose fill fetched the whole
// representation without the viewer's Range or conditionals, so edged
// answers those itself while streaming (later requests pass them to the
// origin, see passLarge).

// rangeSpec is one range-spec of a Range header (RFC 9110 14.1.1):
// first-last, first- (last < 0), or -suffix (first < 0, last is the
// suffix length).
type rangeSpec struct{ first, last int64 }

// parseRange parses a Range field value. It returns the first range-spec
// and how many there are; ok is false when the value is not a valid bytes
// ranges-specifier, which a server ignores (RFC 9110 14.2).
func parseRange(v string) (first rangeSpec, n int, ok bool) {
	unit, set, found := strings.Cut(v, "=")
	if !found || !strings.EqualFold(unit, "bytes") {
		return rangeSpec{}, 0, false
	}
	for part := range strings.SplitSeq(set, ",") {
		part = textproto.TrimString(part)
		if part == "" {
			continue // the list rule allows empty elements
		}
		a, b, found := strings.Cut(part, "-")
		if !found {
			return rangeSpec{}, 0, false
		}
		var s rangeSpec
		if a == "" {
			l, ok := parsePos(b)
			if !ok {
				return rangeSpec{}, 0, false
			}
			s = rangeSpec{first: -1, last: l}
		} else {
			f, ok := parsePos(a)
			if !ok {
				return rangeSpec{}, 0, false
			}
			s = rangeSpec{first: f, last: -1}
			if b != "" {
				l, ok := parsePos(b)
				if !ok || l < f {
					return rangeSpec{}, 0, false
				}
				s.last = l
			}
		}
		if n == 0 {
			first = s
		}
		n++
	}
	return first, n, n > 0
}

// parsePos parses 1*DIGIT; 18 digits at most, so it cannot overflow.
func parsePos(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// resolve returns the first and last byte the spec selects in a
// representation of size bytes; ok is false when it is unsatisfiable.
func (r rangeSpec) resolve(size int64) (start, end int64, ok bool) {
	switch {
	case r.first < 0:
		if r.last == 0 || size <= 0 {
			return 0, 0, false
		}
		return size - min(r.last, size), size - 1, true
	case r.first >= size:
		return 0, 0, false
	case r.last < 0 || r.last >= size:
		return r.first, size - 1, true
	}
	return r.first, r.last, true
}

// contentRangeLength returns the complete length in a Content-Range value
// ("bytes 0-99/1000" or "bytes */1000"), or -1 when it is unknown ("/*")
// or the value is malformed.
func contentRangeLength(v string) int64 {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return -1
	}
	rng, size, ok := strings.Cut(rest, "/")
	if !ok {
		return -1
	}
	n, ok := parsePos(size)
	if !ok {
		return -1
	}
	if rng == "*" {
		return n
	}
	a, b, ok := strings.Cut(rng, "-")
	f, ok1 := parsePos(a)
	l, ok2 := parsePos(b)
	if !ok || !ok1 || !ok2 || l < f || l >= n {
		return -1
	}
	return n
}

// scanETag splits the first entity-tag off s (after optional whitespace):
// its opaque part with quotes, whether it is weak, and the rest.
func scanETag(s string) (tag string, weak bool, rest string, ok bool) {
	s = textproto.TrimString(s)
	if t, found := strings.CutPrefix(s, "W/"); found {
		s, weak = t, true
	}
	if len(s) < 2 || s[0] != '"' {
		return "", false, "", false
	}
	i := strings.IndexByte(s[1:], '"')
	if i < 0 {
		return "", false, "", false
	}
	return s[:i+2], weak, s[i+2:], true
}

// etagMatchWeak reports whether an If-None-Match value matches etag by
// weak comparison (RFC 9110 13.1.2): "*" matches any current
// representation.
func etagMatchWeak(list, etag string) bool {
	tag, _, _, ok := scanETag(etag)
	for {
		list = textproto.TrimString(list)
		switch {
		case list == "":
			return false
		case list[0] == ',':
			list = list[1:]
			continue
		case list[0] == '*':
			return true
		}
		t, _, rest, ok2 := scanETag(list)
		if !ok2 {
			return false
		}
		if ok && t == tag {
			return true
		}
		list = rest
	}
}

// ifRangeHolds reports whether an If-Range value (RFC 9110 13.1.5) lets
// Range apply to a response with these ETag and Last-Modified values: a
// strong entity-tag match, or a date equal to Last-Modified.
func ifRangeHolds(ir string, hdr http.Header) bool {
	if ir == "" {
		return true
	}
	if strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/") {
		t, weak, rest, ok := scanETag(ir)
		et, eweak, _, eok := scanETag(hdr.Get("ETag"))
		return ok && eok && !weak && !eweak && textproto.TrimString(rest) == "" && t == et
	}
	d, ok := cache.ParseHTTPDate(ir)
	lm, lok := cache.ParseHTTPDate(hdr.Get("Last-Modified"))
	return ok && lok && d.Equal(lm)
}

// answer is how a streamed origin response is turned into the viewer's:
// the status, then body bytes from start, n of them (-1: to the end).
type answer struct {
	code         int
	start, n     int64
	contentRange string // for 206 and 416
}

// relay answers with the origin response as it is.
func relay(resp *http.Response) answer { return answer{code: resp.StatusCode, n: -1} }

// localAnswer decides the answer to the request that found an object too
// large to cache: the origin saw neither its conditionals nor its Range
// (a fill fetches whole objects), so edged applies them to the full 200:
//   - If-None-Match (weak), else If-Modified-Since: 304;
//   - one satisfiable range (GET, If-Range holding): 206 with the bytes;
//     an unsatisfiable one when the length is known: 416;
//   - anything else: 200 with the whole body. That covers several ranges
//     (RFC 9110 14.2 lets a server ignore Range; edged does not build
//     multipart/byteranges), and, when the origin sent no Content-Length,
//     ranges that do not end within the bytes already read (have), since
//     their satisfiability is not known before the headers are sent.
//
// If-Match and If-Unmodified-Since are not evaluated here.
func localAnswer(r *http.Request, resp *http.Response, have int64) answer {
	a := relay(resp)
	if resp.StatusCode != http.StatusOK {
		return a
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		if etagMatchWeak(inm, resp.Header.Get("ETag")) {
			a.code = http.StatusNotModified
			return a
		}
	} else if ims, ok := cache.ParseHTTPDate(r.Header.Get("If-Modified-Since")); ok {
		if lm, ok := cache.ParseHTTPDate(resp.Header.Get("Last-Modified")); ok && !lm.Truncate(time.Second).After(ims) {
			a.code = http.StatusNotModified
			return a
		}
	}
	spec, ok := singleRange(r, resp.Header)
	if !ok {
		return a
	}
	size := resp.ContentLength
	if size < 0 {
		if spec.first < 0 || spec.last < 0 || spec.last >= have {
			return a
		}
		return answer{code: http.StatusPartialContent, start: spec.first, n: spec.last - spec.first + 1,
			contentRange: "bytes " + strconv.FormatInt(spec.first, 10) + "-" + strconv.FormatInt(spec.last, 10) + "/*"}
	}
	start, end, ok := spec.resolve(size)
	if !ok {
		return answer{code: http.StatusRequestedRangeNotSatisfiable, contentRange: "bytes */" + strconv.FormatInt(size, 10)}
	}
	return answer{code: http.StatusPartialContent, start: start, n: end - start + 1, contentRange: contentRange(start, end, size)}
}

// singleRange is the one range r asks of a response with header hdr: ok
// is false when none applies (not a GET, no Range, several fields or
// ranges, an invalid value, an If-Range that does not hold).
func singleRange(r *http.Request, hdr http.Header) (rangeSpec, bool) {
	vs := r.Header["Range"]
	if r.Method != http.MethodGet || len(vs) != 1 || !ifRangeHolds(r.Header.Get("If-Range"), hdr) {
		return rangeSpec{}, false
	}
	spec, n, ok := parseRange(vs[0])
	return spec, ok && n == 1
}

// contentRange is the Content-Range of bytes start-end of size.
func contentRange(start, end, size int64) string {
	return "bytes " + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(end, 10) + "/" + strconv.FormatInt(size, 10)
}
