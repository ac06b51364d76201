// Command stack benchmarks the whole edgestack path on loopback against the
// usual pair of established servers, and measures failover and memory:
//
//   - stack: client → edged → (static site | lbd → 3 demo API instances),
//     against nginx (static site from disk, /api/ to HAProxy) → HAProxy → the
//     same instances: requests/s, latency, server CPU per request;
//
//   - failover: time for lbd and HAProxy to take a killed target out of
//     rotation (same health check: 1 s interval, 2 failures) and the failed
//     requests meanwhile; time for dnsd to drop a killed edge from its answers;
//
//   - memory: resident memory at rest and after load, and edged's cache
//     filled far past its byte budget, next to Varnish with the same budget.
//
//     go run ./bench/stack -duration 5s -rounds 3 -suites stack,failover,memory
package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/bench/benchkit"
	"github.com/miekg/dns"
)

type runner struct {
	ctx      context.Context
	procs    *benchkit.Procs
	work     string
	bin      string // folder of the built edgestack binaries
	peers    string
	site     string
	duration time.Duration
	rounds   int
	threads  int
	conns    int
	targets  []string          // demo API addresses
	api      []*benchkit.Proc  // their processes
	versions map[string]string // for the report
}

func main() {
	duration := flag.Duration("duration", 5*time.Second, "length of each load run")
	rounds := flag.Int("rounds", 3, "runs per subject")
	conns := flag.Int("conns", 32, "wrk connections")
	threads := flag.Int("threads", 2, "wrk threads")
	suites := flag.String("suites", "stack,failover,memory", "which of stack, failover, memory")
	resultsDir := flag.String("results", "bench/results", "folder for the JSON results")
	reportDir := flag.String("report", "bench/results/stack", "folder for the Markdown report and plots")
	flag.Parse()
	if *duration > time.Minute || *rounds > 20 || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench/stack: keep runs bounded: -duration <= 1m, 1 <= -rounds <= 20")
		os.Exit(2)
	}
	procs, ctx := benchkit.NewProcs(context.Background())
	defer procs.Close()
	work, err := os.MkdirTemp("", "bench-stack-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer os.RemoveAll(work)
	_ = os.Chmod(work, 0o755) // varnishd reads its VCL as its own user
	r := &runner{ctx: ctx, procs: procs, work: work, bin: filepath.Join(work, "bin"), peers: abs("bench/peers"), site: abs("deploy/site"),
		duration: *duration, rounds: *rounds, threads: *threads, conns: *conns, versions: map[string]string{}}
	res := &benchkit.Results{Started: time.Now(), Host: benchkit.Hostname(), Machine: benchkit.DescribeMachine(), Versions: r.versions}
	err = r.setup()
	if err == nil {
		for _, s := range strings.Split(*suites, ",") {
			var suite *benchkit.Suite
			var serr error
			switch strings.TrimSpace(s) {
			case "stack":
				suite, serr = r.stack()
			case "failover":
				suite, serr = r.failover()
			case "memory":
				suite, serr = r.memory()
			default:
				serr = fmt.Errorf("unknown suite %q", s)
			}
			if suite != nil {
				res.Suites = append(res.Suites, suite)
			}
			err = errors.Join(err, serr)
		}
	}
	if len(res.Suites) > 0 {
		if p, werr := res.WriteJSON(*resultsDir); werr == nil {
			fmt.Println("results:", p)
		}
		if p, werr := res.WriteReport(*reportDir); werr == nil {
			fmt.Println("report:", p)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/stack:", err)
		procs.Close()
		os.Exit(1)
	}
}

func abs(p string) string {
	a, _ := filepath.Abs(p)
	return a
}

// setup builds the binaries and starts the three demo API instances both
// stacks share.
func (r *runner) setup() error {
	out, err := exec.Command("go", "build", "-o", r.bin+"/", "./cmd/edged", "./cmd/lbd", "./cmd/dnsd", "./deploy/demoapi").CombinedOutput()
	if err != nil {
		return fmt.Errorf("build: %v\n%s", err, out)
	}
	r.versions["edgestack"] = benchkit.Version(filepath.Join(r.bin, "edged"), "version")
	r.versions["nginx"] = benchkit.Version("nginx", "-v")
	r.versions["haproxy"] = benchkit.Version("haproxy", "-v")
	r.versions["varnish"] = benchkit.Version("varnishd", "-V")
	r.versions["wrk"] = benchkit.Version("wrk", "--version")
	for i := 1; i <= 3; i++ {
		addr := "127.0.0.1:" + benchkit.FreePort()
		p, err := r.startAPI(i, addr)
		if err != nil {
			return err
		}
		r.targets = append(r.targets, addr)
		r.api = append(r.api, p)
	}
	return nil
}

func (r *runner) startAPI(i int, addr string) (*benchkit.Proc, error) {
	p, err := r.procs.Start(fmt.Sprintf("api-%d", i), []string{filepath.Join(r.bin, "demoapi"), "-listen", addr, "-name", fmt.Sprintf("api-%d", i)}, r.work, nil)
	if err != nil {
		return nil, err
	}
	return p, benchkit.WaitDial(r.ctx, p, addr, 10*time.Second)
}

// frontend is one subject of the stack suite: its entry address and the
// processes whose CPU and memory count.
type frontend struct {
	entry   string
	servers []*benchkit.Proc
	admin   string // lbd's admin URL or HAProxy's stats socket
	lb      string // the balancer's own listener
}

func (r *runner) startEdgestack(name string) (*frontend, error) {
	dir := filepath.Join(r.work, name)
	_ = os.MkdirAll(dir, 0o755)
	lbAddr, lbAdmin := "127.0.0.1:"+benchkit.FreePort(), "127.0.0.1:"+benchkit.FreePort()
	if err := benchkit.Render(filepath.Join(r.peers, "stack-lbd.yaml"), filepath.Join(dir, "lbd.yaml"), map[string]any{"Listen": lbAddr, "Admin": lbAdmin, "Targets": r.targets}); err != nil {
		return nil, err
	}
	lb, err := r.procs.Start(name+"-lbd", []string{filepath.Join(r.bin, "lbd"), "run", "-config", filepath.Join(dir, "lbd.yaml")}, dir, nil)
	if err != nil {
		return nil, err
	}
	edgeAddr, edgeAdmin := "127.0.0.1:"+benchkit.FreePort(), "127.0.0.1:"+benchkit.FreePort()
	if err := benchkit.Render(filepath.Join(r.peers, "stack-edged.yaml"), filepath.Join(dir, "edged.yaml"), map[string]any{"Listen": edgeAddr, "Admin": edgeAdmin, "Site": r.site, "LB": lbAddr, "CacheSize": "256MiB"}); err != nil {
		return nil, err
	}
	edge, err := r.procs.Start(name+"-edged", []string{filepath.Join(r.bin, "edged"), "run", "-config", filepath.Join(dir, "edged.yaml")}, dir, nil)
	if err != nil {
		return nil, err
	}
	for _, w := range []struct {
		p    *benchkit.Proc
		addr string
	}{{lb, lbAddr}, {edge, edgeAddr}} {
		if err := benchkit.WaitDial(r.ctx, w.p, w.addr, 20*time.Second); err != nil {
			return nil, err
		}
	}
	f := &frontend{entry: edgeAddr, servers: []*benchkit.Proc{edge, lb}, admin: "http://" + lbAdmin, lb: lbAddr}
	return f, r.waitAllUp(f, "lbd")
}

func (r *runner) startPeers() (*frontend, error) {
	if _, err := exec.LookPath("nginx"); err != nil {
		return nil, fmt.Errorf("%w: nginx not installed", benchkit.ErrSkipped)
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		return nil, fmt.Errorf("%w: haproxy not installed", benchkit.ErrSkipped)
	}
	dir := filepath.Join(r.work, "peers")
	for _, d := range []string{"body", "tmp", "fcgi", "uwsgi", "scgi"} {
		_ = os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	lbAddr := "127.0.0.1:" + benchkit.FreePort()
	if err := benchkit.Render(filepath.Join(r.peers, "stack-haproxy.cfg"), filepath.Join(dir, "haproxy.cfg"), map[string]any{"Listen": lbAddr, "Dir": dir, "Targets": r.targets}); err != nil {
		return nil, err
	}
	ha, err := r.procs.Start("haproxy", []string{"haproxy", "-db", "-f", filepath.Join(dir, "haproxy.cfg")}, dir, nil)
	if err != nil {
		return nil, err
	}
	edgeAddr := "127.0.0.1:" + benchkit.FreePort()
	if err := benchkit.Render(filepath.Join(r.peers, "stack-nginx.conf"), filepath.Join(dir, "nginx.conf"), map[string]any{"Listen": edgeAddr, "Dir": dir, "Site": r.site, "LB": lbAddr}); err != nil {
		return nil, err
	}
	ng, err := r.procs.Start("nginx", []string{"nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf")}, dir, nil)
	if err != nil {
		return nil, err
	}
	for _, w := range []struct {
		p    *benchkit.Proc
		addr string
	}{{ha, lbAddr}, {ng, edgeAddr}} {
		if err := benchkit.WaitDial(r.ctx, w.p, w.addr, 20*time.Second); err != nil {
			return nil, err
		}
	}
	f := &frontend{entry: edgeAddr, servers: []*benchkit.Proc{ng, ha}, admin: filepath.Join(dir, "haproxy.sock"), lb: lbAddr}
	return f, r.waitAllUp(f, "haproxy")
}

// targetUp reports whether the balancer counts the target at addr as in
// rotation.
func (r *runner) targetUp(f *frontend, kind, addr string) (bool, error) {
	if kind == "lbd" {
		resp, err := http.Get(f.admin + "/v1/target-groups/api/targets")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var ts []struct{ Address, State string }
		if err := json.NewDecoder(resp.Body).Decode(&ts); err != nil {
			return false, err
		}
		for _, t := range ts {
			if t.Address == addr {
				return t.State == "healthy", nil
			}
		}
		return false, nil
	}
	c, err := net.Dial("unix", f.admin)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_, _ = c.Write([]byte("show stat\n"))
	b, _ := io.ReadAll(c)
	rows, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(b, []byte("# ")))).ReadAll()
	if err != nil || len(rows) < 2 {
		return false, fmt.Errorf("haproxy stats: %v", err)
	}
	col := func(name string) int { return slices.Index(rows[0], name) }
	want := fmt.Sprintf("api%d", slices.Index(r.targets, addr)+1)
	for _, row := range rows[1:] {
		if len(row) > col("status") && row[col("svname")] == want {
			return strings.HasPrefix(row[col("status")], "UP"), nil
		}
	}
	return false, nil
}

