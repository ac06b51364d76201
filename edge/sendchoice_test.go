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

// TestSendChoice: the two ways alternate by epochs until each has been
// measured, then large hits go the way whose epochs cost the process less
// CPU per byte, still trying the other now and then; the choice follows a
// change of costs, ignores differences under the switching margin, and
// does not count epochs whose sends were too sparse to say.
func TestSendChoice(t *testing.T) {
	// A fake process: each send costs its way's ns per byte plus other
	// work's fixed CPU per send, and takes gap of wall time.
	type fake struct {
		cpu, other time.Duration
		now        time.Time
	}
	setup := func() (*sendChoice, *fake) {
		f := &fake{now: time.Unix(1e9, 0), other: 5 * time.Microsecond}
		return newSendChoice(func() time.Duration { return f.cpu }, func() time.Time { return f.now }), f
	}
	const mib = 1 << 20
	// run makes n sends of 1 MiB, gap apart, and returns how many used
	// sendfile and the notes of a switch.
	run := func(sc *sendChoice, f *fake, n int, gap time.Duration, nsPerByte func(sendfile bool) float64) (sendfiles int, switches []sendSwitchNote) {
		for range n {
			sf, note := sc.pick(mib)
			if sf {
				sendfiles++
			}
			if note.switched {
				switches = append(switches, note)
			}
			f.cpu += time.Duration(nsPerByte(sf)*mib) + f.other
			f.now = f.now.Add(gap)
		}
		return sendfiles, switches
	}
	ways := func(write, sendfile float64) func(bool) float64 {
		return func(sf bool) float64 {
			if sf {
				return sendfile
			}
			return write
		}
	}
	writeCheaper := ways(0.21, 0.28) // ns per byte, as 1 MiB hits on the Intel VM
	sendfileCheaper := ways(0.28, 0.16)
	const gap = 250 * time.Microsecond // 4,000 hits/s
	perEpoch := int(sendEpochMin / gap)

	sc, f := setup()
	// Learning: both ways in turn, then writes.
	n, switches := run(sc, f, 2*sendLearn*perEpoch+perEpoch, gap, writeCheaper)
	if sf, settled := sc.prefers(); sf || !settled {
		t.Fatalf("after learning with writes cheaper: prefers sendfile %v, settled %v", sf, settled)
	}
	if want := sendLearn * perEpoch; n < want-perEpoch || n > want+perEpoch {
		t.Errorf("learning: %d sends by sendfile, want about half, %d", n, want)
	}
	if len(switches) != 1 || switches[0].sendfile || switches[0].cost[0] >= switches[0].cost[1] {
		t.Errorf("switch notes: %+v, want one to write with its cost lower", switches)
	}
	const long = 200 * sendExplore
	if n, _ := run(sc, f, long*perEpoch, gap, writeCheaper); n < long*perEpoch/sendExplore/2 || n > long*perEpoch/sendExplore*2 {
		t.Errorf("settled on writes: %d of %d sends by sendfile, want about 1 in %d (still trying it)", n, long*perEpoch, sendExplore)
	}
	// The machine changes (say, another load): the choice follows once
	// the explored epochs show it.
	run(sc, f, 2*sendLearn*sendExplore*perEpoch, gap, sendfileCheaper)
	if sf, _ := sc.prefers(); !sf {
		t.Errorf("after sendfile became cheaper: still prefers a write")
	}

	// Within the margin nothing flips.
	sc, f = setup()
	if _, switches := run(sc, f, 40*sendExplore*perEpoch, gap, ways(0.200, 0.204)); len(switches) != 0 {
		t.Errorf("a 2%% difference made it switch: %+v", switches)
	}
	// Sparse large sends: epochs last too long to be counted, so nothing
	// is learned from them.
	sc, f = setup()
	run(sc, f, 40*sendEpochSends, sendEpochMax/sendEpochSends*2, writeCheaper)
	if _, settled := sc.prefers(); settled {
		t.Errorf("settled from epochs longer than %v", sendEpochMax)
	}
	if m := (&costRing{v: [sendLearn]float64{3, 1, 2}, n: 3}).median(); m != 2 {
		t.Errorf("median of 3, 1, 2 = %v", m)
	}
}

// TestSendLargeBothWays: with sendfile_max_size auto, large hits go out
// both ways while edged learns their costs (sendfile from the copy, and a
// write from memory), byte for byte over one keep-alive connection, and
// epochs of both ways are measured.
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
	waitStored(t, te, "/big") // its length unknown, it was streamed and is stored after
	sc := te.svc.h.sends
	sc.mu.Lock()
	sc.epochSends, sc.epochMin = 2, 0
	sc.mu.Unlock()
	const hits = 4 * 2 * 2 // four epochs of each way
	for i := range hits {
		r := te.get("/big")
		if r.xcache() != "Hit" || !bytes.Equal([]byte(r.body), body) {
			t.Fatalf("hit #%d: %s, %d bytes, equal %v", i, r.xcache(), len(r.body), bytes.Equal([]byte(r.body), body))
		}
	}
	sc.mu.Lock()
	epochs := [2]int{sc.costs[0].n, sc.costs[1].n}
	sc.mu.Unlock()
	if epochs[0] < 3 || epochs[1] < 3 {
		t.Errorf("epochs measured (write, sendfile): %v, want at least 3 each", epochs)
	}
	var counted [2]float64
	for i, ctr := range te.svc.m.largeSends {
		var m dto.Metric
		if err := ctr.Write(&m); err != nil {
			t.Fatal(err)
		}
		counted[i] = m.GetCounter().GetValue()
	}
	if counted[0] < hits/4 || counted[1] < hits/4 || counted[0]+counted[1] != hits {
		t.Errorf("edgestack_edged_large_hit_sends_total (write, sendfile): %v, want both ways and %d in all", counted, hits)
	}
}
