package health

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgestack/edgestack/internal/config"
)

// These tests run the real scheduler in a synctest bubble, on fake time,
// with a fake prober in place of the network (real sockets do not work in a
// bubble). They can therefore assert on timing exactly.

// fakeProber records when it is called and fails the calls fail says.
type fakeProber struct {
	mu          sync.Mutex
	calls       []time.Time
	inflight    int
	maxInflight int
	block       time.Duration    // how long a probe takes (bounded by ctx)
	fail        func(n int) bool // whether call n (from 0) fails
}

func (f *fakeProber) probe(ctx context.Context) (int, Reason, error) {
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, time.Now())
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	if f.block > 0 {
		select {
		case <-time.After(f.block):
		case <-ctx.Done():
			return 0, ReasonTimeout, ctx.Err()
		}
	}
	if f.fail != nil && f.fail(n) {
		return 503, ReasonStatus, errors.New("fake failure")
	}
	return 200, "", nil
}

func (f *fakeProber) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeProber) inFlight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inflight
}

// setFake adds a tcp check and swaps its prober for f. Call it before Start,
// so that the real prober never runs.
func setFake(t *testing.T, e *Engine, id string, cfg CheckConfig, f *fakeProber) {
	t.Helper()
	cfg.Kind, cfg.Address = KindTCP, "192.0.2.1:1" // never dialled
	mustSet(t, e, id, cfg)
	e.mu.Lock()
	e.get(id).prober = f
	e.mu.Unlock()
}

func newBubbleEngine(t *testing.T, opts Options) *Engine {
	t.Helper()
	e, err := NewEngine(opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestScheduleSpreadAndCadence checks that first runs are spread over the
// interval and that every check then runs once per interval, give or take
// the jitter.
func TestScheduleSpreadAndCadence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEngine(t, Options{})
		defer e.Close()
		const n = 200
		fakes := make([]*fakeProber, n)
		for i := range fakes {
			fakes[i] = &fakeProber{}
			setFake(t, e, "c"+itoa3(i), CheckConfig{Interval: config.Duration(time.Second)}, fakes[i])
		}
		start := time.Now()
		e.Start(t.Context())
		time.Sleep(10*time.Second + 500*time.Millisecond)
		e.Close()

		buckets := map[int]int{} // probes per 100ms window
		var firstMin, firstMax time.Duration = time.Hour, 0
		for i, f := range fakes {
			if c := len(f.calls); c < 9 || c > 12 {
				t.Errorf("check %d probed %d times in 10.5 intervals", i, c)
			}
			first := f.calls[0].Sub(start)
			firstMin, firstMax = min(firstMin, first), max(firstMax, first)
			for j, at := range f.calls {
				buckets[int(at.Sub(start)/(100*time.Millisecond))]++
				if j > 0 {
					if gap := at.Sub(f.calls[j-1]); gap < 900*time.Millisecond || gap > 1100*time.Millisecond {
						t.Errorf("check %d: %v between probes, want 1s ± 5%%", i, gap)
					}
				}
			}
		}
		if firstMax-firstMin < 500*time.Millisecond {
			t.Errorf("first runs all within %v of each other: not spread", firstMax-firstMin)
		}
		for b, c := range buckets {
			if c > 3*n/10 {
				t.Errorf("%d probes in window %d (expected about %d): a burst", c, b, n/10)
			}
		}
	})
}

// TestMaxConcurrent checks that no more than MaxConcurrent probes are in
// flight and that the workers, once started, are reused.
func TestMaxConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEngine(t, Options{MaxConcurrent: 5})
		defer e.Close()
		fakes := make([]*fakeProber, 50)
		for i := range fakes {
			fakes[i] = &fakeProber{block: 400 * time.Millisecond}
			setFake(t, e, "c"+itoa3(i), CheckConfig{Interval: config.Duration(time.Second)}, fakes[i])
		}
		e.Start(t.Context())
		time.Sleep(5 * time.Second)
		e.mu.Lock()
		workers := e.workers
		e.mu.Unlock()
		e.Close()
		total := 0
		for _, f := range fakes {
			total += f.count()
		}
		// 5 workers busy 400ms per probe for 5s can do at most ~62 probes.
		if total < 50 || total > 65 {
			t.Errorf("%d probes in 5s with 5 workers of 400ms probes", total)
		}
		if workers != 5 {
			t.Errorf("%d workers, want 5", workers)
		}
	})
}

