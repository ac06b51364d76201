package edge

import (
	"context"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name         string
		live, budget int64
		want         int
	}{
		{"empty heap", 0, 256 * mib, gcPercentMax},
		{"small heap, default budget: 8 MiB of garbage", 5 * mib, 256 * mib, 160},
		{"heap at the floor", 8 * mib, 256 * mib, 100},
		{"full cache: half the live heap", 300 * mib, 256 * mib, gcPercentMin},
		{"tiny heap: bounded", 64 << 10, 256 * mib, gcPercentMax},
		{"small budget: a 4 MiB floor", 4 * mib, 16 * mib, 100},
		{"large budget: 1/32 of it", 64 * mib, 4096 * mib, 200},
	} {
		if got := gcPercent(uint64(c.live), gcFloor(c.budget)); got != c.want {
			t.Errorf("%s: gcPercent(%d, floor %d) = %d, want %d", c.name, c.live, gcFloor(c.budget), got, c.want)
		}
	}
}

// TestGCTunerStops: the tuner sets GOGC above 50 for this test's small
// heap and returns when its context ends.
func TestGCTunerStops(t *testing.T) {
	old := debug.SetGCPercent(gcPercentMin)
	defer debug.SetGCPercent(old)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); gcTuner(ctx, func() int64 { return 1 << 30 }) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(gcRetune / 2)
		p := debug.SetGCPercent(gcPercentMin)
		debug.SetGCPercent(p)
		if p > gcPercentMin {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC still %d after 10 s; a 32 MiB floor over this test's heap should raise it", p)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("gcTuner did not return after its context ended")
	}
}
