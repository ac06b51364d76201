package benchkit

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Results is one run of the harness: what the JSON file holds.
type Results struct {
	Started  time.Time         `json:"started"`
	Host     string            `json:"host"`
	Machine  Machine           `json:"machine"`
	Versions map[string]string `json:"versions"`
	Suites   []*Suite          `json:"suites"`
}

// Machine describes where the numbers were taken.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	LoadAvg   string `json:"load_avg_at_start"`
}

// Suite is one area (dns, edge, lb, stack, failover, memory).
type Suite struct {
	Name  string   `json:"name"`
	Title string   `json:"title"`
	Notes []string `json:"notes,omitempty"`
	Cases []*Case  `json:"cases"`
}

// Metric names one measured figure.
type Metric struct {
	Key            string `json:"key"`  // "rps"
	Name           string `json:"name"` // "requests/s"
	HigherIsBetter bool   `json:"higher_is_better"`
}

// Common metrics.
var (
	MetricRPS    = Metric{Key: "rps", Name: "requests/s", HigherIsBetter: true}
	MetricQPS    = Metric{Key: "qps", Name: "queries/s", HigherIsBetter: true}
	MetricCPU    = Metric{Key: "cpu_us", Name: "server CPU µs/request"}
	MetricP50    = Metric{Key: "p50_ms", Name: "p50 latency ms"}
	MetricP99    = Metric{Key: "p99_ms", Name: "p99 latency ms"}
	keyP75       = "p75_ms"
	keyP90       = "p90_ms"
	MetricMean   = Metric{Key: "mean_ms", Name: "mean latency ms"}
	MetricErrors = Metric{Key: "errors", Name: "errors"}
	MetricRSS    = Metric{Key: "rss_mib", Name: "resident MiB"}
)

// Case is one comparison (e.g. "cache hit 1 KiB") between subjects.
type Case struct {
	Name     string     `json:"name"`
	Metrics  []Metric   `json:"metrics"`
	Subjects []*Subject `json:"subjects"`
}

// Subject is one server in a case: ours or a peer.
type Subject struct {
	Name    string               `json:"name"`
	Ours    bool                 `json:"ours"`
	Skipped string               `json:"skipped,omitempty"`
	Samples []map[string]float64 `json:"samples"`
	Summary map[string]Summary   `json:"summary"`
}

// Summarize fills every subject's summary from its samples.
func (c *Case) Summarize() {
	for _, s := range c.Subjects {
		s.Summary = map[string]Summary{}
		for _, m := range c.Metrics {
			var xs []float64
			for _, smp := range s.Samples {
				if v, ok := smp[m.Key]; ok {
					xs = append(xs, v)
				}
			}
			s.Summary[m.Key] = Summarize(xs)
		}
	}
}

// Sample turns a load run plus the server's usage before and after into
// the common metrics.
func Sample(l Load, before, after Usage, perSecondKey string) map[string]float64 {
	m := map[string]float64{
		perSecondKey:     l.PerSecond,
		MetricErrors.Key: l.Errors,
		MetricMean.Key:   ms(l.Mean),
		MetricRSS.Key:    float64(after.RSS) / (1 << 20),
	}
	if l.P50 > 0 {
		m[MetricP50.Key] = ms(l.P50)
	}
	if l.P99 > 0 {
		m[MetricP99.Key] = ms(l.P99)
	}
	// Kept in the samples (not in the tables) for the latency curve.
	if l.P75 > 0 {
		m[keyP75] = ms(l.P75)
	}
	if l.P90 > 0 {
		m[keyP90] = ms(l.P90)
	}
	if l.Requests > 0 {
		m[MetricCPU.Key] = float64((after.CPU - before.CPU).Microseconds()) / l.Requests
	}
	return m
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Ratio is ours' median over the best peer's median for a metric (for a
// lower-is-better metric, best peer over ours), so > 1 always means we win.
func (c *Case) Ratio(m Metric) (float64, string) {
	var ours *Subject
	best, bestName := math.NaN(), ""
	for _, s := range c.Subjects {
		if s.Skipped != "" {
			continue
		}
		sm := s.Summary[m.Key]
		if sm.N == 0 {
			continue
		}
		v := sm.Median
		if s.Ours {
			ours = s
			continue
		}
		if math.IsNaN(best) || (m.HigherIsBetter && v > best) || (!m.HigherIsBetter && v < best) {
			best, bestName = v, s.Name
		}
	}
	if ours == nil || math.IsNaN(best) {
		return math.NaN(), ""
	}
	o := ours.Summary[m.Key].Median
	if m.HigherIsBetter {
		return o / best, bestName
	}
	return best / o, bestName
}

// DescribeMachine reads the machine's description.
func DescribeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemTotal = strings.TrimSpace(strings.TrimPrefix(strings.Split(string(b), "\n")[0], "MemTotal:"))
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

// WriteJSON writes the results to dir/<date>-<host>.json and returns the path.
func (r *Results) WriteJSON(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, fmt.Sprintf("%s-%s.json", r.Started.Format("2006-01-02T1504"), r.Host))
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	return p, os.WriteFile(p, b, 0o644)
}
