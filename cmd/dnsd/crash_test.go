package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/miekg/dns"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestKill9KeepsAcknowledgedChanges applies change batches to a real dnsd,
// kills it with SIGKILL (sometimes while a batch is in flight), restarts
// it and checks that every acknowledged batch is served and no batch is
// half applied.
func TestKill9KeepsAcknowledgedChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	bin := apptest.Build(t, "github.com/edgestack/edgestack/cmd/dnsd")
	dir := t.TempDir()
	dnsAddr, adminAddr := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf("listen: %s\nstorage: %s\nadmin:\n  listen: %s\n  token: tok\n", dnsAddr, filepath.Join(dir, "dnsd.db"), adminAddr)
	cfgPath := filepath.Join(dir, "cfg.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var current *exec.Cmd
	t.Cleanup(func() {
		if current != nil {
			_ = current.Process.Kill()
			_ = current.Wait()
		}
	})
	run := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "-config", cfgPath)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		current = cmd
		deadline := time.Now().Add(15 * time.Second)
		for {
			if resp, err := http.Get("http://" + adminAddr + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return cmd
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("dnsd not ready")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	post := func(path, body string) (int, error) {
		req, _ := http.NewRequest("POST", "http://"+adminAddr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	batch := func(i int) string {
		b, _ := json.Marshal(map[string]any{"changes": []map[string]any{
			{"action": "CREATE", "rrset": map[string]any{"name": fmt.Sprintf("a%d.crash.test.", i), "type": "A", "ttl": 60, "records": []string{"192.0.2.1"}}},
			{"action": "CREATE", "rrset": map[string]any{"name": fmt.Sprintf("b%d.crash.test.", i), "type": "TXT", "ttl": 60, "records": []string{fmt.Sprintf(`"%d"`, i)}}},
		}})
		return string(b)
	}
	exists := func(name string, qt uint16) bool {
		m := new(dns.Msg)
		m.SetQuestion(name, qt)
		var r *dns.Msg
		var err error
		for attempt := range 10 { // EPERM when the shared conntrack table is full
			if r, err = dns.Exchange(m, dnsAddr); err == nil {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("query %s: %v", name, err)
		}
		return r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0
	}

	cmd := run()
	if code, err := post("/v1/zones", `{"name":"crash.test."}`); err != nil || code != 201 {
		t.Fatalf("create zone: %d %v", code, err)
	}
	acked := map[int]bool{}
	next := 0
	for round := range 4 {
		for range 3 {
			if code, err := post("/v1/zones/crash.test/changes", batch(next)); err == nil && code == 200 {
				acked[next] = true
			} else {
				t.Fatalf("batch %d: %d %v", next, code, err)
			}
			next++
		}
		// One more batch raced against SIGKILL.
		inflight := next
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = post("/v1/zones/crash.test/changes", batch(inflight))
		}()
		time.Sleep(time.Duration(round) * time.Millisecond)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		current = nil
		<-done
		next++
		cmd = run()
		for i := range next {
			a, b := exists(fmt.Sprintf("a%d.crash.test.", i), dns.TypeA), exists(fmt.Sprintf("b%d.crash.test.", i), dns.TypeTXT)
			if a != b {
				t.Fatalf("round %d: batch %d half applied (a=%v b=%v)", round, i, a, b)
			}
			if acked[i] && !a {
				t.Fatalf("round %d: acknowledged batch %d lost", round, i)
			}
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	current = nil
}
