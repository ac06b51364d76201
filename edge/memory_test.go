package edge

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"testing"
)

// TestMemoryBounded fills the cache with four times its budget in
// distinct objects and checks that the store's accounted bytes stay within
// the budget and the Go heap within budget + a stated overhead.
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a cache")
	}
	const (
		budget  = 32 << 20
		objSize = 16 << 10
		objects = 4 * budget / objSize // 8192 objects, 128 MiB of content
		// overhead: ristretto counters and buffers, the test's origin and
		// clients, Go runtime; stated in README.
		overhead = 24 << 20
	)
	payload := make([]byte, objSize)
	for i := range payload {
		payload[i] = byte(rand.IntN(256))
	}
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Length", strconv.Itoa(objSize))
		_, _ = w.Write(payload)
	})
	te := startEdge(t, fmt.Sprintf("listeners:\n  - address: 127.0.0.1:0\ncache:\n  max_size: %d\n  max_object_size: 1MiB\n", budget)+oneOrigin(o, ""), nil)
	h := te.svc.Handler()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				req := httptest.NewRequest("GET", "/obj/"+strconv.Itoa(i), nil)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 || rec.Body.Len() != objSize {
					t.Errorf("object %d: %d %d", i, rec.Code, rec.Body.Len())
				}
			}
		}()
	}
	for i := range objects {
		work <- i
	}
	close(work)
	wg.Wait()
	te.wait()
	runtime.GC()
	debug.FreeOSMemory()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	st := te.svc.Store().Stats()
	t.Logf("objects stored %d, accounted %d bytes (budget %d), evictions %d; heap in use %d MiB before, %d MiB after",
		st.Objects, st.Bytes, budget, st.Evictions, before.HeapInuse>>20, after.HeapInuse>>20)
	if st.Bytes > budget {
		t.Errorf("accounted bytes %d exceed the budget %d", st.Bytes, budget)
	}
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > budget+overhead {
		t.Errorf("heap grew by %d MiB, more than budget %d MiB + overhead %d MiB", grown>>20, budget>>20, overhead>>20)
	}
	if st.Objects == 0 || st.Evictions == 0 {
		t.Errorf("expected a full cache with evictions: %+v", st)
	}
}
