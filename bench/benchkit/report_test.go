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