// TestThresholdsOnFakeTime checks exactly after which probe each transition
// happens: healthy_threshold 2, unhealthy_threshold 3, probes 0-1 pass, 2-6
// fail, 7+ pass.
func TestThresholdsOnFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEngine(t, Options{})
		defer e.Close()
		f := &fakeProber{fail: func(n int) bool { return n >= 2 && n <= 6 }}
		setFake(t, e, "c", CheckConfig{Interval: config.Duration(time.Second), HealthyThreshold: 2, UnhealthyThreshold: 3}, f)
		type seen struct {
			ev     event
			probes int
		}
		var mu sync.Mutex
		var got []seen
		e.Subscribe(SubscriberFunc(func(id string, from, to State) {
			mu.Lock()
			got = append(got, seen{event{id, from, to}, f.count()})
			mu.Unlock()
		}))
		e.Start(t.Context())
		time.Sleep(12 * time.Second)
		synctest.Wait()
		e.Close()
		want := []seen{
			{event{"c", Unknown, Healthy}, 2},   // after 2 successes
			{event{"c", Healthy, Unhealthy}, 5}, // after failures 2, 3, 4
			{event{"c", Unhealthy, Healthy}, 9}, // after successes 7, 8
		}
		if len(got) != len(want) {
			t.Fatalf("events %+v, want %+v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
			}
		}
	})
}

// TestTimeoutOnFakeTime checks that a probe is cut off at exactly its
// timeout and counts as a timeout.
func TestTimeoutOnFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEngine(t, Options{})
		defer e.Close()
		f := &fakeProber{block: time.Hour}
		setFake(t, e, "c", CheckConfig{Interval: config.Duration(time.Second), Timeout: config.Duration(300 * time.Millisecond), UnhealthyThreshold: 1}, f)
		e.Start(t.Context())
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		st, _ := e.Status("c")
		if st.State != Unhealthy || st.LastResult.Reason != ReasonTimeout || st.LastResult.Duration != 300*time.Millisecond {
			t.Errorf("status %+v, want unhealthy by a 300ms timeout", st)
		}
	})
}

// TestRemoveCancelsProbeInFlight checks that Remove cancels a probe that is
// running and that the check is never probed again.
func TestRemoveCancelsProbeInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEngine(t, Options{})
		defer e.Close()
		f := &fakeProber{block: time.Hour}
		setFake(t, e, "c", CheckConfig{Interval: config.Duration(10 * time.Second), Timeout: config.Duration(10 * time.Second)}, f)
		e.Start(t.Context())
		for f.count() == 0 {
			time.Sleep(100 * time.Millisecond)
		}
		synctest.Wait()
		if f.inFlight() != 1 {
			t.Fatalf("%d probes in flight, want 1", f.inFlight())
		}
		e.Remove("c")
		synctest.Wait()
		if f.inFlight() != 0 {
			t.Error("probe still in flight after Remove")
		}
		time.Sleep(time.Minute)
		if f.count() != 1 {
			t.Errorf("probed %d times after Remove", f.count()-1)
		}
	})
}

// TestCalculatedScheduledOnFakeTime checks that calculated checks are also
// re-evaluated on their interval and follow their children at once.
func TestCalculatedScheduledOnFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEngine(t, Options{})
		defer e.Close()
		f := &fakeProber{fail: func(n int) bool { return n >= 6 }}
		setFake(t, e, "child", CheckConfig{Interval: config.Duration(time.Second), HealthyThreshold: 1, UnhealthyThreshold: 1}, f)
		mustSet(t, e, "calc", CheckConfig{Kind: KindCalculated, Children: []string{"child"}, Interval: config.Duration(time.Second)})
		e.Start(t.Context())
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		if s, _ := e.State("calc"); s != Healthy {
			t.Fatalf("calc %s, want healthy", s)
		}
		st, _ := e.Status("calc")
		time.Sleep(2 * time.Second)
		synctest.Wait()
		st2, _ := e.Status("calc")
		if !st2.LastResult.At.After(st.LastResult.At) {
			t.Error("calculated check not re-evaluated on schedule")
		}
		time.Sleep(6 * time.Second)
		synctest.Wait()
		if s, _ := e.State("calc"); s != Unhealthy {
			t.Errorf("calc %s after the child failed, want unhealthy", s)
		}
	})
}

func itoa3(i int) string {
	return string([]byte{byte('0' + i/100%10), byte('0' + i/10%10), byte('0' + i%10)})
}
