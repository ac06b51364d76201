package cache

import (
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Entry is one stored response. It is immutable once built: handlers share
// its Header value slices and Body without copying, so nothing may write to
// them (the slices are clipped, so an append allocates).
type Entry struct {
	Status int
	Header http.Header
	Body   []byte

	// Seq orders the entry against invalidations: it is the store sequence
	// number taken when the origin request started.
	Seq uint64
	// ID identifies this body; a revalidated copy (304) keeps it, so
	// derived variants (compressed copies) stay valid.
	ID uint64

	ResponseTime time.Time     // when the response (or its refresh) arrived
	InitialAge   time.Duration // corrected initial age (RFC 9111 4.2.3)
	Fresh        time.Duration // freshness lifetime
	SWR          time.Duration // serve stale while revalidating for this long past Fresh
	SIE          time.Duration // serve stale on origin errors for this long past Fresh
	NoStale      bool          // must-revalidate/proxy-revalidate/s-maxage/no-cache: never serve stale
	Keep         time.Duration // how long to keep it past Fresh for conditional revalidation

	ETag         string
	LastModified time.Time
	Vary         []string // canonical request field names the response varies on
	Tags         []string // Surrogate-Key / Cache-Tag values
	Encoding     string   // Content-Encoding of Body ("" identity)

	Dist, Host, Path string // for invalidation
	// VaryMarker entries hold only Vary: the real entries live under the
	// secondary keys. HitForMiss entries say "not cacheable: fetch without
	// coalescing" for a while.
	VaryMarker bool
	HitForMiss bool

	// Fast-path precomputed values.
	ContentLength []string // {strconv.Itoa(len(Body))}, shared
	// Wire is Header plus Content-Length serialised for HTTP/1.1
	// ("Name: value\r\n" lines, sorted), for the edge's fast path.
	Wire []byte
	// Blob, when set, holds a second copy of Body in a memfd for
	// sendfile (large bodies only); the store releases it when the entry
	// leaves the cache. Set it only on an entry about to be stored.
	Blob *Blob

	cost int64 // set by Store.Set
}

var ids atomic.Uint64

// NewID returns a fresh body identifier.
func NewID() uint64 { return ids.Add(1) }

// Age is the entry's current age at now.
func (e *Entry) Age(now time.Time) time.Duration {
	a := e.InitialAge + now.Sub(e.ResponseTime)
	if a < 0 {
		return 0
	}
	return a
}

// TTL is how much fresh life is left at now (negative when stale).
func (e *Entry) TTL(now time.Time) time.Duration { return e.Fresh - e.Age(now) }

// Lifetime is how long the store should hold the entry from its response
// time: fresh life left plus the longest stale window.
func (e *Entry) Lifetime() time.Duration {
	extra := e.Keep
	if !e.NoStale {
		extra = max(extra, e.SWR, e.SIE)
	}
	return e.Fresh - e.InitialAge + extra
}

// Cost is the entry's size in bytes as held in memory: body, header
// strings and a fixed overhead for the structs and maps.
func (e *Entry) Cost(key string) int64 {
	n := int64(len(e.Body)) + int64(len(key)) + entryOverhead
	for k, vs := range e.Header {
		n += int64(len(k)) + 48
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	for _, t := range e.Tags {
		n += int64(len(t)) + 16
	}
	n += int64(len(e.Dist) + len(e.Host) + len(e.Path) + len(e.ETag) + 24 + len(e.Wire))
	if e.Blob != nil {
		n += e.Blob.Size()
	}
	return n
}

// entryOverhead approximates the Entry struct, its header map buckets and
// ristretto's per-item bookkeeping.
const entryOverhead = 512

// Policy is a cache behavior's TTL settings (CloudFront's min/default/max
// TTL plus Varnish-style grace and keep).
type Policy struct {
	// MaxTTL zero means no cap.
	MinTTL, DefaultTTL, MaxTTL time.Duration
	// Grace lets a stale object be served when the origin is down, even
	// without stale-if-error (unless the response forbids stale).
	Grace time.Duration
	// StaleWhileRevalidate applies when the response does not set it.
	StaleWhileRevalidate time.Duration
	// Keep retains stale objects with validators for revalidation.
	Keep time.Duration
}

// heuristicStatus lists the status codes cacheable by default (RFC 9110
// 15.1), whose responses may get a heuristic or default lifetime.
func heuristicStatus(code int) bool {
	switch code {
	case 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// Decision is whether and how long to store a response.
type Decision struct {
	Store   bool
	Reason  string // why not, for logs and tests
	Fresh   time.Duration
	SWR     time.Duration
	SIE     time.Duration
	NoStale bool
}

// Decide applies RFC 9111 section 3 and 4.2 with the behavior's policy to a
// response to a GET/HEAD request. hasAuth tells whether the request carried
// Authorization. Responses to other methods are never stored.
func Decide(status int, h http.Header, hasAuth bool, p Policy, now time.Time) Decision {
	cc := ParseCacheControl(h["Cache-Control"])
	if cc.NoStore {
		return Decision{Reason: "no-store"}
	}
	if cc.Private {
		return Decision{Reason: "private"}
	}
	if cc.MustUnderstand && !heuristicStatus(status) {
		return Decision{Reason: "must-understand with unknown status"}
	}
	if hasAuth && !cc.Public && !cc.MustRevalidate && cc.SMaxAge < 0 {
		return Decision{Reason: "authorized request"}
	}
	if status == http.StatusPartialContent || status == http.StatusNotModified {
		return Decision{Reason: "partial or not-modified response"}
	}
	if _, ok := h["Set-Cookie"]; ok {
		return Decision{Reason: "set-cookie"}
	}
	if vs := h.Values("Vary"); len(vs) > 0 {
		for _, v := range vs {
			if strings.Contains(v, "*") {
				return Decision{Reason: "vary *"}
			}
		}
	}
	d := Decision{Store: true}
	explicit := true
	switch {
	case cc.SMaxAge >= 0:
		d.Fresh = cc.SMaxAge
		d.NoStale = true // s-maxage implies proxy-revalidate
	case cc.MaxAge >= 0:
		d.Fresh = cc.MaxAge
	case h.Get("Expires") != "":
		exp, ok := ParseHTTPDate(h.Get("Expires"))
		if !ok {
			d.Fresh = 0 // invalid Expires means already expired
			break
		}
		date, ok := ParseHTTPDate(h.Get("Date"))
		if !ok {
			date = now
		}
		d.Fresh = max(exp.Sub(date), 0)
	default:
		explicit = false
	}
	if !explicit {
		if !heuristicStatus(status) && !cc.Public {
			return Decision{Reason: "status not cacheable by default and no explicit freshness"}
		}
		// Heuristic freshness: the behavior's default TTL, as CloudFront
		// does; with Last-Modified and no default, 10% of its age.
		d.Fresh = p.DefaultTTL
		if lm, ok := ParseHTTPDate(h.Get("Last-Modified")); ok && p.DefaultTTL == 0 {
			date, ok := ParseHTTPDate(h.Get("Date"))
			if !ok {
				date = now
			}
			d.Fresh = min(date.Sub(lm)/10, 24*time.Hour)
		}
	}
	if explicit || d.Fresh > 0 {
		if d.Fresh < p.MinTTL {
			d.Fresh = p.MinTTL
		}
		if p.MaxTTL > 0 && d.Fresh > p.MaxTTL {
			d.Fresh = p.MaxTTL
		}
	}
	if cc.NoCache {
		d.Fresh = 0
		d.NoStale = true
	}
	if cc.MustRevalidate || cc.ProxyRevalidate {
		d.NoStale = true
	}
	if !d.NoStale {
		d.SWR = p.StaleWhileRevalidate
		if cc.StaleWhileRevalidate >= 0 {
			d.SWR = cc.StaleWhileRevalidate
		}
		d.SIE = p.Grace
		if cc.StaleIfError > d.SIE {
			d.SIE = cc.StaleIfError
		}
	}
	return d
}

// CorrectedInitialAge computes RFC 9111 4.2.3's corrected_initial_age.
func CorrectedInitialAge(h http.Header, requestTime, responseTime time.Time) time.Duration {
	return CorrectedInitialAgeOf(h.Get("Date"), h.Get("Age"), requestTime, responseTime)
}

// CorrectedInitialAgeOf is CorrectedInitialAge for a response's first
// Date and Age values ("" for none).
func CorrectedInitialAgeOf(date, age string, requestTime, responseTime time.Time) time.Duration {
	var apparent time.Duration
	if d, ok := ParseHTTPDate(date); ok {
		apparent = max(responseTime.Sub(d), 0)
	}
	ageValue, _ := parseAgeValue(age)
	corrected := ageValue + responseTime.Sub(requestTime)
	return max(apparent, corrected)
}

// hopByHop lists fields never stored or forwarded (RFC 9110 7.6.1), plus
// ones the edge sets per response.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Age", "X-Cache",
}

// StoredHeader returns a fresh copy of h fit for storing: hop-by-hop and
// Connection-listed fields removed, every value slice clipped (so an
// append to one copies it rather than writing into another's values).
// The values share one backing array: one allocation, not one per field.
func StoredHeader(h http.Header) http.Header {
	out := make(http.Header, len(h))
	var conn []string
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				conn = append(conn, http.CanonicalHeaderKey(f))
			}
		}
	}
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	values := make([]string, 0, n)
	for k, vs := range h {
		if slices.Contains(hopByHop, k) || slices.Contains(conn, k) {
			continue
		}
		start := len(values)
		values = append(values, vs...)
		out[k] = values[start:len(values):len(values)]
	}
	return out
}

