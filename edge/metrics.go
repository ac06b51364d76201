package edge

import (
	"net/http"
	"strconv"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	"github.com/edgestack/edgestack/edge/origin"
	"github.com/prometheus/client_golang/prometheus"
)

// Cache statuses, the closed set of the cache_status label.
const (
	stHit = iota
	stMiss
	stRefreshHit
	stStale
	stPass
	stError
	stRedirect
	stDenied
	numStatus
)

var statusNames = [numStatus]string{"Hit", "Miss", "RefreshHit", "Stale", "Pass", "Error", "Redirect", "Denied"}

// xcache holds the shared X-Cache values (never written to).
var xcache = func() (out [numStatus][]string) {
	for i, n := range statusNames {
		out[i] = []string{n + " from edged"}
	}
	return
}()

type metrics struct {
	requests  *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	originDur *prometheus.HistogramVec
	originErr *prometheus.CounterVec
	coalesced prometheus.Counter
	invalid   prometheus.Counter
	streamed  prometheus.Counter
	relayed   prometheus.Counter
	rawRelay  prometheus.Counter
	websocket prometheus.Gauge
	// largeSends counts large hits with a sendfile copy by the way they
	// went out: [write, sendfile] (sendchoice.go).
	largeSends [2]prometheus.Counter
}

const ns = "edgestack_edged_"

func newMetrics(reg prometheus.Registerer, store *cache.Store) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "requests_total",
			Help: "Viewer requests by distribution and cache status."}, []string{"distribution", "cache_status"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "response_body_bytes_total",
			Help: "Response body bytes sent to viewers."}, []string{"distribution"}),
		originDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: ns + "origin_request_duration_seconds",
			Help:    "Time to response headers of origin requests, by origin and status class.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"distribution", "origin", "code"}),
		originErr: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "origin_errors_total",
			Help: "Origin requests that failed without a response."}, []string{"distribution", "origin"}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "coalesced_requests_total",
			Help: "Requests that waited for another request's origin fetch instead of making their own."}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "invalidations_total",
			Help: "Invalidation patterns and tags applied."}),
		streamed: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "uncached_large_objects_total",
			Help: "Responses for objects larger than cache.max_object_size streamed through uncached (the fill that found one too large, and the pass-throughs after)."}),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "relayed_requests_total",
			Help: "Requests for uncacheable objects (hit-for-miss) served by the HTTP/1.1 front end's relay rather than the full handler; counted among the misses too."}),
		rawRelay: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "relayed_raw_requests_total",
			Help: "Relayed requests whose answer (again one that cannot be stored) was copied to the viewer from the origin's bytes rather than through the handler's response path; counted among the relayed too."}),
		websocket: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "websockets_open",
			Help: "WebSocket connections relayed to origins right now."}),
	}
	sends := prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "large_hit_sends_total",
		Help: "Hits with a sendfile copy of their body, by how the body went out: sendfile, or a write from memory where measuring found that cheaper (cache.sendfile_max_size auto, from 512 KiB)."}, []string{"way"})
	m.largeSends = [2]prometheus.Counter{sends.WithLabelValues("write"), sends.WithLabelValues("sendfile")}
	reg.MustRegister(sends)
	reg.MustRegister(m.requests, m.bytes, m.originDur, m.originErr, m.coalesced, m.invalid, m.streamed, m.relayed, m.rawRelay, m.websocket,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: ns + "cache_bytes", Help: "Bytes held by cached objects."},
			func() float64 { return float64(store.Stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: ns + "cache_max_bytes", Help: "The cache's memory budget."},
			func() float64 { return float64(store.Stats().MaxBytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: ns + "cache_objects", Help: "Objects in the cache."},
			func() float64 { return float64(store.Stats().Objects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: ns + "cache_evictions_total", Help: "Objects evicted to stay within the budget."},
			func() float64 { return float64(store.Stats().Evictions) }),
	)
	return m
}

// instrumented wraps an origin with latency and error metrics.
type instrumented struct {
	origin.Origin
	dur  *prometheus.HistogramVec
	errs prometheus.Counter
	dist string
}

func (m *metrics) instrument(dist string, o origin.Origin) origin.Origin {
	return &instrumented{Origin: o, dur: m.originDur, errs: m.originErr.WithLabelValues(dist, o.Name()), dist: dist}
}

func (i *instrumented) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := i.Origin.RoundTrip(r)
	if err != nil {
		i.errs.Inc()
		return nil, err
	}
	i.dur.WithLabelValues(i.dist, i.Name(), strconv.Itoa(resp.StatusCode/100)+"xx").Observe(time.Since(start).Seconds())
	return resp, nil
}
