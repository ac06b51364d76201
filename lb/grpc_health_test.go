package lb

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/health"
)

// TestGRPCGroupHealth: a grpc group's targets are checked with the gRPC
// health service by default; a target whose service says NOT_SERVING
// turns unhealthy (reason not_serving) and its calls go to the other
// target, until it serves again.
func TestGRPCGroupHealth(t *testing.T) {
	a := newH2Target(t, nil, false)
	b := newH2Target(t, nil, false)
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: rpc
    protocol_version: grpc
    targets: [{address: "`+a.addr+`"}, {address: "`+b.addr+`"}]
    health_check: {interval: 300ms, timeout: 300ms, healthy_threshold: 1, unhealthy_threshold: 2}
listeners:
  - name: front
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: rpc}}
`)
	state := func(addr, st string) func() bool {
		return func() bool {
			return strings.Contains(h.metrics(), `edgestack_lbd_target_state{state="`+st+`",target="`+addr+`",target_group="rpc"} 1`)
		}
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	// call makes n unary calls (HTTP/1.1 to lbd, HTTP/2 to the target).
	call := func(n int) {
		t.Helper()
		for range n {
			req, _ := http.NewRequest("POST", h.url("front")+"/grpc.Echo/Say", bytes.NewReader(grpcFrame("lb")))
			req.Header.Set("Content-Type", "application/grpc")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(body, grpcFrame("hello lb")) || resp.Trailer.Get("Grpc-Status") != "0" {
				t.Fatalf("call: %d %q trailers %v", resp.StatusCode, body, resp.Trailer)
			}
		}
	}

	waitUntil(t, 10*time.Second, "both targets healthy", func() bool { return state(a.addr, "healthy")() && state(b.addr, "healthy")() })
	call(10)
	if a.says.Load() == 0 || b.says.Load() == 0 {
		t.Fatalf("calls split %d/%d, want both targets used", a.says.Load(), b.says.Load())
	}

	a.notServing.Store(true)
	waitUntil(t, 10*time.Second, "a unhealthy", state(a.addr, "unhealthy"))
	st, ok := h.svc.engine.Status("tg/rpc/" + a.addr)
	if !ok || st.Kind != health.KindGRPC || st.LastResult.Reason != health.ReasonNotServing || !strings.HasSuffix(st.LastError, "/grpc.health.v1.Health/Check: NOT_SERVING") {
		t.Errorf("check of a: %+v", st)
	}
	if !state(b.addr, "healthy")() {
		t.Fatal("b is no longer healthy: traffic would fail open")
	}
	beforeA, beforeB := a.says.Load(), b.says.Load()
	call(10)
	if got := a.says.Load() - beforeA; got != 0 {
		t.Errorf("a, not serving, got %d of 10 calls", got)
	}
	if got := b.says.Load() - beforeB; got != 10 {
		t.Errorf("b got %d of 10 calls, want all", got)
	}

	a.notServing.Store(false)
	waitUntil(t, 10*time.Second, "a healthy again", state(a.addr, "healthy"))
	beforeA = a.says.Load()
	call(10)
	if a.says.Load() == beforeA {
		t.Error("a serves again but gets no calls")
	}
}
