package edge

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	dto "github.com/prometheus/client_model/go"
)

// TestSendChoice: each size class tries both ways, then sends by the one
// that cost less per byte, still trying the other now and then; it
// follows a change of costs, ignores differences under the switching
// margin, and classes do not mix.
func TestSendChoice(t *testing.T) {
	// run makes n sends of size; cost gives what each way costs per byte.
	// It returns how many used sendfile.
	run := func(sc *sendChoice, size int64, n int, cost func(sendfile bool) float64) (sendfiles int) {
		for range n {
			sf, measure := sc.pick(size)
			if sf {
				sendfiles++
			}
			if measure {
				sc.note(size, sf, time.Duration(cost(sf)*float64(size)))
			}
		}
		return sendfiles
	}
	const mib, kib100 = 1 << 20, 100 << 10
	sc := newSendChoice()
	writeCheaper := func(sf bool) float64 {
		if sf {
			return 0.28 // ns per byte: 280 µs per MiB, as sendfile on the Intel VM
		}
		return 0.22
	}
	sendfileCheaper := func(sf bool) float64 {
		if sf {
			return 0.12
		}
		return 0.18
	}
	run(sc, mib, 64, writeCheaper)
	if sf, settled := sc.prefers(sendClassOf(mib)); sf || !settled {
		t.Fatalf("1 MiB after 64 sends with writes cheaper: prefers sendfile %v, settled %v", sf, settled)
	}
	if n := run(sc, mib, 3200, writeCheaper); n < 3200/sendExplore/2 || n > 3200/sendExplore*2 {
		t.Errorf("settled on writes: %d of 3200 sends by sendfile, want about 1 in %d (still trying it)", n, sendExplore)
	}
	// Another class has its own figures.
	run(sc, kib100, 64, sendfileCheaper)
	if sf, _ := sc.prefers(sendClassOf(kib100)); !sf {
		t.Errorf("100 KiB with sendfile cheaper: prefers a write")
	}
	if sf, _ := sc.prefers(sendClassOf(mib)); sf {
		t.Errorf("1 MiB changed its choice from another class's sends")
	}
	// The machine changes (say, another load): the choice follows.
	run(sc, mib, 6400, sendfileCheaper)
	if sf, _ := sc.prefers(sendClassOf(mib)); !sf {
		t.Errorf("1 MiB after sendfile became cheaper: still prefers a write")
	}
	// Within the margin nothing flips.
	sc = newSendChoice()
	run(sc, mib, 6400, func(sf bool) float64 {
		if sf {
			return 0.204
		}
		return 0.200
	})
	if sf, _ := sc.prefers(sendClassOf(mib)); !sf {
		t.Errorf("a 2%% difference made it switch away from sendfile")
	}
	for size, want := range map[int64]int{64 << 10: 0, 127 << 10: 0, 128 << 10: 1, mib: 4, 8 * mib: 7, 64 * mib: 7, 1: 0} {
		if got := sendClassOf(size); got != want {
			t.Errorf("sendClassOf(%d) = %d, want %d", size, got, want)
		}
	}
}

// TestSendLargeBothWays: with sendfile_max_size auto, large hits go out
// both ways while edged measures them (sendfile from the copy, and a
// measured write from memory), byte for byte over one keep-alive
// connection, and both ways get measurements.
func TestSendLargeBothWays(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile path is Linux only")
	}
	dir := t.TempDir()
	if err := cache.CheckBlobDir(dir); err != nil {
		t.Skip(err)
	}
	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte(rand.IntN(256))
	}
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write(body)
	})
	te := startEdge(t, "listeners:\n  - address: 127.0.0.1:0\ncache:\n  max_size: 64MiB\n  max_object_size: 2MiB\n  sendfile_dir: "+dir+"\n"+oneOrigin(o, ""), nil)
	te.get("/big")
	te.wait()
	for i := range 2 * (sendMinSamples + 2) {
		r := te.get("/big")
		if r.xcache() != "Hit" || !bytes.Equal([]byte(r.body), body) {
			t.Fatalf("hit #%d: %s, %d bytes, equal %v", i, r.xcache(), len(r.body), bytes.Equal([]byte(r.body), body))
		}
	}
	c := &te.svc.h.sends.classes[sendClassOf(int64(len(body)))]
	c.mu.Lock()
	samples := c.samples
	c.mu.Unlock()
	if samples[0] < sendMinSamples || samples[1] < sendMinSamples {
		t.Errorf("measured sends (write, sendfile): %v, want at least %d each", samples, sendMinSamples)
	}
	var counted [2]float64
	for i, ctr := range te.svc.m.largeSends {
		var m dto.Metric
		if err := ctr.Write(&m); err != nil {
			t.Fatal(err)
		}
		counted[i] = m.GetCounter().GetValue()
	}
	if counted[0] < sendMinSamples || counted[1] < sendMinSamples || counted[0]+counted[1] != float64(2*(sendMinSamples+2)) {
		t.Errorf("edgestack_edged_large_hit_sends_total (write, sendfile): %v, want both ways and %d in all", counted, 2*(sendMinSamples+2))
	}
}
