// Command lb benchmarks lbd against HAProxy and nginx, each balancing the
// same three local backends on loopback, run alternately:
//
//   - HTTP/1.1 keep-alive, 1 KiB responses (wrk): requests/s, p50/p99,
//     balancer CPU µs per request (from /proc);
//
//   - HTTP/2 over TLS (h2load);
//
//   - TLS handshakes: a new connection per request (wrk, Connection: close);
//
//   - L4 TCP throughput (MiB/s and balancer CPU µs per MiB), lbd vs HAProxy
//     mode tcp (and nginx stream when its module is installed);
//
//   - failover: one of three targets killed under load: failed requests and
//     the time until lbd takes it out of rotation.
//
//     go run ./bench/lb -duration 5s -rounds 3
//
// Peer configs are in bench/peers/lb-*. Results go to bench/results (JSON)
// and -report (Markdown + PNG).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/bench/benchkit"
)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "length of each load run")
	rounds := flag.Int("rounds", 3, "runs per subject and case")
	conns := flag.Int("conns", 64, "client connections")
	threads := flag.Int("threads", 2, "load generator threads")
	only := flag.String("only", "", "comma-separated subjects (lbd,haproxy,nginx); default all")
	cases := flag.String("cases", "http1,rate,h2,tls,tcp,failover", "cases to run")
	rate := flag.Int("rate", 8000, "request rate of the fixed-rate HTTP/1.1 latency case (h2load --h1 --rps); well below what every balancer sustains here")
	lbdBin := flag.String("lbd", "", "lbd binary (default: go build ./cmd/lbd)")
	procs := flag.Int("lbd-gomaxprocs", 2, "GOMAXPROCS of lbd")
	resultsDir := flag.String("results", "bench/results", "folder for the JSON results")
	reportDir := flag.String("report", "bench/results/lb", "folder for the Markdown report and plots")
	peers := flag.String("peers", "bench/peers", "folder holding the peer configs")
	flag.Parse()
	if *duration > time.Minute || *rounds > 20 {
		fmt.Fprintln(os.Stderr, "bench/lb: keep runs bounded: -duration <= 1m, -rounds <= 20")
		os.Exit(2)
	}
	if err := run(opts{*duration, *rounds, *conns, *threads, *procs, *rate, *only, *cases, *lbdBin, *resultsDir, *reportDir, *peers}); err != nil {
		fmt.Fprintln(os.Stderr, "bench/lb:", err)
		os.Exit(1)
	}
}

type opts struct {
	duration                        time.Duration
	rounds, conns, threads, procs   int
	rate                            int
	only, cases, lbdBin             string
	resultsDir, reportDir, peersDir string
}

type server struct {
	name             string
	http, https, tcp string
	admin            string
	proc             *benchkit.Proc
	noTCP            string
}

var body1K = bytes.Repeat([]byte("x"), 1024)

