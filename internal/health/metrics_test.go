package health

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// metricsGetter reads single values out of a registry.
type metricsGetter struct {
	reg *prometheus.Registry
}

// value returns the value of the series of name with exactly labels: a
// gauge's or counter's value, or a histogram's sample count.
func (m *metricsGetter) value(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, met := range mf.GetMetric() {
			match := len(met.GetLabel()) == len(labels)
			for _, lp := range met.GetLabel() {
				match = match && labels[lp.GetName()] == lp.GetValue()
			}
			if !match {
				continue
			}
			switch {
			case met.Gauge != nil:
				return met.GetGauge().GetValue()
			case met.Counter != nil:
				return met.GetCounter().GetValue()
			case met.Histogram != nil:
				return float64(met.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// seriesCount returns how many series the metric name has in reg.
func seriesCount(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// TestPromlint runs promlint over a registry holding every metric of the
// engine with series in it.
func TestPromlint(t *testing.T) {
	e, reg := newTestEngine(t)
	up, _ := tcpListener(t)
	mustSet(t, e, "a", CheckConfig{Kind: KindTCP, Address: up, Interval: testInterval, HealthyThreshold: 1})
	waitState(t, e, "a", Healthy)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"test_health_check_state", "test_health_probe_duration_seconds", "test_health_probe_failures_total"} {
		if !names[n] {
			t.Errorf("metric %s not gathered", n)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
