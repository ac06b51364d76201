// Package benchkit is what every edgestack benchmark runner shares: starting
// and always stopping the servers under test, reading their CPU time and
// resident memory from /proc, running subjects alternately, statistics, and
// the parsers of the load generators' output.
package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Procs owns every process a benchmark starts and stops them all, by
// process group, on Close, on Ctrl-C or SIGTERM, and when ctx ends.
type Procs struct {
	mu    sync.Mutex
	procs []*Proc
	stop  func()
}

// Proc is one started server.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  *bytes.Buffer
	done chan struct{}
	err  error
}

// NewProcs returns a process owner; the returned context is cancelled on
// SIGINT/SIGTERM, after which Close stops everything.
func NewProcs(ctx context.Context) (*Procs, context.Context) {
	ctx, cancel := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	p := &Procs{stop: cancel}
	go func() {
		<-ctx.Done()
		p.Close()
	}()
	return p, ctx
}

// Start runs argv in its own process group, logging its output to a buffer
// (and to logPath when not empty).
func (p *Procs) Start(name string, argv []string, dir string, env []string) (*Proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr := &Proc{Name: name, Cmd: cmd, Log: &bytes.Buffer{}, done: make(chan struct{})}
	w := &lockedWriter{w: pr.Log}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { pr.err = cmd.Wait(); close(pr.done) }()
	p.mu.Lock()
	p.procs = append(p.procs, pr)
	p.mu.Unlock()
	return pr, nil
}

// Exited reports whether the process has ended, with its error.
func (pr *Proc) Exited() (bool, error) {
	select {
	case <-pr.done:
		return true, pr.err
	default:
		return false, nil
	}
}

// Stop terminates the process group: SIGTERM, then SIGKILL after 5 s.
func (pr *Proc) Stop() {
	if pr.Cmd.Process == nil {
		return
	}
	pgid := pr.Cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-pr.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-pr.done
	}
}

// Close stops every process started, newest first.
func (p *Procs) Close() {
	p.mu.Lock()
	procs := p.procs
	p.procs = nil
	p.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop()
	}
	p.stop()
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// Usage is CPU time and memory of a process tree at one moment.
type Usage struct {
	CPU time.Duration // user + system of the process and its live descendants
	RSS int64         // bytes resident, summed over the tree
}

// TreeUsage reads /proc for pid and every live descendant (nginx workers,
// the varnish child, haproxy threads are all counted).
func TreeUsage(pid int) (Usage, error) {
	all, err := readProcs()
	if err != nil {
		return Usage{}, err
	}
	if _, ok := all[pid]; !ok {
		return Usage{}, fmt.Errorf("process %d not found", pid)
	}
	var u Usage
	for _, id := range tree(all, pid) {
		s := all[id]
		u.CPU += time.Duration(s.ticks) * time.Second / clockTicks
		u.RSS += s.rss
	}
	return u, nil
}

// procStat is what TreeUsage and Pin need from /proc/PID/stat.
type procStat struct {
	ppid       int
	ticks, rss int64
}

// readProcs reads every process's parent, CPU ticks and resident bytes.
func readProcs() (map[int]procStat, error) {
	all := map[int]procStat{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	page := int64(os.Getpagesize())
	for _, e := range ents {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		if st, ok := parseStat(b, page); ok {
			all[id] = st
		}
	}
	return all, nil
}

// parseStat reads a /proc/<pid>/stat line.
func parseStat(b []byte, page int64) (procStat, bool) {
	// Fields after the command name, which may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 {
		return procStat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return procStat{ppid: ppid, ticks: ut + stt, rss: rss * page}, true
}

// tree lists pid and its live descendants.
func tree(all map[int]procStat, pid int) []int {
	var ids []int
	for id := range all {
		for cur, hops := id, 0; cur > 1 && hops < 64; hops++ {
			if cur == pid {
				ids = append(ids, id)
				break
			}
			cur = all[cur].ppid
		}
	}
	return ids
}

// Pin sets the CPU affinity of every thread of pid's process tree to
// cpus; threads and processes started later inherit it from their
// creator. Pin(pid, AllCPUs()...) undoes it.
func Pin(pid int, cpus ...int) error {
	all, err := readProcs()
	if err != nil {
		return err
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	// Twice: a thread the first pass had not reached yet may have started
	// another meanwhile.
	for pass := 0; pass < 2; pass++ {
		if pass > 0 {
			if all, err = readProcs(); err != nil {
				return err
			}
		}
		if err := pinTree(all, pid, &set, cpus); err != nil {
			return err
		}
	}
	return nil
}

func pinTree(all map[int]procStat, pid int, set *unix.CPUSet, cpus []int) error {
	for _, id := range tree(all, pid) {
		tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(id), "task"))
		if err != nil {
			continue // exited meanwhile
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("pin thread %d of process %d to CPUs %v: %w", tid, id, cpus, err)
			}
		}
	}
	return nil
}

// AllCPUs lists the CPUs this process may run on.
func AllCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return []int{0}
	}
	var cpus []int
	for c := range 1024 {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// WaitTCP waits until addr accepts connections, or the process exits, or
// the timeout passes.
func WaitTCP(ctx context.Context, pr *Proc, dial func() error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := dial(); err == nil {
			return nil
		}
		if done, err := pr.Exited(); done {
			return fmt.Errorf("%s exited: %v\n%s", pr.Name, err, tail(pr.Log.String(), 2000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering after %v\n%s", pr.Name, timeout, tail(pr.Log.String(), 2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Version runs argv and returns the first non-empty line of its output, for
// the report's list of peer versions.
func Version(argv ...string) string {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "unknown (" + err.Error() + ")"
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			return l
		}
	}
	return "unknown"
}

// VersionLine is Version for tools that print a banner first: the first
// line of the output that contains match.
func VersionLine(match string, argv ...string) string {
	out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, match) {
			return strings.TrimSpace(l)
		}
	}
	return "unknown"
}

// ErrSkipped marks a subject that could not run here (peer not installed).
var ErrSkipped = errors.New("skipped")

// SelfCPU is the user+system time of this process (all its threads, not
// its children): the backends a runner serves from inside itself.
func SelfCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	st, ok := parseStat(b, 0)
	if !ok {
		return 0, fmt.Errorf("/proc/self/stat: unexpected %q", b)
	}
	return time.Duration(st.ticks) * time.Second / clockTicks, nil
}

// IdleTime is the time all CPUs have spent idle since boot (/proc/stat),
// so that the idle time during a run can be told apart from the work.
func IdleTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	idle, err := strconv.ParseInt(f[4], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/stat: %w", err)
	}
	return time.Duration(idle) * time.Second / clockTicks, nil
}
