package lb

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/ctl"
)

func TestAdminAPIAndEdgectl(t *testing.T) {
	a := newBackend(t, "a", nil)
	b := newBackend(t, "b", nil)
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: web
    targets: [{address: "`+a.addr+`"}]
    health_check: {interval: 100ms, timeout: 100ms, healthy_threshold: 1}
    deregistration_delay: 300ms
  - name: spare
    health_check: {disabled: true}
listeners:
  - name: front
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: web}}
`)
	edgectl := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		env := map[string]string{"EDGECTL_LBD": h.admin, "EDGECTL_TOKEN": h.token}
		code := ctl.Main(context.Background(), []ctl.Group{ctl.LB()}, append([]string{"lb"}, args...), env, &out, &errb)
		return code, out.String(), errb.String()
	}
	type tc struct {
		name string
		args []string
		code int
		want string // in stdout (or stderr when code != 0)
	}
	for _, x := range []tc{
		{"register", []string{"register", "web", b.addr, "-weight", "2"}, 0, "registered in web"},
		{"register again", []string{"register", "web", b.addr}, 1, "409"},
		{"unknown group", []string{"register", "nope", "127.0.0.1:1"}, 1, `404 Not Found: no such target group "nope"`},
		{"bad address", []string{"register", "web", "not-an-address"}, 1, "address: want host:port"},
		{"groups", []string{"groups"}, 0, "web"},
		{"targets", []string{"targets", "web"}, 0, b.addr},
		{"unknown group targets", []string{"targets", "nope"}, 1, "404"},
		{"usage", []string{"targets"}, 2, "want GROUP"},
		{"deregister unknown", []string{"deregister", "web", "127.0.0.1:9"}, 1, "no such target"},
		{"deregister and wait", []string{"deregister", "web", b.addr, "-wait"}, 0, "removed"},
		{"state", []string{"state", "-json"}, 0, `"target_groups"`},
	} {
		t.Run(x.name, func(t *testing.T) {
			code, out, errs := edgectl(x.args...)
			text := out
			if code != 0 {
				text = errs
			}
			if code != x.code || !strings.Contains(text, x.want) {
				t.Errorf("exit %d, want %d; output %q / %q; want %q", code, x.code, out, errs, x.want)
			}
		})
	}
	// The removed target's series are gone; a's is there.
	waitUntil(t, 3*time.Second, "target a healthy", func() bool {
		return strings.Contains(h.metrics(), `edgestack_lbd_target_state{state="healthy",target="`+a.addr+`",target_group="web"} 1`)
	})
	if m := h.metrics(); strings.Contains(m, `target="`+b.addr+`"`) {
		t.Errorf("metrics still show the removed target")
	}
	// Unused groups' targets say so.
	if code, body := h.api("POST", "/v1/target-groups/spare/targets", `{"address":"`+b.addr+`"}`); code != 201 || !strings.Contains(body, `"unused"`) {
		t.Errorf("register in unused group: %d %s", code, body)
	}
	// Mutations need the token.
	h.token = "wrong"
	if code, _ := h.api("POST", "/v1/target-groups/web/targets", `{"address":"127.0.0.1:5"}`); code != 401 {
		t.Errorf("without the token: %d, want 401", code)
	}
}