func run(o opts) error {
	procs, ctx := benchkit.NewProcs(context.Background())
	defer procs.Close()
	work, err := os.MkdirTemp("", "bench-lb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	_ = os.Chmod(work, 0o755)
	peersDir, _ := filepath.Abs(o.peersDir)

	// Backends: three HTTP servers answering 1 KiB, three TCP sources
	// streaming zeros.
	var httpB, tcpB []string
	var backends []*backend
	for i := range 3 {
		b, err := startBackend(fmt.Sprintf("b%d", i+1))
		if err != nil {
			return err
		}
		defer b.close()
		backends = append(backends, b)
		httpB = append(httpB, b.addr)
		t, err := startSource()
		if err != nil {
			return err
		}
		tcpB = append(tcpB, t)
	}
	certFile, keyFile, pemFile, err := benchkit.WriteSelfSigned(work)
	if err != nil {
		return err
	}
	vars := map[string]string{
		"B1": httpB[0], "B2": httpB[1], "B3": httpB[2], "T1": tcpB[0], "T2": tcpB[1], "T3": tcpB[2],
		"CertFile": certFile, "KeyFile": keyFile, "Cert": pemFile,
	}
	want := map[string]bool{}
	for _, s := range strings.Split(o.only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			want[s] = true
		}
	}
	use := func(n string) bool { return len(want) == 0 || want[n] }
	versions := map[string]string{}
	var servers []*server
	newServer := func(name string) *server {
		s := &server{name: name, http: "127.0.0.1:" + benchkit.FreePort(), https: "127.0.0.1:" + benchkit.FreePort(), tcp: "127.0.0.1:" + benchkit.FreePort()}
		v := map[string]string{"HTTP": s.http, "HTTPS": s.https, "TCP": s.tcp}
		for k, x := range vars {
			v[k] = x
		}
		s.admin = "127.0.0.1:" + benchkit.FreePort()
		v["Admin"] = s.admin
		vars2[name] = v
		return s
	}
	if use("lbd") {
		bin := o.lbdBin
		if bin == "" {
			bin = filepath.Join(work, "lbd")
			if out, err := exec.Command("go", "build", "-o", bin, "./cmd/lbd").CombinedOutput(); err != nil {
				return fmt.Errorf("build lbd: %v\n%s", err, out)
			}
		}
		s := newServer("lbd")
		cfg := filepath.Join(work, "lbd.yaml")
		if err := benchkit.Render(filepath.Join(peersDir, "lb-lbd.yaml"), cfg, vars2["lbd"]); err != nil {
			return err
		}
		p, err := procs.Start("lbd", []string{bin, "run", "-config", cfg}, work, []string{"GOMAXPROCS=" + strconv.Itoa(o.procs)})
		if err != nil {
			return err
		}
		s.proc = p
		servers = append(servers, s)
		versions["lbd"] = benchkit.Version(bin, "version")
	}
	if use("haproxy") {
		if path, err := exec.LookPath("haproxy"); err == nil {
			s := newServer("haproxy")
			cfg := filepath.Join(work, "haproxy.cfg")
			if err := benchkit.Render(filepath.Join(peersDir, "lb-haproxy.cfg"), cfg, vars2["haproxy"]); err != nil {
				return err
			}
			p, err := procs.Start("haproxy", []string{path, "-db", "-f", cfg}, work, nil)
			if err != nil {
				return err
			}
			s.proc = p
			servers = append(servers, s)
			versions["haproxy"] = benchkit.Version(path, "-v")
		} else {
			fmt.Println("haproxy not installed: skipped")
		}
	}
	if use("nginx") {
		if path, err := exec.LookPath("nginx"); err == nil {
			s := newServer("nginx")
			dir := filepath.Join(work, "nginx")
			for _, d := range []string{"tmp", "body", "fcgi", "uwsgi", "scgi", "logs"} {
				_ = os.MkdirAll(filepath.Join(dir, d), 0o755)
			}
			v := vars2["nginx"]
			v["Dir"] = dir
			v["Stream"] = ""
			conf := filepath.Join(dir, "nginx.conf")
			if err := benchkit.Render(filepath.Join(peersDir, "lb-nginx.conf"), conf, v); err != nil {
				return err
			}
			if mod := "/usr/lib/nginx/modules/ngx_stream_module.so"; fileExists(mod) {
				v["Stream"] = "load_module " + mod + ";"
				_ = benchkit.Render(filepath.Join(peersDir, "lb-nginx.conf"), conf, v)
			} else {
				// No stream module: drop the stream block.
				b, _ := os.ReadFile(conf)
				if i := bytes.Index(b, []byte("\nstream {")); i >= 0 {
					_ = os.WriteFile(conf, b[:i+1], 0o644)
				}
				s.noTCP = "nginx stream module not installed (libnginx-mod-stream)"
			}
			p, err := procs.Start("nginx", []string{path, "-p", dir, "-c", conf}, dir, nil)
			if err != nil {
				return err
			}
			s.proc = p
			servers = append(servers, s)
			versions["nginx"] = benchkit.Version(path, "-v")
		} else {
			fmt.Println("nginx not installed: skipped")
		}
	}
	versions["wrk"] = benchkit.Version("wrk", "--version")
	versions["h2load"] = benchkit.Version("h2load", "--version")
	for _, s := range servers {
		addr := s.http
		if err := benchkit.WaitTCP(ctx, s.proc, func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}, 20*time.Second); err != nil {
			return err
		}
		if err := warm("http://" + s.http + "/"); err != nil {
			return fmt.Errorf("%s: %w\n%s", s.name, err, s.proc.Log.String())
		}
	}

	suite := &benchkit.Suite{Name: "lb", Title: "Load balancer: lbd vs HAProxy vs nginx (three local backends)", Notes: []string{
		fmt.Sprintf("Each run %s, subjects alternated round by round (%d rounds); backends are Go net/http servers in the runner answering 1 KiB.", o.duration, o.rounds),
		fmt.Sprintf("HTTP/1.1: wrk -t%d -c%d --latency, keep-alive. HTTP/2: h2load -t%d -c%d -m10 over TLS. TLS handshakes: wrk with Connection: close over https (one handshake per request).", o.threads, o.conns, o.threads, o.conns/2),
		fmt.Sprintf("At a fixed rate: h2load --h1 -t%d -c%d --rps=%d (%d req/s in all), the same load offered to every balancer; percentiles over every request from h2load's log.", o.threads, o.conns, o.rate/max(o.conns, 1), o.rate),
		"TCP: 4 connections reading a stream of zeros through the balancer (Go client); MiB/s and balancer CPU µs per MiB.",
		fmt.Sprintf("CPU: user+system time of the balancer's process tree from /proc divided by the requests (or MiB) done; configs in bench/peers/lb-*. lbd runs with GOMAXPROCS=%d, HAProxy nbthread 2, nginx 2 workers.", o.procs),
	}}
	res := &benchkit.Results{Started: time.Now(), Host: benchkit.Hostname(), Machine: benchkit.DescribeMachine(), Versions: versions, Suites: []*benchkit.Suite{suite}}
	backendCPU := benchkit.Metric{Key: keyBackendCPU, Name: "backends' CPU µs/request"}
	wrkCPUMetric := benchkit.Metric{Key: keyWrkCPU, Name: "wrk's CPU µs/request"}
	idleMetric := benchkit.Metric{Key: keyIdle, Name: "idle CPU µs/request"}
	httpMetrics := []benchkit.Metric{benchkit.MetricRPS, benchkit.MetricCPU, benchkit.MetricP50, benchkit.MetricP99, benchkit.MetricErrors, benchkit.MetricRSS}
	wantCase := map[string]bool{}
	for _, c := range strings.Split(o.cases, ",") {
		wantCase[strings.TrimSpace(c)] = true
	}
	byName := map[string]*server{}
	newCase := func(name string, metrics []benchkit.Metric) *benchkit.Case {
		c := &benchkit.Case{Name: name, Metrics: metrics}
		for _, s := range servers {
			c.Subjects = append(c.Subjects, &benchkit.Subject{Name: s.name, Ours: s.name == "lbd"})
			byName[s.name] = s
		}
		suite.Cases = append(suite.Cases, c)
		return c
	}
	measure := func(ctx context.Context, s *server, load func() (benchkit.Load, error)) (map[string]float64, error) {
		pid := s.proc.Cmd.Process.Pid
		before, err := benchkit.TreeUsage(pid)
		if err != nil {
			return nil, err
		}
		l, err := load()
		if err != nil {
			return nil, err
		}
		after, err := benchkit.TreeUsage(pid)
		if err != nil {
			return nil, err
		}
		return benchkit.Sample(l, before, after, benchkit.MetricRPS.Key), nil
	}
	// wrkCPU is the CPU time of the last wrk run (the whole-machine view
	// of the HTTP/1.1 case).
	var wrkCPU time.Duration
	wrk := func(ctx context.Context, args ...string) (benchkit.Load, error) {
		cmd := exec.CommandContext(ctx, "wrk", append([]string{"-t" + strconv.Itoa(o.threads), "-c" + strconv.Itoa(o.conns), "-d" + o.duration.String(), "--latency"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return benchkit.Load{}, fmt.Errorf("wrk: %v\n%s", err, out)
		}
		wrkCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		return benchkit.ParseWrk(string(out))
	}
	// machine adds where the rest of the two cores went during a run, per
	// request: the backends (served from this process), wrk, and idle
	// time. A balancer that costs its neighbours more, or leaves the cores
	// idle while work waits, loses requests per second at the same CPU.
	machine := func(s *server, m map[string]float64, load func() (benchkit.Load, error)) func() (benchkit.Load, error) {
		return func() (benchkit.Load, error) {
			self0, err1 := benchkit.SelfCPU()
			idle0, err2 := benchkit.IdleTime()
			l, err := load()
			self1, err3 := benchkit.SelfCPU()
			idle1, err4 := benchkit.IdleTime()
			if err == nil && l.Requests > 0 && errors.Join(err1, err2, err3, err4) == nil {
				per := func(d time.Duration) float64 { return float64(d.Microseconds()) / l.Requests }
				m[keyBackendCPU], m[keyWrkCPU], m[keyIdle] = per(self1-self0), per(wrkCPU), per(idle1-idle0)
			}
			return l, err
		}
	}
	var errs []error
	if wantCase["http1"] {
		c := newCase("HTTP/1.1 keep-alive 1 KiB", append(httpMetrics, backendCPU, wrkCPUMetric, idleMetric))
		errs = append(errs, benchkit.Alternate(ctx, os.Stdout, "lb", c, o.rounds, func(ctx context.Context, sub *benchkit.Subject, _ int) (map[string]float64, error) {
			s := byName[sub.Name]
			extra := map[string]float64{}
			m, err := measure(ctx, s, machine(s, extra, func() (benchkit.Load, error) { return wrk(ctx, "http://"+s.http+"/") }))
			maps.Copy(m, extra)
			return m, err
		}))
	}
	if wantCase["rate"] && o.rate > 0 {
		c := newCase(fmt.Sprintf("HTTP/1.1 keep-alive 1 KiB at %d req/s", o.rate), []benchkit.Metric{benchkit.MetricP50, benchkit.MetricP99, benchkit.MetricCPU, benchkit.MetricErrors})
		errs = append(errs, benchkit.Alternate(ctx, os.Stdout, "lb", c, o.rounds, func(ctx context.Context, sub *benchkit.Subject, _ int) (map[string]float64, error) {
			s := byName[sub.Name]
			return measure(ctx, s, func() (benchkit.Load, error) {
				l, _, _, err := benchkit.AtRate(ctx, "http://"+s.http+"/", o.rate, o.duration, o.threads, o.conns, true)
				return l, err
			})
		}))
	}
	if wantCase["h2"] {
		c := newCase("HTTP/2 over TLS 1 KiB", []benchkit.Metric{benchkit.MetricRPS, benchkit.MetricCPU, benchkit.MetricMean, benchkit.MetricErrors})
		errs = append(errs, benchkit.Alternate(ctx, os.Stdout, "lb", c, o.rounds, func(ctx context.Context, sub *benchkit.Subject, _ int) (map[string]float64, error) {
			s := byName[sub.Name]
			return measure(ctx, s, func() (benchkit.Load, error) {
				l, _, _, err := benchkit.H2Load(ctx, "https://"+s.https+"/", o.duration, o.threads, max(o.conns/2, 2), 10)
				return l, err
			})
		}))
	}
	if wantCase["tls"] {
		c := newCase("TLS handshakes (new connection per request)", httpMetrics)
		errs = append(errs, benchkit.Alternate(ctx, os.Stdout, "lb", c, o.rounds, func(ctx context.Context, sub *benchkit.Subject, _ int) (map[string]float64, error) {
			s := byName[sub.Name]
			return measure(ctx, s, func() (benchkit.Load, error) {
				return wrk(ctx, "-H", "Connection: close", "https://"+s.https+"/")
			})
		}))
	}
	if wantCase["tcp"] {
		mibs := benchkit.Metric{Key: "mib_s", Name: "MiB/s", HigherIsBetter: true}
		cpuMiB := benchkit.Metric{Key: "cpu_us_mib", Name: "server CPU µs/MiB"}
		c := newCase("TCP throughput (4 streams)", []benchkit.Metric{mibs, cpuMiB, benchkit.MetricRSS})
		for _, sub := range c.Subjects {
			if s := byName[sub.Name]; s.noTCP != "" {
				sub.Skipped = s.noTCP
			}
		}
		errs = append(errs, benchkit.Alternate(ctx, os.Stdout, "lb", c, o.rounds, func(ctx context.Context, sub *benchkit.Subject, _ int) (map[string]float64, error) {
			s := byName[sub.Name]
			pid := s.proc.Cmd.Process.Pid
			before, err := benchkit.TreeUsage(pid)
			if err != nil {
				return nil, err
			}
			n, secs, err := readThrough(s.tcp, 4, o.duration)
			if err != nil {
				return nil, err
			}
			after, err := benchkit.TreeUsage(pid)
			if err != nil {
				return nil, err
			}
			mib := float64(n) / (1 << 20)
			return map[string]float64{"mib_s": mib / secs, "cpu_us_mib": float64((after.CPU - before.CPU).Microseconds()) / mib,
				benchkit.MetricRSS.Key: float64(after.RSS) / (1 << 20)}, nil
		}))
	}
	if p, err := res.WriteJSON(o.resultsDir); err == nil {
		fmt.Println("results:", p)
	}
	if p, err := res.WriteReport(o.reportDir); err == nil {
		fmt.Println("report:", p)
	} else {
		errs = append(errs, err)
	}
	for _, c := range suite.Cases {
		fmt.Printf("\n%s\n", c.Name)
		for _, s := range c.Subjects {
			fmt.Printf("  %-8s", s.Name)
			for _, m := range c.Metrics {
				fmt.Printf("  %s %.2f", m.Key, s.Summary[m.Key].Median)
			}
			if s.Skipped != "" {
				fmt.Printf("  (skipped: %s)", s.Skipped)
			}
			fmt.Println()
		}
		for _, m := range c.Metrics[:2] {
			if r, peer := c.Ratio(m); peer != "" {
				fmt.Printf("  ratio %s vs %s: %.2f (>1: lbd better)\n", m.Key, peer, r)
			}
		}
	}
	if wantCase["failover"] {
		if s := byName["lbd"]; s != nil {
			if err := failover(s, backends[2], o.duration); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

var vars2 = map[string]map[string]string{}

// failover kills one of three targets under load and reports failed
// requests and how long lbd kept sending to it.
func failover(s *server, victim *backend, d time.Duration) error {
	fmt.Printf("\nfailover: killing target %s of 3 after %s of load (GET, keep-alive, 8 clients)\n", victim.addr, d/3)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var ok, failed atomic.Int64
	hitsBefore := victim.hits.Load() // the backends also served the earlier cases
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 100000 && time.Now().Before(stop); n++ {
				resp, err := client.Get("http://" + s.http + "/")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						ok.Add(1)
						continue
					}
				}
				failed.Add(1)
			}
		}()
	}
	time.Sleep(d / 3)
	killed := time.Now()
	hitsAtKill := victim.hits.Load() - hitsBefore
	victim.close()
	// Out of rotation: lbd's API shows it unhealthy.
	var out time.Duration
	for time.Since(killed) < 30*time.Second {
		if st := targetState(s.admin, victim.addr); st == "unhealthy" {
			out = time.Since(killed)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	fmt.Printf("  requests ok %d, failed %d; target out of rotation after %v (passive health; active check every 5s); victim served %d of them before the kill\n",
		ok.Load(), failed.Load(), out.Round(time.Millisecond), hitsAtKill)
	return nil
}

func targetState(admin, addr string) string {
	resp, err := http.Get("http://" + admin + "/v1/target-groups/web/targets")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var ts []struct{ Address, State string }
	_ = json.NewDecoder(resp.Body).Decode(&ts)
	for _, t := range ts {
		if t.Address == addr {
			return t.State
		}
	}
	return ""
}

// readThrough reads from addr on n connections for d and returns the bytes.
func readThrough(addr string, n int, d time.Duration) (int64, float64, error) {
	var total atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, n)
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(start.Add(d))
			buf := make([]byte, 256<<10)
			for {
				k, err := c.Read(buf)
				total.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	select {
	case err := <-errc:
		return 0, 0, err
	default:
	}
	if total.Load() == 0 {
		return 0, 0, fmt.Errorf("no bytes through %s", addr)
	}
	return total.Load(), secs, nil
}

// Keys of the HTTP/1.1 case's whole-machine figures.
const (
	keyBackendCPU = "backend_cpu_us"
	keyWrkCPU     = "wrk_cpu_us"
	keyIdle       = "idle_us"
)

type backend struct {
	addr string
	srv  *http.Server
	hits atomic.Int64
}

func startBackend(name string) (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{addr: ln.Addr().String()}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h := w.Header()
		h["Content-Type"] = []string{"application/octet-stream"}
		h["Content-Length"] = []string{"1024"}
		_, _ = w.Write(body1K)
	})}
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

func (b *backend) close() { _ = b.srv.Close() }

// startSource accepts connections and streams zeros to each.
func startSource() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	buf := make([]byte, 1<<20)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), nil
}

func warm(url string) error {
	for range 3 {
		resp, err := http.Get(url)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && len(b) == 1024 {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("warm %s: no 200 with 1 KiB", url)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
