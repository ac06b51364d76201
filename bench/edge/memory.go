package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgestack/edgestack/bench/benchkit"
)

// memoryRun starts edged with a small cache budget and pushes four times
// the budget in distinct objects through it, then reports its resident
// memory from /proc against the budget.
func memoryRun(edgedBin string, budgetMiB, objKiB int) error {
	procs, ctx := benchkit.NewProcs(context.Background())
	defer procs.Close()
	work, err := os.MkdirTemp("", "bench-edge-mem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if edgedBin == "" {
		edgedBin = filepath.Join(work, "edged")
		if out, err := exec.Command("go", "build", "-o", edgedBin, "./cmd/edged").CombinedOutput(); err != nil {
			return fmt.Errorf("build edged: %v\n%s", err, out)
		}
	}
	payload := []byte(strings.Repeat("m", objKiB<<10))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		_, _ = w.Write(payload)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	port, admin := benchkit.FreePort(), benchkit.FreePort()
	cfg := fmt.Sprintf(`admin: {listen: "127.0.0.1:%s"}
log: {level: warn}
listeners: [{address: "127.0.0.1:%s"}]
cache: {max_size: %dMiB, max_object_size: 1MiB}
distributions:
  - name: mem
    domains: ["*"]
    origins: [{name: o, url: "http://%s"}]
    default_behavior: {origin: o}
`, admin, port, budgetMiB, ln.Addr())
	cfgPath := filepath.Join(work, "edged.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := procs.Start("edged", []string{edgedBin, "run", "-config", cfgPath}, work, nil)
	if err != nil {
		return err
	}
	if err := benchkit.WaitTCP(ctx, p, func() error {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
		}
		return err
	}, 20*time.Second); err != nil {
		return err
	}
	idle, _ := benchkit.TreeUsage(p.Cmd.Process.Pid)
	objects := 4 * (budgetMiB << 10) / objKiB
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var peak int64
	var mu sync.Mutex
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				resp, err := client.Get("http://127.0.0.1:" + port + "/obj/" + strconv.Itoa(i))
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if i%512 == 0 {
					if u, err := benchkit.TreeUsage(p.Cmd.Process.Pid); err == nil {
						mu.Lock()
						peak = max(peak, u.RSS)
						mu.Unlock()
					}
				}
			}
		}()
	}
	for i := range objects {
		next <- i
	}
	close(next)
	wg.Wait()
	time.Sleep(time.Second)
	end, _ := benchkit.TreeUsage(p.Cmd.Process.Pid)
	peak = max(peak, end.RSS)
	fmt.Printf("memory: %d distinct %d KiB objects (%d MiB, 4x the %d MiB budget) in %.1fs\n", objects, objKiB, objects*objKiB>>10, budgetMiB, time.Since(start).Seconds())
	fmt.Printf("  edged RSS idle %d MiB, after %d MiB, peak sampled %d MiB; budget %d MiB -> overhead over budget %d MiB at peak\n",
		idle.RSS>>20, end.RSS>>20, peak>>20, budgetMiB, peak>>20-int64(budgetMiB))
	return nil
}
