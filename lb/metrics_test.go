package lb

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
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