func (r *runner) waitAllUp(f *frontend, kind string) error {
	deadline := time.Now().Add(20 * time.Second)
	for _, t := range r.targets {
		for {
			up, _ := r.targetUp(f, kind, t)
			if up {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: target %s not up after 20s", kind, t)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func stop(f *frontend) {
	for _, p := range f.servers {
		p.Stop()
	}
}

func (r *runner) stack() (*benchkit.Suite, error) {
	ours, err := r.startEdgestack("edgestack")
	if err != nil {
		return nil, err
	}
	defer stop(ours)
	peer, perr := r.startPeers()
	if perr == nil {
		defer stop(peer)
	}
	fronts := map[string]*frontend{"edgestack": ours, "nginx+haproxy": peer}
	metrics := []benchkit.Metric{benchkit.MetricRPS, benchkit.MetricCPU, benchkit.MetricP50, benchkit.MetricP99, benchkit.MetricErrors}
	suite := &benchkit.Suite{Name: "stack", Title: "Whole stack: edge → balancer → targets (edgestack vs nginx + HAProxy)", Notes: []string{
		fmt.Sprintf("wrk -t%d -c%d -d%s --latency on loopback. edgestack: edged (site as a bucket origin, cached) and lbd. Peer: nginx (site from disk, open_file_cache) and HAProxy. Both in front of the same three demo API processes.", r.threads, r.conns, r.duration),
		"CPU per request counts the edge and the balancer (not the demo API, which both share). Configs: bench/peers/stack-*.",
		"DNS is out of this path's loop (a client resolves once); dnsd is measured in the dns suite.",
		fmt.Sprintf("Per request: h2load --h1 -t%d -c%d, a closed loop like wrk's, with p50/p99 over every request from h2load's log; wrk 4.1 prints percentiles corrected for coordinated omission (bench/edge/README.md).", r.threads, r.conns),
	}}
	for _, c := range []struct {
		name, path string
		perRequest bool
	}{
		{"static page (/index.html)", "/index.html", false},
		{"static page (/index.html), per request (h2load closed loop)", "/index.html", true},
		{"API call (/api/hello)", "/api/hello", false},
	} {
		cs := &benchkit.Case{Name: c.name, Metrics: metrics, Subjects: []*benchkit.Subject{{Name: "edgestack", Ours: true}, {Name: "nginx+haproxy"}}}
		if perr != nil {
			cs.Subjects[1].Skipped = perr.Error()
		}
		// Warm both the same way: one request.
		for _, f := range fronts {
			if f != nil {
				_, _ = http.Get("http://" + f.entry + c.path)
			}
		}
		err := benchkit.Alternate(r.ctx, os.Stdout, "stack", cs, r.rounds, func(ctx context.Context, s *benchkit.Subject, _ int) (map[string]float64, error) {
			f := fronts[s.Name]
			load := benchkit.Wrk
			if c.perRequest {
				load = benchkit.ClosedLoop
			}
			l, before, after, err := load(ctx, "http://"+f.entry+c.path, r.duration, r.threads, r.conns, f.servers...)
			if err != nil {
				return nil, err
			}
			return benchkit.Sample(l, before, after, benchkit.MetricRPS.Key), nil
		})
		suite.Cases = append(suite.Cases, cs)
		if err != nil {
			return suite, err
		}
	}
	return suite, nil
}

// load sends requests to url from a few goroutines until stop closes
// (bounded in count too) and counts answers and failures.
func load(url string, stop <-chan struct{}) (ok, failed *atomic.Int64, wait func()) {
	ok, failed = new(atomic.Int64), new(atomic.Int64)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for n := 0; n < 100000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode >= 500 {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return ok, failed, wg.Wait
}

var (
	metricDetect = benchkit.Metric{Key: "detect_s", Name: "seconds until out of rotation"}
	metricFailed = benchkit.Metric{Key: "failed", Name: "failed requests"}
)

func (r *runner) failover() (*benchkit.Suite, error) {
	suite := &benchkit.Suite{Name: "failover", Title: "Failover: a target killed behind the balancer, an edge killed behind DNS", Notes: []string{
		"Target: the demo API instance is SIGKILLed under a steady load (4 clients, one request each per ~5 ms) sent straight to the balancer; the time is until the balancer's own state (lbd admin API, HAProxy stats socket) shows it out of rotation. Both check GET /healthz every 1 s, 2 failures to fall.",
		"lbd's passive health (on by default: a target whose connections fail is ejected at once) is what takes it out in milliseconds; HAProxy's equivalent (observe layer4 + on-error mark-down) is off in its default config, as here, so it waits for its active check.",
		"Edge: one of two edged instances named by a multivalue www record is SIGKILLed; the time is until dnsd's answers no longer carry it (health check every 1 s, 2 failures). NSD and Knot have no health-checked answers, so there is no peer.",
	}}
	ours, err := r.startEdgestack("failover")
	if err != nil {
		return nil, err
	}
	defer stop(ours)
	peer, perr := r.startPeers()
	if perr == nil {
		defer stop(peer)
	}
	cs := &benchkit.Case{Name: "target killed behind the balancer", Metrics: []benchkit.Metric{metricDetect, metricFailed}, Subjects: []*benchkit.Subject{{Name: "lbd", Ours: true}, {Name: "haproxy"}}}
	if perr != nil {
		cs.Subjects[1].Skipped = perr.Error()
	}
	victim := 2 // api-3
	err = benchkit.Alternate(r.ctx, os.Stdout, "failover", cs, r.rounds, func(ctx context.Context, s *benchkit.Subject, _ int) (map[string]float64, error) {
		f, kind := ours, "lbd"
		if s.Name == "haproxy" {
			f, kind = peer, "haproxy"
		}
		stopLoad := make(chan struct{})
		_, failed, wait := load("http://"+f.lb+"/api/hello", stopLoad)
		time.Sleep(500 * time.Millisecond)
		_ = r.api[victim].Cmd.Process.Kill()
		killed := time.Now()
		var detect time.Duration
		for detect == 0 && time.Since(killed) < 30*time.Second {
			if up, err := r.targetUp(f, kind, r.targets[victim]); err == nil && !up {
				detect = time.Since(killed)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Second)
		close(stopLoad)
		wait()
		// Bring the target back for the next run.
		p, err := r.startAPI(victim+1, r.targets[victim])
		if err != nil {
			return nil, err
		}
		r.api[victim] = p
		for _, fr := range []*frontend{ours, peer} {
			if fr != nil {
				k := "lbd"
				if fr == peer {
					k = "haproxy"
				}
				if err := r.waitAllUp(fr, k); err != nil {
					return nil, err
				}
			}
		}
		if detect == 0 {
			return nil, fmt.Errorf("target still in rotation 30s after the kill")
		}
		return map[string]float64{metricDetect.Key: detect.Seconds(), metricFailed.Key: float64(failed.Load())}, nil
	})
	suite.Cases = append(suite.Cases, cs)
	if err != nil {
		return suite, err
	}
	dnsCase, err := r.dnsFailover()
	if dnsCase != nil {
		suite.Cases = append(suite.Cases, dnsCase)
	}
	return suite, err
}

// dnsFailover: dnsd health-checks two edged instances behind a multivalue
// www record; one is killed.
func (r *runner) dnsFailover() (*benchkit.Case, error) {
	dir := filepath.Join(r.work, "dnsfail")
	_ = os.MkdirAll(dir, 0o755)
	edgeAddrs := []string{"127.0.0.1:" + benchkit.FreePort(), "127.0.0.1:" + benchkit.FreePort()}
	edges := make([]*benchkit.Proc, 2)
	startEdge := func(i int) error {
		cfg := filepath.Join(dir, fmt.Sprintf("edged%d.yaml", i))
		if err := benchkit.Render(filepath.Join(r.peers, "stack-edged.yaml"), cfg, map[string]any{"Listen": edgeAddrs[i], "Admin": "127.0.0.1:" + benchkit.FreePort(), "Site": r.site, "LB": "127.0.0.1:1", "CacheSize": "64MiB"}); err != nil {
			return err
		}
		p, err := r.procs.Start(fmt.Sprintf("edge%d", i), []string{filepath.Join(r.bin, "edged"), "run", "-config", cfg}, dir, nil)
		if err != nil {
			return err
		}
		edges[i] = p
		return benchkit.WaitDial(r.ctx, p, edgeAddrs[i], 20*time.Second)
	}
	for i := range edges {
		if err := startEdge(i); err != nil {
			return nil, err
		}
	}
	defer func() {
		for _, e := range edges {
			e.Stop()
		}
	}()
	dnsAddr, admin, token := "127.0.0.1:"+benchkit.FreePort(), "127.0.0.1:"+benchkit.FreePort(), "bench-token"
	zone := "$ORIGIN bench.test.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 604800 60\n@ NS ns1\nns1 A 127.0.0.1\n"
	if err := os.WriteFile(filepath.Join(dir, "bench.test.zone"), []byte(zone), 0o644); err != nil {
		return nil, err
	}
	var hc strings.Builder
	for i, a := range edgeAddrs {
		fmt.Fprintf(&hc, "  edge%d: {kind: http, address: %q, path: /index.html, interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2}\n", i, a)
	}
	cfg := fmt.Sprintf("listen: %q\nzones: [{name: bench.test., file: %q}]\nhealth_checks:\n%sadmin: {listen: %q, token: %q}\nlog: {level: warn}\n",
		dnsAddr, filepath.Join(dir, "bench.test.zone"), hc.String(), admin, token)
	if err := os.WriteFile(filepath.Join(dir, "dnsd.yaml"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	dnsd, err := r.procs.Start("dnsd", []string{filepath.Join(r.bin, "dnsd"), "run", "-config", filepath.Join(dir, "dnsd.yaml")}, dir, nil)
	if err != nil {
		return nil, err
	}
	defer dnsd.Stop()
	if err := benchkit.WaitDial(r.ctx, dnsd, admin, 20*time.Second); err != nil {
		return nil, err
	}
	// www: one multivalue record per edge, tied to that edge's check. The
	// edges both listen on 127.0.0.1 (told apart by port); the records carry
	// distinct loopback addresses so the answers tell them apart.
	ips := []string{"127.0.0.11", "127.0.0.12"}
	var changes []map[string]any
	for i := range edgeAddrs {
		changes = append(changes, map[string]any{"action": "UPSERT", "rrset": map[string]any{
			"name": "www.bench.test.", "type": "A", "ttl": 1, "set_identifier": fmt.Sprintf("edge%d", i),
			"multivalue": true, "health_check_id": fmt.Sprintf("edge%d", i), "records": []string{ips[i]}}})
	}
	body, _ := json.Marshal(map[string]any{"comment": "bench", "changes": changes})
	req, _ := http.NewRequest(http.MethodPost, "http://"+admin+"/v1/zones/bench.test./changes", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("dnsd change: %s: %s", resp.Status, msg)
	}
	answers := func() []string {
		m := new(dns.Msg)
		m.SetQuestion("www.bench.test.", dns.TypeA)
		in, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, dnsAddr)
		if err != nil {
			return nil
		}
		var out []string
		for _, rr := range in.Answer {
			if a, ok := rr.(*dns.A); ok {
				out = append(out, a.A.String())
			}
		}
		slices.Sort(out)
		return out
	}
	waitAnswers := func(want []string) (time.Duration, error) {
		start := time.Now()
		for time.Since(start) < 30*time.Second {
			if slices.Equal(answers(), want) {
				return time.Since(start), nil
			}
			time.Sleep(10 * time.Millisecond)
		}
		return 0, fmt.Errorf("dnsd answers %v, want %v after 30s", answers(), want)
	}
	if _, err := waitAnswers(ips); err != nil {
		return nil, err
	}
	cs := &benchkit.Case{Name: "edge killed behind DNS", Metrics: []benchkit.Metric{metricDetect}, Subjects: []*benchkit.Subject{{Name: "dnsd", Ours: true}}}
	err = benchkit.Alternate(r.ctx, os.Stdout, "failover", cs, r.rounds, func(ctx context.Context, s *benchkit.Subject, _ int) (map[string]float64, error) {
		_ = edges[1].Cmd.Process.Kill()
		d, err := waitAnswers(ips[:1])
		if err != nil {
			return nil, err
		}
		if err := startEdge(1); err != nil {
			return nil, err
		}
		if _, err := waitAnswers(ips); err != nil {
			return nil, err
		}
		return map[string]float64{metricDetect.Key: d.Seconds()}, nil
	})
	return cs, err
}

var (
	metricRest = benchkit.Metric{Key: "rest_mib", Name: "resident MiB at rest"}
	metricLoad = benchkit.Metric{Key: "load_mib", Name: "resident MiB after load"}
)

func (r *runner) memory() (*benchkit.Suite, error) {
	suite := &benchkit.Suite{Name: "memory", Title: "Memory: resident set at rest, after load, and a cache filled past its budget", Notes: []string{
		"Resident memory of the edge and balancer process trees (edged + lbd; nginx + HAProxy), from /proc, after start and after a wrk run over the static page and the API.",
		"Cache budget: edged with cache.max_size 64 MiB and Varnish with -s malloc,64m, each sent 16,384 distinct 16 KiB objects (256 MiB, four times the budget) from the same Go origin; the figure is the resident memory after.",
	}}
	cs := &benchkit.Case{Name: "edge + balancer at rest and after load", Metrics: []benchkit.Metric{metricRest, metricLoad}, Subjects: []*benchkit.Subject{{Name: "edgestack", Ours: true}, {Name: "nginx+haproxy"}}}
	err := benchkit.Alternate(r.ctx, os.Stdout, "memory", cs, 1, func(ctx context.Context, s *benchkit.Subject, _ int) (map[string]float64, error) {
		var f *frontend
		var err error
		if s.Ours {
			f, err = r.startEdgestack("memory")
		} else {
			f, err = r.startPeers()
		}
		if err != nil {
			return nil, err
		}
		defer stop(f)
		rest, err := benchkit.Usages(f.servers...)
		if err != nil {
			return nil, err
		}
		for _, path := range []string{"/index.html", "/api/hello"} {
			if _, _, _, err := benchkit.Wrk(ctx, "http://"+f.entry+path, r.duration, r.threads, r.conns, f.servers...); err != nil {
				return nil, err
			}
		}
		after, err := benchkit.Usages(f.servers...)
		if err != nil {
			return nil, err
		}
		return map[string]float64{metricRest.Key: float64(rest.RSS) / (1 << 20), metricLoad.Key: float64(after.RSS) / (1 << 20)}, nil
	})
	suite.Cases = append(suite.Cases, cs)
	if err != nil {
		return suite, err
	}
	cache, err := r.cacheBudget()
	if cache != nil {
		suite.Cases = append(suite.Cases, cache)
	}
	return suite, err
}

func (r *runner) cacheBudget() (*benchkit.Case, error) {
	const objects, size = 16384, 16 << 10
	body := bytes.Repeat([]byte("m"), size)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(body)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	origin := ln.Addr().String()
	oHost, oPort, _ := net.SplitHostPort(origin)
	cs := &benchkit.Case{Name: "cache filled to 4× its 64 MiB budget", Metrics: []benchkit.Metric{benchkit.MetricRSS}, Subjects: []*benchkit.Subject{{Name: "edged", Ours: true}, {Name: "varnish"}}}
	err = benchkit.Alternate(r.ctx, os.Stdout, "memory", cs, 1, func(ctx context.Context, s *benchkit.Subject, _ int) (map[string]float64, error) {
		dir := filepath.Join(r.work, "cache-"+s.Name)
		_ = os.MkdirAll(dir, 0o755)
		_ = os.Chmod(dir, 0o755)
		addr := "127.0.0.1:" + benchkit.FreePort()
		var p *benchkit.Proc
		if s.Ours {
			cfg := filepath.Join(dir, "edged.yaml")
			if err := benchkit.Render(filepath.Join(r.peers, "edge-edged.yaml"), cfg, map[string]string{"Listen": addr, "Admin": "127.0.0.1:" + benchkit.FreePort(), "Origin": origin}); err != nil {
				return nil, err
			}
			if err := replaceInFile(cfg, "max_size: 256MiB", "max_size: 64MiB"); err != nil {
				return nil, err
			}
			p, err = r.procs.Start("edged-cache", []string{filepath.Join(r.bin, "edged"), "run", "-config", cfg}, dir, nil)
		} else {
			if _, lerr := exec.LookPath("varnishd"); lerr != nil {
				return nil, fmt.Errorf("%w: varnishd not installed", benchkit.ErrSkipped)
			}
			vcl := filepath.Join(dir, "edge.vcl")
			if err := benchkit.Render(filepath.Join(r.peers, "edge-varnish.vcl"), vcl, map[string]string{"OriginHost": oHost, "OriginPort": oPort}); err != nil {
				return nil, err
			}
			p, err = r.procs.Start("varnish-cache", []string{"varnishd", "-F", "-n", filepath.Join(dir, "varnish"), "-a", addr, "-f", vcl, "-s", "malloc,64m"}, dir, nil)
		}
		if err != nil {
			return nil, err
		}
		defer p.Stop()
		if err := benchkit.WaitDial(ctx, p, addr, 20*time.Second); err != nil {
			return nil, err
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &http.Client{Timeout: 5 * time.Second}
				for {
					i := next.Add(1)
					if i > objects || ctx.Err() != nil {
						return
					}
					resp, err := c.Get(fmt.Sprintf("http://%s/obj/%d", addr, i))
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			}()
		}
		wg.Wait()
		time.Sleep(time.Second)
		u, err := benchkit.Usages(p)
		if err != nil {
			return nil, err
		}
		return map[string]float64{benchkit.MetricRSS.Key: float64(u.RSS) / (1 << 20)}, nil
	})
	return cs, err
}

func replaceInFile(path, old, new string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte(old)) {
		return fmt.Errorf("%s: %q not found", path, old)
	}
	return os.WriteFile(path, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644)
}
