package lb

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// TestMetricsLintAndAccessLog drives traffic through both engines, then
// lints every metric lbd registers and checks the access log entries.
func TestMetricsLintAndAccessLog(t *testing.T) {
	b := newBackend(t, "b", nil)
	logFile := filepath.Join(t.TempDir(), "access.log")
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
access_log:
  format: json
  file: `+logFile+`
target_groups:
  - name: web
    targets: [{address: "`+b.addr+`"}]
    health_check: {disabled: true}
listeners:
  - name: fast
    listen: 127.0.0.1:0
    engine: fast
    default_action: {forward: {target_group: web}}
  - name: std
    listen: 127.0.0.1:0
    engine: std
    default_action: {forward: {target_group: web}}
`)
	client := &http.Client{Timeout: 5 * time.Second}
	for _, l := range []string{"fast", "std"} {
		if code, body, _ := get(t, client, h.url(l)+"/page?x=1", "User-Agent", "lbtest/1"); code != 200 || body != "b" {
			t.Fatalf("%s: %d %q", l, code, body)
		}
	}
	// Bytes both ways on each listener: at least the request line sent and
	// the status line plus body received.
	// Connections add their bytes every 64 KiB and when they close: at
	// least the request line in, the status line plus body out.
	client.CloseIdleConnections()
	minIn, minOut := float64(len("GET /page?x=1 HTTP/1.1\r\n")), float64(len("HTTP/1.1 200 OK\r\n")+len("b"))
	waitUntil(t, 3*time.Second, "client bytes of both listeners counted", func() bool {
		text := h.metrics()
		for _, l := range []string{"fast", "std"} {
			in, _ := metricValue(text, `edgestack_lbd_http_bytes_total{direction="in",listener="`+l+`"}`)
			out, _ := metricValue(text, `edgestack_lbd_http_bytes_total{direction="out",listener="`+l+`"}`)
			if in < minIn || out < minOut {
				return false
			}
		}
		return true
	})
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "edgestack_lbd_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
	// Both engines logged the request with the target and its status.
	var lines []string
	waitUntil(t, 3*time.Second, "two access log lines", func() bool {
		data, _ := os.ReadFile(logFile)
		lines = strings.Split(strings.TrimSpace(string(data)), "\n")
		return len(lines) >= 2
	})
	for _, line := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if e["uri"] != "/page?x=1" || e["status"] != 200.0 || e["upstream_addr"] != b.addr || e["upstream_status"] != 200.0 || e["user_agent"] != "lbtest/1" {
			t.Errorf("entry %v", e)
		}
	}
}

// metricValue returns the value of one series in Prometheus text output.
func metricValue(text, series string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
