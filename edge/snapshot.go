package edge

import (
	"bytes"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	"github.com/edgestack/edgestack/edge/glob"
	"github.com/edgestack/edgestack/edge/origin"
	"github.com/edgestack/edgestack/internal/accesslog"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// snapshot is an immutable compiled config; a reload swaps it whole.
type snapshot struct {
	exact       map[string]*dist
	wild        []wildDist
	any         *dist
	dists       []*dist
	trusted     []netip.Prefix
	maxObject   int64
	sendfile    int64  // body size from which stored entries get a memfd copy; 0 off
	sendfileMax int64  // and up to which; 0 no bound
	sendfileDir string // where the copies live; "" memfd
	sendAuto    bool   // sendfile_max_size auto: Handler.sends picks sendfile or a write per large hit
	maxURL      int
	maxBody     int64
	wsIdle      time.Duration     // a WebSocket tunnel with no bytes either way this long is closed; 0 never
	keys        map[string][]byte // signing keys
	log         *accesslog.Logger
	origins     []origin.Origin
}

type wildDist struct {
	suffix string // ".example.test"
	d      *dist
}

type dist struct {
	name      string
	behaviors []*behavior
	def       *behavior
	allow     []netip.Prefix
	deny      []netip.Prefix
	counters  [numStatus]prometheus.Counter
	bytes     prometheus.Counter
}

const (
	vpAllow = iota
	vpRedirect
	vpHTTPSOnly
)

type behavior struct {
	d          *dist
	pattern    string
	literal    bool
	origin     origin.Origin
	methods    []string
	allowHdr   string
	policy     cache.Policy
	keyPrefix  string
	qsMode     int // 0 none, 1 all, 2 allow
	qsNames    []string
	keyHeaders []string // canonical
	keyCookies []string
	compress   bool
	viewer     int
	errors     map[int]errorResponse
	headers    []headerField
	signed     bool
	readTO     time.Duration
	name       string // for logs: dist/pattern
	rawRelay   bool   // relayed answers may take the raw relay (relay_raw.go)
}

type headerField struct {
	key   string
	value []string
}

type errorResponse struct {
	page string
	code int
	ttl  time.Duration
}

// wantsBlob says whether a stored body of n bytes gets a sendfile copy.
func (s *snapshot) wantsBlob(n int64) bool {
	return s.sendfile > 0 && n >= s.sendfile && (s.sendfileMax == 0 || n <= s.sendfileMax)
}

func (s *snapshot) lookup(host string) *dist {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	if d, ok := s.exact[host]; ok {
		return d
	}
	lower := strings.ToLower(strings.TrimSuffix(host, "."))
	if d, ok := s.exact[lower]; ok {
		return d
	}
	for _, w := range s.wild {
		if strings.HasSuffix(lower, w.suffix) && !strings.Contains(lower[:len(lower)-len(w.suffix)], ".") && len(lower) > len(w.suffix) {
			return w.d
		}
	}
	return s.any
}

// lookupBytes is lookup without allocating for the common case (an exact,
// lower-case host, optionally with a port).
func (s *snapshot) lookupBytes(host []byte) *dist {
	h := host
	if i := bytes.LastIndexByte(h, ':'); i >= 0 && bytes.IndexByte(h[i:], ']') < 0 {
		h = h[:i]
	}
	if d, ok := s.exact[string(h)]; ok {
		return d
	}
	if s.any != nil && len(s.wild) == 0 && len(s.exact) == 0 && validHost(host) {
		return s.any // a catch-all alone: nothing else could match
	}
	return s.lookup(string(host))
}

// validHost is a cheap sanity check of a Host value for the catch-all
// distribution (net/http's own check runs on the slow path).
func validHost(h []byte) bool {
	for _, c := range h {
		if c <= ' ' || c >= 0x7f || c == '/' || c == '\\' || c == '@' {
			return false
		}
	}
	return true
}

func (d *dist) behavior(path string) *behavior {
	for _, b := range d.behaviors {
		if b.literal {
			if b.pattern == path {
				return b
			}
		} else if glob.Match(b.pattern, path) {
			return b
		}
	}
	return d.def
}

// build compiles cfg. Origins get fresh transports.
func build(cfg *Config, m *metrics) (*snapshot, error) {
	s := &snapshot{
		exact:       map[string]*dist{},
		maxObject:   int64(cfg.Cache.MaxObjectSize),
		sendfile:    int64(cfg.Cache.SendfileMinSize),
		sendfileMax: int64(cfg.Cache.sendfileMax()),
		sendfileDir: cfg.Cache.SendfileDir,
		sendAuto:    cfg.Cache.SendfileMaxSize == SizeAuto,
		maxURL:      cfg.Limits.MaxURLLength,
		maxBody:     int64(cfg.Limits.MaxBodySize),
		wsIdle:      cfg.Timeouts.WebSocketIdle.D(),
		keys:        map[string][]byte{},
	}
	if s.sendfile > 0 {
		if err := cache.CheckBlobDir(s.sendfileDir); err != nil {
			return nil, config.Errorf("cache.sendfile_dir", "%v", err)
		}
	}
	for _, p := range cfg.TrustedProxies {
		pp, _ := parsePrefix(p)
		s.trusted = append(s.trusted, pp)
	}
	for k, v := range cfg.SigningKeys {
		s.keys[k] = []byte(v)
	}
	geo := map[string][]netip.Prefix{}
	for name, cidrs := range cfg.GeoSets {
		for _, c := range cidrs {
			p, _ := parsePrefix(c)
			geo[name] = append(geo[name], p)
		}
	}
	prefixes := func(items []string) []netip.Prefix {
		var out []netip.Prefix
		for _, it := range items {
			if name, ok := strings.CutPrefix(it, "geo:"); ok {
				out = append(out, geo[name]...)
				continue
			}
			p, _ := parsePrefix(it)
			out = append(out, p)
		}
		return out
	}
	for i := range cfg.Distributions {
		dc := &cfg.Distributions[i]
		d := &dist{name: dc.Name, allow: prefixes(dc.Access.Allow), deny: prefixes(dc.Access.Deny)}
		if m != nil {
			for st := range numStatus {
				d.counters[st] = m.requests.WithLabelValues(dc.Name, statusNames[st])
			}
			d.bytes = m.bytes.WithLabelValues(dc.Name)
		}
		targets := map[string]origin.Origin{}
		for _, oc := range dc.Origins {
			o, err := buildOrigin(oc)
			if err != nil {
				return nil, fmt.Errorf("distribution %q: %w", dc.Name, err)
			}
			if m != nil {
				o = m.instrument(dc.Name, o)
			}
			targets[oc.Name] = o
			s.origins = append(s.origins, o)
		}
		for _, gc := range dc.OriginGroups {
			var members []origin.Origin
			for _, n := range gc.Members {
				members = append(members, targets[n])
			}
			fs := gc.FailoverStatus
			if len(fs) == 0 {
				fs = []int{500, 502, 503, 504}
			}
			g, err := origin.NewGroup(origin.GroupOptions{Name: gc.Name, Members: members, FailoverStatus: fs})
			if err != nil {
				return nil, err
			}
			targets[gc.Name] = g
		}
		readTO := map[string]time.Duration{}
		for _, oc := range dc.Origins {
			readTO[oc.Name] = durOr(oc.ReadTimeout.D(), 60*time.Second)
		}
		for _, gc := range dc.OriginGroups {
			var t time.Duration
			for _, n := range gc.Members {
				t += readTO[n]
			}
			readTO[gc.Name] = t
		}
		mk := func(bc *Behavior) *behavior {
			b := compileBehavior(d, bc)
			b.origin = targets[bc.Origin]
			b.readTO = readTO[bc.Origin]
			return b
		}
		for j := range dc.Behaviors {
			d.behaviors = append(d.behaviors, mk(&dc.Behaviors[j]))
		}
		d.def = mk(&dc.DefaultBehavior)
		for _, dom := range dc.Domains {
			dom = strings.ToLower(strings.TrimSuffix(dom, "."))
			switch {
			case dom == "*":
				s.any = d
			case strings.HasPrefix(dom, "*."):
				s.wild = append(s.wild, wildDist{suffix: dom[1:], d: d})
			default:
				s.exact[dom] = d
			}
		}
		s.dists = append(s.dists, d)
	}
	// Longest wildcard suffix first.
	slices.SortFunc(s.wild, func(a, b wildDist) int { return len(b.suffix) - len(a.suffix) })
	return s, nil
}

func durOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func buildOrigin(oc OriginConfig) (origin.Origin, error) {
	if oc.Bucket != nil {
		b, err := origin.NewBucket(origin.BucketOptions{
			Name: oc.Name, Dir: oc.Bucket.Dir, IndexDocument: oc.Bucket.IndexDocument,
			ErrorDocument: oc.Bucket.ErrorDocument, CacheControl: oc.Bucket.CacheControl,
		})
		if err != nil {
			return nil, err
		}
		// The folder stays open while any in-flight request may use it.
		runtime.AddCleanup(b, func(c func()) { c() }, b.Close)
		return b, nil
	}
	return origin.NewHTTP(origin.HTTPOptions{
		Name: oc.Name, URL: oc.URL, HostHeader: oc.HostHeader,
		ConnectTimeout:  oc.ConnectTimeout.D(),
		ResponseTimeout: durOr(oc.ResponseTimeout.D(), 30*time.Second),
		MaxConnsPerHost: oc.MaxConns, InsecureSkipVerify: oc.InsecureSkipVerify,
	})
}

func compileBehavior(d *dist, bc *Behavior) *behavior {
	b := &behavior{
		d: d, pattern: bc.Path, literal: glob.Literal(bc.Path),
		methods:  bc.AllowedMethods,
		compress: bc.Compress, signed: bc.SignedURLs,
		keyPrefix: d.name + "\x00",
		errors:    map[int]errorResponse{},
		name:      d.name + " " + bc.Path,
	}
	if bc.Path == "" {
		b.name = d.name + " default"
	}
	if len(b.methods) == 0 {
		b.methods = []string{"GET", "HEAD"}
	}
	b.allowHdr = strings.Join(b.methods, ", ")
	b.policy = cache.Policy{
		MinTTL: bc.MinTTL.D(), DefaultTTL: 24 * time.Hour, MaxTTL: 365 * 24 * time.Hour,
		Grace: bc.Grace.D(), StaleWhileRevalidate: bc.StaleWhileRevalidate.D(), Keep: 10 * time.Minute,
	}
	if bc.DefaultTTL != nil {
		b.policy.DefaultTTL = bc.DefaultTTL.D()
	}
	if bc.MaxTTL != nil {
		// Policy.MaxTTL zero means "no cap"; an explicit 0 means
		// "never fresh".
		b.policy.MaxTTL = max(bc.MaxTTL.D(), time.Nanosecond)
	}
	if bc.Keep != nil {
		b.policy.Keep = bc.Keep.D()
	}
	switch bc.CacheKey.QueryStrings {
	case "all":
		b.qsMode = 1
	case "allow":
		b.qsMode = 2
		b.qsNames = bc.CacheKey.QueryStringNames
	}
	for _, h := range bc.CacheKey.Headers {
		b.keyHeaders = append(b.keyHeaders, http.CanonicalHeaderKey(h))
	}
	slices.Sort(b.keyHeaders)
	b.keyCookies = slices.Sorted(slices.Values(bc.CacheKey.Cookies))
	switch bc.ViewerProtocol {
	case "redirect-to-https":
		b.viewer = vpRedirect
	case "https-only":
		b.viewer = vpHTTPSOnly
	}
	for _, e := range bc.ErrorResponses {
		er := errorResponse{page: e.Page, code: e.ResponseCode, ttl: 10 * time.Second}
		if er.code == 0 {
			er.code = e.Status
		}
		if e.TTL != nil {
			er.ttl = e.TTL.D()
		}
		b.errors[e.Status] = er
	}
	keys := make([]string, 0, len(bc.ResponseHeaders))
	for k := range bc.ResponseHeaders {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b.rawRelay = true
	for _, k := range keys {
		ck := http.CanonicalHeaderKey(k)
		switch ck {
		case "Content-Length", "Transfer-Encoding", "Connection":
			b.rawRelay = false // fields the response writer interprets
		}
		if b.addsHeader([]byte(ck)) {
			b.rawRelay = false // two spellings of one field: the last wins
		}
		b.headers = append(b.headers, headerField{ck, []string{bc.ResponseHeaders[k]}})
	}
	return b
}

// addsHeader reports whether the behavior sets the (canonical) field name
// on its responses.
func (b *behavior) addsHeader(name []byte) bool {
	for _, h := range b.headers {
		if h.key == string(name) {
			return true
		}
	}
	return false
}

func (b *behavior) allows(method string) bool {
	if method == http.MethodGet || method == http.MethodHead {
		return slices.Contains(b.methods, method) || (method == http.MethodHead && slices.Contains(b.methods, http.MethodGet))
	}
	return slices.Contains(b.methods, method)
}

// cacheKey builds the key for r: distribution, path, then the configured
// query string, headers and cookies. The forwarded query is returned too
// (only key parts reach the origin).
func (b *behavior) cacheKey(r *http.Request) (key, query string) {
	p := r.URL.Path
	if r.URL.RawPath != "" {
		p = r.URL.RawPath
	}
	if b.qsMode == 0 && len(b.keyHeaders) == 0 && len(b.keyCookies) == 0 {
		return b.keyPrefix + p, ""
	}
	var sb strings.Builder
	sb.WriteString(b.keyPrefix)
	sb.WriteString(p)
	if b.qsMode != 0 && r.URL.RawQuery != "" {
		query = normalizeQuery(r.URL.RawQuery, b.qsMode == 2, b.qsNames)
		if query != "" {
			sb.WriteByte('?')
			sb.WriteString(query)
		}
	}
	for _, h := range b.keyHeaders {
		sb.WriteString("\x00h:")
		sb.WriteString(h)
		sb.WriteByte('=')
		sb.WriteString(strings.Join(r.Header[h], ","))
	}
	if len(b.keyCookies) > 0 {
		for _, name := range b.keyCookies {
			if c, err := r.Cookie(name); err == nil {
				sb.WriteString("\x00c:")
				sb.WriteString(name)
				sb.WriteByte('=')
				sb.WriteString(c.Value)
			}
		}
	}
	return sb.String(), query
}

// normalizeQuery keeps the allowed parameters, sorted by name (values in
// their original order), re-encoded canonically.
func normalizeQuery(raw string, allowOnly bool, names []string) string {
	v, _ := url.ParseQuery(raw)
	if allowOnly {
		for k := range v {
			if !slices.Contains(names, k) {
				delete(v, k)
			}
		}
	}
	return v.Encode()
}
