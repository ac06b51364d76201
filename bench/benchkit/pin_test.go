package benchkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// allowed reads a thread's Cpus_allowed_list.
func allowed(t *testing.T, pid, tid int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", strconv.Itoa(tid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Cpus_allowed_list for %d/%d", pid, tid)
	return ""
}

func TestPinCoversTheTree(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("no /proc")
	}
	cpus := AllCPUs()
	if len(cpus) < 2 {
		t.Skip("needs two CPUs to tell pinned from unpinned")
	}
	// A shell with a child: Pin must reach the grandchild too.
	cmd := exec.Command("sh", "-c", "sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var ids []int
	for deadline := time.Now().Add(5 * time.Second); len(ids) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		all, err := readProcs()
		if err != nil {
			t.Fatal(err)
		}
		ids = tree(all, cmd.Process.Pid)
	}
	if len(ids) < 2 {
		t.Fatalf("process tree of %d: %v; want the shell and its child", cmd.Process.Pid, ids)
	}
	check := func(want string) {
		t.Helper()
		for _, id := range ids {
			if got := allowed(t, id, id); got != want {
				t.Errorf("process %d may run on %q; want %q", id, got, want)
			}
		}
	}
	last := cpus[len(cpus)-1]
	if err := Pin(cmd.Process.Pid, last); err != nil {
		t.Fatal(err)
	}
	check(strconv.Itoa(last))
	if err := Pin(cmd.Process.Pid, cpus...); err != nil {
		t.Fatal(err)
	}
	check(allowed(t, os.Getpid(), os.Getpid()))
}
