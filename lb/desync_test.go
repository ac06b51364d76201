package lb

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/httpguard"
	"github.com/edgestack/edgestack/internal/httpguard/guardtest"
)

// TestDesyncVectors replays every HTTP desync vector against lbd's front
// end: ambiguous and severe requests get 400 and the target sees nothing;
// compliant and acceptable ones are forwarded.
func TestDesyncVectors(t *testing.T) { engines(t, testDesyncVectors) }

func testDesyncVectors(t *testing.T) {
	vectors, err := guardtest.Load()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	target := newBackend(t, "t", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("X-Vector")] = true
		mu.Unlock()
		w.WriteHeader(204)
	})
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: t
    targets: [{address: "`+target.addr+`"}]
    health_check: {disabled: true}
listeners:
  - name: front
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: t}}
`)
	addr := strings.TrimPrefix(h.url("front"), "http://")
	refused, forwarded := 0, 0
	for i, v := range vectors {
		id := "v" + strconv.Itoa(i)
		head := strings.Replace(string(v.Head("example.test")), "\r\n", "\r\nX-Vector: "+id+"\r\n", 1)
		// Send the body the head announces, as a client would.
		if r := httpguard.Classify([]byte(head)); r.Tier < httpguard.Ambiguous {
			if r.Chunked {
				head += "0\r\n\r\n"
			} else {
				head += strings.Repeat("x", int(r.ContentLength))
			}
		}
		code := sendRaw(t, addr, head)
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		reached := seen[id]
		mu.Unlock()
		switch {
		case v.Refuse():
			refused++
			if code != 400 || reached {
				t.Errorf("%s: status %d, target saw it: %v; want 400 and nothing forwarded", v, code, reached)
			}
		case code == 501 && strings.Contains(strings.ToLower(head), "transfer-encoding"):
			// net/http answers 501 to codings other than a lone chunked.
			forwarded++
		default:
			forwarded++
			if code != 204 || !reached {
				t.Errorf("%s: status %d, target saw it: %v; want forwarded", v, code, reached)
			}
		}
	}
	t.Logf("%d vectors: %d refused with 400, %d forwarded", len(vectors), refused, forwarded)
	if m := h.metrics(); !strings.Contains(m, `edgestack_lbd_desync_rejected_total{listener="front",reason="BothTeClPresent"}`) {
		t.Errorf("desync rejections not counted")
	}
}

func sendRaw(t *testing.T, addr, raw string) int {
	t.Helper()
	code, _, err := guardtest.Send(addr, []byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return code
}
