package benchkit

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"text/template"
	"time"
)

// handedOut holds the ports FreePort has returned: a port closed again
// until its server binds it can come back from the next bind to port 0,
// and two servers given one port make the second answer for the first
// (the likely cause of a make bench run whose change request to dnsd's
// admin server got Go's "404 page not found", which dnsd never sends for
// that route).
var handedOut = struct {
	sync.Mutex
	ports map[string]bool
}{ports: map[string]bool{}}

// FreePort returns a loopback port that was free for both TCP and UDP a
// moment ago (DNS servers bind both) and that it has not returned before.
func FreePort() string {
	handedOut.Lock()
	defer handedOut.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		_, p, _ := net.SplitHostPort(ln.Addr().String())
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+p)
		ln.Close()
		if err == nil {
			pc.Close()
			if !handedOut.ports[p] {
				handedOut.ports[p] = true
				return p
			}
		}
	}
}

// Render executes the text/template file src with vars into dst.
func Render(src, dst string, vars any) error {
	t, err := template.ParseFiles(src)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, vars); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	return os.WriteFile(dst, b.Bytes(), 0o644)
}

// Hostname is the machine's name for result files.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

// Usages sums TreeUsage over several processes (a subject made of several
// servers, like edged + lbd).
func Usages(procs ...*Proc) (Usage, error) {
	var total Usage
	for _, p := range procs {
		u, err := TreeUsage(p.Cmd.Process.Pid)
		if err != nil {
			return total, fmt.Errorf("%s: %w", p.Name, err)
		}
		total.CPU += u.CPU
		total.RSS += u.RSS
	}
	return total, nil
}

// measured runs a load tool (bounded by d plus 30 s and by ctx) and reads
// the servers' usage before and after it; out is the tool's output.
func measured(ctx context.Context, d time.Duration, servers []*Proc, tool string, args ...string) (out []byte, before, after Usage, err error) {
	if before, err = Usages(servers...); err != nil {
		return nil, before, before, err
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	if out, err = exec.CommandContext(ctx, tool, args...).CombinedOutput(); err != nil {
		return out, before, before, fmt.Errorf("%s: %v\n%s", tool, err, out)
	}
	after, err = Usages(servers...)
	return out, before, after, err
}

// Wrk runs wrk against url for d with the given threads and connections
// (bounded by -d and by ctx) and measures the servers' usage around it.
func Wrk(ctx context.Context, url string, d time.Duration, threads, conns int, servers ...*Proc) (Load, Usage, Usage, error) {
	return WrkOn(ctx, "", url, d, threads, conns, servers...)
}

// WrkOn is Wrk with wrk confined to cpus (a taskset list such as "1";
// empty: anywhere).
func WrkOn(ctx context.Context, cpus, url string, d time.Duration, threads, conns int, servers ...*Proc) (Load, Usage, Usage, error) {
	args := []string{"wrk", fmt.Sprintf("-t%d", threads), fmt.Sprintf("-c%d", conns),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency", url}
	if cpus != "" {
		args = append([]string{"taskset", "-c", cpus}, args...)
	}
	out, before, after, err := measured(ctx, d, servers, args[0], args[1:]...)
	if err != nil {
		return Load{}, before, after, err
	}
	l, err := ParseWrk(string(out))
	return l, before, after, err
}

// H2Load runs h2load against an https url for d with the given threads,
// connections and concurrent streams per connection, checks that HTTP/2
// was negotiated, and measures the servers' usage around it.
func H2Load(ctx context.Context, url string, d time.Duration, threads, conns, streams int, servers ...*Proc) (Load, Usage, Usage, error) {
	out, before, after, err := measured(ctx, d, servers, "h2load", fmt.Sprintf("-t%d", threads), fmt.Sprintf("-c%d", conns), fmt.Sprintf("-m%d", streams),
		"-D", strconv.Itoa(max(1, int(d.Seconds()))), url)
	if err != nil {
		return Load{}, before, after, err
	}
	if !bytes.Contains(out, []byte("Application protocol: h2")) {
		return Load{}, before, after, fmt.Errorf("h2load: HTTP/2 not negotiated:\n%s", tail(string(out), 1000))
	}
	l, err := ParseH2Load(string(out))
	return l, before, after, err
}

// WaitDial waits until addr accepts TCP connections, or pr exits, or the
// timeout passes.
func WaitDial(ctx context.Context, pr *Proc, addr string, timeout time.Duration) error {
	return WaitTCP(ctx, pr, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}, timeout)
}
