package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkEngine10k runs 10,000 checks at a 1 s interval against four local
// listeners for a fixed time and reports what that costs:
//
//	probes/s          probes completed per second over the measured window
//	cpu-ms/1k-probes  user+system CPU time of the whole process (engine and
//	                  the in-process test servers) per 1,000 probes
//	heap-inuse-MB     runtime.MemStats.HeapInuse at the end of the window
//	max-goroutines    most goroutines seen (sampled every 10 ms), test
//	                  servers included
//	failed-probes     probes that failed (should be 0)
//	new-conns/s       (http) connections opened per second in the window:
//	                  far below probes/s when connections are reused
//
// The body runs once whatever b.N is; run it with
//
//	go test -run '^$' -bench Engine10k -benchtime 1x ./internal/health/
func BenchmarkEngine10k(b *testing.B) {
	for _, kind := range []Kind{KindTCP, KindHTTP} {
		b.Run(string(kind), func(b *testing.B) { benchEngine(b, kind, 10_000, 4, 4*time.Second) })
	}
}

func benchEngine(b *testing.B, kind Kind, nChecks, nListeners int, window time.Duration) {
	addrs := make([]string, nListeners)
	var conns atomic.Int64 // connections accepted by the HTTP servers
	for i := range addrs {
		if kind == KindTCP {
			addrs[i] = benchTCPListener(b)
		} else {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte("ok"))
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			b.Cleanup(srv.Close)
			addrs[i] = strings.TrimPrefix(srv.URL, "http://")
		}
	}

	reg := prometheus.NewRegistry()
	e, err := NewEngine(Options{Registerer: reg, Namespace: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.Start(ctx)
	for i := range nChecks {
		cfg := CheckConfig{Kind: kind, Address: addrs[i%nListeners], Interval: config.Duration(time.Second)}
		if err := e.Set("check-"+strconv.Itoa(i), cfg); err != nil {
			b.Fatal(err)
		}
	}

	// Sample the goroutine count while the engine runs.
	var maxG atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if n := int64(runtime.NumGoroutine()); n > maxG.Load() {
				maxG.Store(n)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()

	// Let the first runs, spread over one interval, happen before measuring.
	time.Sleep(1500 * time.Millisecond)
	probes0, _ := benchProbes(b, reg)
	conns0 := conns.Load()
	cpu0 := cpuTime()
	b.ResetTimer()
	time.Sleep(window)
	b.StopTimer()
	cpu1 := cpuTime()
	probes1, failed := benchProbes(b, reg)
	newConns := conns.Load() - conns0
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	close(stop)
	wg.Wait()
	e.Close()

	probes := probes1 - probes0
	if probes == 0 {
		b.Fatal("no probes ran")
	}
	healthy := 0
	for _, st := range e.List() {
		if st.State == Healthy {
			healthy++
		}
	}
	if healthy != nChecks {
		b.Errorf("%d of %d checks healthy at the end", healthy, nChecks)
	}
	b.ReportMetric(probes/window.Seconds(), "probes/s")
	b.ReportMetric(float64((cpu1-cpu0).Milliseconds())/probes*1000, "cpu-ms/1k-probes")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-inuse-MB")
	b.ReportMetric(float64(maxG.Load()), "max-goroutines")
	b.ReportMetric(failed, "failed-probes")
	if kind != KindTCP {
		b.ReportMetric(float64(newConns)/window.Seconds(), "new-conns/s")
	}
}

// benchProbes returns the number of probes done and failed so far.
func benchProbes(b *testing.B, reg *prometheus.Registry) (done, failed float64) {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "bench_health_probe_duration_seconds":
				done += float64(m.GetHistogram().GetSampleCount())
			case "bench_health_probe_failures_total":
				failed += m.GetCounter().GetValue()
			}
		}
	}
	return done, failed
}

// cpuTime is the user plus system CPU time used by the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchTCPListener accepts and closes connections until the benchmark ends.
func benchTCPListener(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	b.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}
