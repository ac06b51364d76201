package benchkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReport(t *testing.T) {
	c := &Case{Name: "hit 1 KiB", Metrics: []Metric{MetricRPS, MetricCPU}, Subjects: []*Subject{
		{Name: "edged", Ours: true, Samples: []map[string]float64{{"rps": 100, "cpu_us": 40}, {"rps": 110, "cpu_us": 38}}},
		{Name: "varnish", Samples: []map[string]float64{{"rps": 90, "cpu_us": 45}, {"rps": 80, "cpu_us": 47}}},
		{Name: "nginx", Skipped: "not installed"},
	}}
	c.Summarize()
	if r, peer := c.Ratio(MetricRPS); peer != "varnish" || r < 1.23 || r > 1.24 {
		t.Errorf("rps ratio %v vs %s", r, peer)
	}
	if r, _ := c.Ratio(MetricCPU); r < 1.17 || r > 1.18 {
		t.Errorf("cpu ratio %v (lower is better, so >1 means ours wins)", r)
	}
	res := &Results{Started: time.Unix(0, 0), Host: "test", Machine: DescribeMachine(), Versions: map[string]string{"varnish": "7.1"},
		Suites: []*Suite{{Name: "edge", Title: "Edge", Cases: []*Case{c}}}}
	dir := t.TempDir()
	if d := os.Getenv("BENCHKIT_REPORT_DIR"); d != "" {
		dir = d
	}
	p, err := res.WriteReport(dir)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(p)
	for _, w := range []string{"| requests/s | 105 ±5% | 85 ±6% | skipped: not installed | 1.24× vs varnish |", "![hit 1 KiB](edge-hit-1-kib.png)"} {
		if !strings.Contains(string(md), w) {
			t.Errorf("report lacks %q:\n%s", w, md)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "edge-hit-1-kib.png")); err != nil || st.Size() < 1000 {
		t.Errorf("plot: %v", err)
	}
	if _, err := res.WriteJSON(dir); err != nil {
		t.Fatal(err)
	}
}

// TestLatencyCurve: a case with latency percentiles gets a curve panel
// with one line per subject that has at least two percentiles; the others
// get none.
func TestLatencyCurve(t *testing.T) {
	tests := []struct {
		name     string
		subjects []*Subject
		want     bool
	}{
		{"percentiles", []*Subject{
			{Name: "edged", Ours: true, Samples: []map[string]float64{{"p50_ms": 0.2, "p75_ms": 0.4, "p90_ms": 1, "p99_ms": 6}}},
			{Name: "varnish", Samples: []map[string]float64{{"p50_ms": 0.3, "p99_ms": 2}}},
		}, true},
		{"one percentile only", []*Subject{{Name: "edged", Ours: true, Samples: []map[string]float64{{"p50_ms": 0.2}}}}, false},
		{"no latency", []*Subject{{Name: "edged", Ours: true, Samples: []map[string]float64{{"rps": 1}}}}, false},
		{"skipped subject", []*Subject{{Name: "nginx", Skipped: "not installed", Samples: []map[string]float64{{"p50_ms": 1, "p99_ms": 2}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Case{Name: "c", Metrics: []Metric{MetricP50}, Subjects: tt.subjects}
			if got := c.latencyCurve() != nil; got != tt.want {
				t.Errorf("curve drawn: %v, want %v", got, tt.want)
			}
		})
	}
	if v, ok := medianSample([]map[string]float64{{"k": 3}, {"k": 1}, {"x": 9}, {"k": 2}}, "k"); !ok || v != 2 {
		t.Errorf("medianSample = %v, %v; want 2", v, ok)
	}
}
