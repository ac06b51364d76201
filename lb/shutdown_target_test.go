package lb

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestTargetShutsDownUnderLoad stops a target abruptly the way Go servers
// stop (Server.Shutdown: listener closed, idle keep-alive connections
// closed under lbd's pooled connections) while clients keep sending. Every
// request must still be answered by the other target, and none may wait
// for a timeout.
func TestTargetShutsDownUnderLoad(t *testing.T) { engines(t, testTargetShutsDownUnderLoad) }

func testTargetShutsDownUnderLoad(t *testing.T) {
	for round := 0; round < 3; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			a := newBackend(t, "a", nil)
			b := newBackend(t, "b", nil)
			h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: t
    targets: [{address: "`+a.addr+`"}, {address: "`+b.addr+`"}]
    health_check: {disabled: true}
listeners:
  - name: front
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: t}}
`)
			url := h.url("front") + "/x"
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var ok, failed atomic.Int64
			var slowest atomic.Int64
			var mu sync.Mutex
			var errs []string
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := &http.Client{Timeout: 3 * time.Second}
					for n := 0; n < 20000; n++ {
						select {
						case <-stop:
							return
						default:
						}
						start := time.Now()
						resp, err := c.Get(url)
						if d := int64(time.Since(start)); d > slowest.Load() {
							slowest.Store(d)
						}
						if err != nil {
							failed.Add(1)
							mu.Lock()
							errs = append(errs, err.Error())
							mu.Unlock()
							continue
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							failed.Add(1)
							mu.Lock()
							errs = append(errs, resp.Status)
							mu.Unlock()
							continue
						}
						ok.Add(1)
					}
				}()
			}
			time.Sleep(200 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = a.srv.Shutdown(ctx)
			cancel()
			time.Sleep(300 * time.Millisecond)
			close(stop)
			wg.Wait()
			t.Logf("%d ok, %d failed, slowest %v", ok.Load(), failed.Load(), time.Duration(slowest.Load()))
			if failed.Load() > 0 {
				t.Errorf("%d requests failed: %v", failed.Load(), errs[:min(len(errs), 5)])
			}
			if d := time.Duration(slowest.Load()); d > 2*time.Second {
				t.Errorf("a request took %v: it waited for a timeout instead of going to the other target", d)
			}
		})
	}
}

// blackhole returns a loopback address whose listener never accepts and
// whose accept queue is full, so a connect to it hangs (SYNs are dropped)
// as it does to a host that vanished from the network.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the accept queue; the connects after that hang.
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("could not fill the accept queue of a loopback listener")
	return ""
}

// TestConnectTimeout sends requests to a group where one target swallows
// SYNs: each request must be retried on the other target once
// connect_timeout has passed, well inside the client's own timeout.
func TestConnectTimeout(t *testing.T) { engines(t, testConnectTimeout) }

func testConnectTimeout(t *testing.T) {
	hole := blackhole(t)
	good := newBackend(t, "good", nil)
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: t
    targets: [{address: "`+hole+`"}, {address: "`+good.addr+`"}]
    health_check: {disabled: true}
    passive_health: {consecutive_failures: 1000}
    connect_timeout: 200ms
listeners:
  - name: front
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: t}}
`)
	c := &http.Client{Timeout: 2 * time.Second}
	for i := 0; i < 4; i++ {
		code, body, _ := get(t, c, h.url("front")+"/")
		if code != 200 || body != "good" {
			t.Fatalf("request %d: %d %q, want 200 from the other target", i, code, body)
		}
	}
	if !strings.Contains(h.metrics(), `edgestack_lbd_retries_total{target_group="t"}`) {
		t.Errorf("retries after connect timeouts not counted")
	}
}
