package main

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
)

const good = `log:
  level: info
admin:
  listen: {{.Admin}}
  token: {{.Token}}
target_groups:
  - name: web
    targets:
      - address: 127.0.0.1:{{port "target"}}
    health_check:
      path: /healthz
      interval: 200ms
      timeout: 100ms
      healthy_threshold: 1
listeners:
  - name: front
    listen: 127.0.0.1:{{port "http"}}
    rules:
      - priority: 10
        conditions:
          path: ["/ping"]
        action:
          fixed_response: {status_code: 200, body: pong}
    default_action:
      forward: {target_group: web}
`

const bad = `admin:
  listen: {{.Admin}}
  token: {{.Token}}
target_groups:
  - name: web
    algorithm: fastest
listeners:
  - name: front
    listen: 127.0.0.1:{{port "http"}}
    default_action:
      forward: {target_group: nope}
`

func TestConformance(t *testing.T) {
	// One target per run (Serving is called twice, and -count=N reruns
	// the test with new ports).
	var (
		targetOnce sync.Once
		targetErr  error
	)
	apptest.Conformance(t, apptest.Case{
		Package: "github.com/edgestack/edgestack/cmd/lbd",
		Name:    "lbd",
		Good:    good,
		Bad:     bad,
		BadWant: []string{"cfg.yaml:6:", "algorithm", "cfg.yaml:11:", `no target group named "nope"`},
		Serving: func(t *testing.T, ports map[string]string) {
			// A real target on the port the config names.
			targetOnce.Do(func() {
				ln, err := net.Listen("tcp", "127.0.0.1:"+ports["target"])
				if err != nil {
					targetErr = err
					return
				}
				go func() {
					_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						_, _ = io.WriteString(w, "hello from the target "+r.Header.Get("X-Forwarded-For"))
					}))
				}()
			})
			if targetErr != nil {
				t.Fatal(targetErr)
			}
			client := &http.Client{Timeout: 5 * time.Second}
			var body string
			deadline := time.Now().Add(10 * time.Second)
			for {
				resp, err := client.Get("http://127.0.0.1:" + ports["http"] + "/")
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					body = string(b)
					if resp.StatusCode == 200 && body == "hello from the target 127.0.0.1" {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("proxying to the target: %v %q", err, body)
				}
				time.Sleep(100 * time.Millisecond)
			}
			resp, err := client.Get("http://127.0.0.1:" + ports["http"] + "/ping")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "pong" {
				t.Errorf("fixed response: %q", b)
			}
		},
	})
}