// MergeHeader returns the header of a refreshed entry: stored fields
// updated with those of a 304 response (RFC 9111 4.3.4), except framing
// fields. The result is a new map; old is not touched.
func MergeHeader(old, fresh http.Header) http.Header {
	out := make(http.Header, len(old)+len(fresh))
	for k, vs := range old {
		out[k] = vs
	}
	skip := []string{"Content-Length", "Content-Encoding", "Content-Range", "Content-Type"}
	for k, vs := range StoredHeader(fresh) {
		if slices.Contains(skip, k) {
			continue
		}
		out[k] = vs
	}
	return out
}

// VaryFields lists the canonical field names of a Vary header.
func VaryFields(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Vary") {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				f = http.CanonicalHeaderKey(f)
				if !slices.Contains(out, f) {
					out = append(out, f)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// ParseTags returns the purge tags of a response: Surrogate-Key is
// space-separated (Fastly), Cache-Tag comma-separated (Cloudflare).
func ParseTags(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Surrogate-Key") {
		out = append(out, strings.Fields(v)...)
	}
	for _, v := range h.Values("Cache-Tag") {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// WireHeader serialises h (sorted by name) and a Content-Length line.
func WireHeader(h http.Header, contentLength string) []byte {
	keys := make([]string, 0, len(h))
	n := 0
	for k, vs := range h {
		keys = append(keys, k)
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	slices.Sort(keys)
	b := make([]byte, 0, n+len(contentLength)+20)
	for _, k := range keys {
		if k == "Content-Length" {
			continue
		}
		for _, v := range h[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	if contentLength != "" {
		b = append(b, "Content-Length: "...)
		b = append(b, contentLength...)
		b = append(b, "\r\n"...)
	}
	return b
}
