package edge

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// GC pacing. GOGC=50 keeps the heap near a full cache (garbage up to half
// the live heap, not all of it). With a nearly empty cache the live heap
// is a few MiB, and half of that meant a collection every 2-3 MiB
// allocated: over 100 a second under HTTP/2 load, where a request
// allocates ~3 KiB (HPACK fields, the http.Request), and 1 KiB hits cost
// 14 µs of CPU instead of 10.8 at GOGC=100 (bench/edge README). So the
// garbage allowed between collections is half the live heap but at least
// gcFloor(budget): 1/32 of the cache budget (8 MiB for the default 256
// MiB), which the budget's own headroom covers.
const (
	gcPercentMin = 50   // a full cache: garbage up to half of it
	gcPercentMax = 1000 // a tiny heap: bounded all the same
	gcRetune     = time.Second
)

// gcFloor is the least garbage allowed between collections for a cache
// budget: 1/32 of it, at least 4 MiB.
func gcFloor(budget int64) uint64 { return uint64(max(budget/32, 4<<20)) }

// gcPercent is the GOGC that lets at least floor bytes of garbage
// accumulate over a live heap of live bytes, between gcPercentMin and
// gcPercentMax.
func gcPercent(live, floor uint64) int {
	if live == 0 {
		return gcPercentMax
	}
	p := floor * 100 / live
	return int(min(max(p, gcPercentMin), gcPercentMax))
}

// gcTuner sets GOGC from the live heap and the cache budget (budget
// reads the current one) every gcRetune until ctx ends. SetGCPercent
// stops the world briefly, so it is called only when the value moves by
// more than an eighth.
func gcTuner(ctx context.Context, budget func() int64) {
	t := time.NewTicker(gcRetune)
	defer t.Stop()
	sample := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	cur := gcPercentMin
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rtmetrics.Read(sample)
		if sample[0].Value.Kind() != rtmetrics.KindUint64 {
			return // not this runtime: keep GOGC=50
		}
		p := gcPercent(sample[0].Value.Uint64(), gcFloor(budget()))
		if d := p - cur; d > cur/8 || -d > cur/8 {
			debug.SetGCPercent(p)
			cur = p
		}
	}
}
