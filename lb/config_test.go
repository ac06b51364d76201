package lb

import (
	"strings"
	"testing"
)

// TestConfigErrors: every bad config is rejected naming the field (and
// line), all problems at once.
func TestConfigErrors(t *testing.T) {
	const head = "admin:\n  listen: 127.0.0.1:0\n"
	type tc struct {
		name string
		yaml string
		want []string
	}
	for _, c := range []tc{
		{"unknown algorithm and protocol", `
target_groups:
  - name: web
    protocol: ftp
    algorithm: fastest
`, []string{"cfg.yaml:6: target_groups[0].protocol", "cfg.yaml:7: target_groups[0].algorithm"}},
		{"bad target and duplicate", `
target_groups:
  - name: web
    targets: [{address: "10.0.0.1"}, {address: "10.0.0.2:80"}, {address: "10.0.0.2:80"}, {address: "10.0.0.3:99999"}]
`, []string{"target_groups[0].targets[0].address: want host:port", "targets[2].address: duplicate target", "targets[3].address: port must be 1..65535"}},
		{"bad health check", `
target_groups:
  - name: web
    health_check: {path: "nope", matcher: "abc", interval: 1ms, healthy_threshold: 11}
`, []string{"health_check.path", "health_check.matcher", "health_check.interval", "health_check.healthy_threshold"}},
		{"listener problems", `
target_groups:
  - name: db
    protocol: tcp
listeners:
  - name: a
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: db}}
  - name: a
    protocol: tcp
    listen: nowhere
    rules: [{priority: 1, conditions: {path: ["/"]}, action: {fixed_response: {status_code: 200}}}]
  - name: c
    protocol: https
    listen: 127.0.0.1:0
    default_action: {fixed_response: {status_code: 700}}
  - name: d
    protocol: tls
    listen: 127.0.0.1:0
    tls_mode: sideways
    target_group: nope
  - name: e
    protocol: quic
    listen: 127.0.0.1:0
`, []string{`listeners[0].rules: target group "db" has protocol tcp`, `listeners[1].name: duplicate listener "a"`, "listeners[1].listen: want host:port",
			"listeners[1].rules: rules and default_action are for http", "listeners[1].target_group: required", "listeners[2].tls: https listeners need",
			"listeners[2].default_action.fixed_response.status_code", "listeners[3].tls_mode", `listeners[3].target_group: no target group named "nope"`,
			`listeners[4].protocol: unknown protocol "quic"`}},
		{"rules", `
target_groups:
  - name: web
listeners:
  - name: a
    listen: 127.0.0.1:0
    acme_http01: true
    engine: turbo
    rules:
      - priority: 5
        conditions: {host: ["a b"], source_ip: ["300.0.0.1"]}
        action: {forward: {target_groups: [{name: web, weight: 0}]}}
      - priority: 5
        conditions: {method: [get]}
        action: {redirect: {path: "relative"}}
    default_action: {forward: {target_group: web}}
`, []string{"listeners[0].acme_http01: needs cert_store.dir", "listeners[0].engine", "rules[0].conditions.host[0]", "rules[0].conditions.source_ip[0]",
			"rules[0].action.forward.target_groups: weights must not all be zero", "rules[1].priority: duplicate priority 5", "rules[1].conditions.method[0]", "rules[1].action.redirect.path"}},
		{"protocol_version", `
target_groups:
  - name: web
    protocol_version: http3
  - name: db
    protocol: tcp
    protocol_version: http2
  - name: api
    protocol_version: grpc
listeners:
  - name: front
    listen: 127.0.0.1:0
    engine: fast
    rules: [{priority: 1, conditions: {path: ["/api/*"]}, action: {forward: {target_group: api}}}]
    default_action: {fixed_response: {status_code: 404}}
`, []string{`cfg.yaml:6: target_groups[0].protocol_version: unknown protocol version "http3"`,
			"cfg.yaml:9: target_groups[1].protocol_version: http2 needs an http or https group, not tcp",
			`cfg.yaml:15: listeners[0].engine: listener "front": the fast engine speaks only HTTP/1.1 to targets and cannot forward to target group "api" (protocol_version grpc)`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseConfig(t, head+c.yaml)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
		})
	}
}
