package health

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus collectors.
type metrics struct {
	state    *prometheus.GaugeVec     // {check}
	duration *prometheus.HistogramVec // {kind}
	failures *prometheus.CounterVec   // {kind, reason}
	// Pre-resolved children, so a probe does no label lookups.
	durationBy map[Kind]prometheus.Observer
	failuresBy map[Kind]map[Reason]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, ns string) (*metrics, error) {
	m := &metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "health", Name: "check_state",
			Help: "State of each health check: 0 unknown, 1 healthy, 2 unhealthy (after inverted and disabled).",
		}, []string{"check"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "health", Name: "probe_duration_seconds",
			Help: "Duration of health check probes, successful or not, by kind.",
			// From half a millisecond (local targets) to beyond any sensible timeout.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "health", Name: "probe_failures_total",
			Help: "Failed health check probes by kind and reason (timeout, refused, status, body, tls, dns, grpc_status, not_serving, protocol, other).",
		}, []string{"kind", "reason"}),
		durationBy: map[Kind]prometheus.Observer{},
		failuresBy: map[Kind]map[Reason]prometheus.Counter{},
	}
	for _, k := range Kinds() {
		if !k.probes() {
			continue
		}
		m.durationBy[k] = m.duration.WithLabelValues(string(k))
		m.failuresBy[k] = map[Reason]prometheus.Counter{}
		for _, r := range Reasons() {
			m.failuresBy[k][r] = m.failures.WithLabelValues(string(k), string(r))
		}
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.state, m.duration, m.failures} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, c)
	}
	if err := errors.Join(errs...); err != nil {
		for _, c := range done {
			reg.Unregister(c)
		}
		return nil, fmt.Errorf("health: register metrics (namespace %q): %w", ns, err)
	}
	return m, nil
}

// unregister removes the collectors from reg (on Close), so a new engine
// may register the same names.
func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	reg.Unregister(m.state)
	reg.Unregister(m.duration)
	reg.Unregister(m.failures)
}
