package lb

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const reloadConfig = `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: web
    targets: [{{range .Targets}}{address: "{{.}}"}, {{end}}]
    health_check: {interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 3}
    deregistration_delay: 2s
listeners:
  - name: front
    listen: 127.0.0.1:{{.Port}}
    max_connections: {{.MaxConns}}
    rules:
      - priority: {{.Priority}}
        conditions: {path: ["/fixed"]}
        action: {fixed_response: {status_code: 200, body: fixed}}
    default_action: {forward: {target_group: web}}
`

// TestReloadUnderLoad runs a bounded load (2,000 requests from 8
// goroutines) while the config is reloaded and targets are registered and
// deregistered through the API, and counts zero failed requests.
func TestReloadUnderLoad(t *testing.T) { engines(t, testReloadUnderLoad) }

func testReloadUnderLoad(t *testing.T) {
	var backends []*backend
	for i := range 4 {
		backends = append(backends, newBackend(t, fmt.Sprintf("b%d", i), func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Millisecond)
			_, _ = io.WriteString(w, "ok")
		}))
	}
	port := render(t, `{{port "p"}}`, nil)
	maxConns := 0
	cfgFor := func(prio int, targets ...string) string {
		return render(t, reloadConfig, map[string]any{"Targets": targets, "Port": port, "Priority": prio, "MaxConns": maxConns})
	}
	h := startLB(t, cfgFor(1, backends[0].addr, backends[1].addr))
	base := h.url("front")

	const total, workers = 2000, 8
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	stop := time.Now().Add(20 * time.Second) // bound in time as well as count
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
			defer client.CloseIdleConnections()
			for sent.Add(1) <= total && time.Now().Before(stop) {
				resp, err := client.Get(base + "/x")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	// Meanwhile: reloads, registrations, deregistrations.
	steps := []func() error{
		func() error { return h.reload(cfgFor(2, backends[0].addr, backends[1].addr)) },
		func() error {
			return apiOK(h.api("POST", "/v1/target-groups/web/targets", `{"address":"`+backends[2].addr+`"}`))
		},
		func() error { return h.reload(cfgFor(3, backends[1].addr)) }, // b0 drains
		func() error {
			return apiOK(h.api("POST", "/v1/target-groups/web/targets", `{"address":"`+backends[3].addr+`"}`))
		},
		func() error { return apiOK(h.api("DELETE", "/v1/target-groups/web/targets/"+backends[2].addr, "")) },
		func() error { return h.reload(cfgFor(4, backends[0].addr, backends[1].addr)) },
		func() error {
			// A listener change that needs a new server on the same
			// socket: the socket is handed over, nothing is reset.
			maxConns = 1000
			return h.reload(cfgFor(5, backends[0].addr, backends[1].addr))
		},
		func() error { return apiOK(h.api("DELETE", "/v1/target-groups/web/targets/"+backends[1].addr, "")) },
	}
	for _, step := range steps {
		time.Sleep(150 * time.Millisecond)
		if err := step(); err != nil {
			t.Errorf("step: %v", err)
		}
	}
	wg.Wait()
	n := min(sent.Load(), total)
	t.Logf("%d requests, %d failed", n, failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed; first: %v", failed.Load(), n, firstErr.Load())
	}
	if n < total/2 {
		t.Errorf("only %d requests sent", n)
	}
}

func apiOK(code int, body string) error {
	if code >= 300 {
		return fmt.Errorf("API %d: %s", code, strings.TrimSpace(body))
	}
	return nil
}
