// Command edge benchmarks edged against Varnish and nginx proxy_cache in
// front of the same origin on loopback: cache-hit requests per second,
// p50/p99 latency and server CPU per request (from /proc) for 1 KiB,
// 100 KiB and 1 MiB objects, the same for pass-through requests to an
// uncacheable 1 KiB answer, and the time to the first byte of a cold miss
// from an origin that sends slowly, each subject run alternately.
//
//	go run ./bench/edge -duration 5s -rounds 3
//
// Peer configs are in bench/peers/edge-*. Results go to -results
// (JSON) and -report (Markdown + PNG), both bench/edge/results by default.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgestack/edgestack/bench/benchkit"
)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "length of each wrk run")
	rounds := flag.Int("rounds", 3, "runs per subject and size")
	conns := flag.Int("conns", 32, "wrk connections")
	threads := flag.Int("threads", 2, "wrk threads")
	sizes := flag.String("sizes", "1KiB,100KiB,1MiB", "object sizes")
	only := flag.String("only", "", "comma-separated subjects to run (edged,varnish,nginx); default all")
	edgedBin := flag.String("edged", "", "edged binary (default: go build ./cmd/edged)")
	resultsDir := flag.String("results", "bench/edge/results", "folder for the JSON results")
	reportDir := flag.String("report", "bench/edge/results", "folder for the Markdown report and plots")
	peers := flag.String("peers", "bench/peers", "folder holding the peer configs")
	rate := flag.Int("rate", 20000, "also measure latency at this fixed request rate (h2load --h1 --rps, smallest size); 0: skip")
	h2 := flag.Bool("h2", true, "also measure HTTPS + HTTP/2 hits of the smallest size with h2load (edged and nginx; Varnish has no TLS)")
	split := flag.Bool("split", true, "also measure hits of the smallest size with the server confined to one core and wrk (one thread) to another, so latency is not the two taking turns on the same cores")
	perRequest := flag.Bool("per-request", true, "also measure hits of every size in a closed loop with h2load --h1 (same threads and connections as wrk), percentiles over every request from its log: wrk 4.1 prints coordinated-omission-corrected ones")
	pass := flag.Bool("pass", true, "also measure pass-through requests for an uncacheable 1 KiB answer (every request reaches the origin)")
	miss := flag.Bool("miss", true, "also measure cold misses of a 2 MiB object the origin sends at 16 MiB/s: time to the first byte and to the last")
	memory := flag.Int("memory", 0, "instead: memory run with this cache budget in MiB (4x the budget in distinct 16 KiB objects)")
	flag.Parse()
	if *memory > 0 {
		if err := memoryRun(*edgedBin, *memory, 16); err != nil {
			fmt.Fprintln(os.Stderr, "bench/edge:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*duration, *rounds, *conns, *threads, *sizes, *only, *edgedBin, *resultsDir, *reportDir, *peers, *h2, *pass, *miss, *split, *perRequest, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "bench/edge:", err)
		os.Exit(1)
	}
}

type server struct {
	name  string
	port  string
	https string // TLS port; "" when the subject has none
	proc  *benchkit.Proc
}

func run(duration time.Duration, rounds, conns, threads int, sizeList, only, edgedBin, resultsDir, reportDir, peersDir string, h2, pass, miss, split, perRequest bool, rate int) error {
	if duration > time.Minute || rounds > 20 {
		return fmt.Errorf("keep runs bounded: -duration <= 1m, -rounds <= 20")
	}
	procs, ctx := benchkit.NewProcs(context.Background())
	defer procs.Close()
	work, err := os.MkdirTemp("", "bench-edge-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	_ = os.Chmod(work, 0o755) // varnishd reads the VCL as its own user
	peersDir, _ = filepath.Abs(peersDir)

	// The origin: every size at /obj-<bytes>, cacheable for an hour.
	var sizes []int
	for _, s := range strings.Split(sizeList, ",") {
		n, err := parseSize(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		sizes = append(sizes, n)
	}
	originLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bodies := map[string][]byte{}
	for _, n := range sizes {
		bodies["/obj-"+strconv.Itoa(n)] = bytes.Repeat([]byte("e"), n)
	}
	// /pass-1024 is an uncacheable answer (an API call): every request
	// goes to the origin.
	passBody := bytes.Repeat([]byte("p"), 1024)
	originSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, slowPrefix) {
			serveSlow(w, r)
			return
		}
		if r.URL.Path == passPath {
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(passBody)))
			_, _ = w.Write(passBody)
			return
		}
		b, ok := bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("ETag", `"`+strconv.Itoa(len(b))+`"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	})}
	go func() { _ = originSrv.Serve(originLn) }()
	defer originSrv.Close()
	origin := originLn.Addr().String()
	oHost, oPort, _ := net.SplitHostPort(origin)

	want := map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			want[s] = true
		}
	}
	use := func(name string) bool { return len(want) == 0 || want[name] }
	if _, err := exec.LookPath("h2load"); h2 && err != nil {
		fmt.Println("h2load not installed: HTTPS + HTTP/2 case skipped")
		h2 = false
	}
	certFile, keyFile, _, err := benchkit.WriteSelfSigned(work)
	if err != nil {
		return err
	}
	versions := map[string]string{}
	var servers []*server

	if use("edged") {
		if edgedBin == "" {
			edgedBin = filepath.Join(work, "edged")
			out, err := exec.Command("go", "build", "-o", edgedBin, "./cmd/edged").CombinedOutput()
			if err != nil {
				return fmt.Errorf("build edged: %v\n%s", err, out)
			}
		}
		port, admin, https := benchkit.FreePort(), benchkit.FreePort(), benchkit.FreePort()
		cfg := filepath.Join(work, "edged.yaml")
		sendfileDir := filepath.Join(work, "edged-sendfile")
		if err := os.MkdirAll(sendfileDir, 0o755); err != nil {
			return err
		}
		if err := benchkit.Render(filepath.Join(peersDir, "edge-edged.yaml"), cfg, map[string]string{
			"Listen": "127.0.0.1:" + port, "Admin": "127.0.0.1:" + admin, "Origin": origin,
			"HTTPS": "127.0.0.1:" + https, "CertFile": certFile, "KeyFile": keyFile, "SendfileDir": sendfileDir}); err != nil {
			return err
		}
		p, err := procs.Start("edged", []string{edgedBin, "run", "-config", cfg}, work, nil)
		if err != nil {
			return err
		}
		servers = append(servers, &server{"edged", port, https, p})
		versions["edged"] = benchkit.Version(edgedBin, "version")
	}
	if use("varnish") {
		if path, err := exec.LookPath("varnishd"); err == nil {
			port := benchkit.FreePort()
			vcl := filepath.Join(work, "edge.vcl")
			if err := benchkit.Render(filepath.Join(peersDir, "edge-varnish.vcl"), vcl, map[string]string{"OriginHost": oHost, "OriginPort": oPort}); err != nil {
				return err
			}
			p, err := procs.Start("varnish", []string{path, "-F", "-n", filepath.Join(work, "varnish"), "-a", "127.0.0.1:" + port,
				"-f", vcl, "-s", "malloc,256m"}, work, nil)
			if err != nil {
				return err
			}
			servers = append(servers, &server{"varnish", port, "", p})
			versions["varnish"] = benchkit.Version(path, "-V")
		} else {
			fmt.Println("varnishd not installed: skipped")
		}
	}
	if use("nginx") {
		if path, err := exec.LookPath("nginx"); err == nil {
			port, https := benchkit.FreePort(), benchkit.FreePort()
			dir := filepath.Join(work, "nginx")
			for _, d := range []string{"cache", "tmp", "body", "fcgi", "uwsgi", "scgi", "logs"} {
				_ = os.MkdirAll(filepath.Join(dir, d), 0o755)
			}
			conf := filepath.Join(dir, "nginx.conf")
			if err := benchkit.Render(filepath.Join(peersDir, "edge-nginx.conf"), conf, map[string]string{"Dir": dir, "Listen": "127.0.0.1:" + port, "Origin": origin,
				"HTTPS": "127.0.0.1:" + https, "CertFile": certFile, "KeyFile": keyFile}); err != nil {
				return err
			}
			p, err := procs.Start("nginx", []string{path, "-p", dir, "-c", conf}, dir, nil)
			if err != nil {
				return err
			}
			servers = append(servers, &server{"nginx", port, https, p})
			versions["nginx"] = benchkit.Version(path, "-v")
		} else {
			fmt.Println("nginx not installed: skipped")
		}
	}
	versions["wrk"] = benchkit.Version("wrk", "--version")
	for _, s := range servers {
		if err := benchkit.WaitDial(ctx, s.proc, "127.0.0.1:"+s.port, 20*time.Second); err != nil {
			return err
		}
	}

	suite := &benchkit.Suite{Name: "edge", Title: "CDN edge: cache hits and pass-through (edged vs Varnish vs nginx proxy_cache)", Notes: []string{
		fmt.Sprintf("wrk -t%d -c%d -d%s --latency against one cached object per size; every object warmed first (a miss then a hit).", threads, conns, duration),
		"Same Go origin on loopback for all three (Cache-Control: max-age=3600); configs in bench/peers/edge-*.",
		"CPU per request: user+system time of the server's whole process tree from /proc, divided by the requests wrk completed.",
	}}
	res := &benchkit.Results{Started: time.Now(), Host: benchkit.Hostname(), Machine: benchkit.DescribeMachine(), Versions: versions, Suites: []*benchkit.Suite{suite}}
	// addSampled runs measure against every subject in turn (those with a
	// TLS listener only, when needTLS) as one more case of the suite, with
	// note (if any) added to the suite's notes.
	addSampled := func(name string, metrics []benchkit.Metric, needTLS bool, note string, measure func(ctx context.Context, s *server) (map[string]float64, error)) {
		c := &benchkit.Case{Name: name, Metrics: metrics}
		byName := map[string]*server{}
		for _, s := range servers {
			sub := &benchkit.Subject{Name: s.name, Ours: s.name == "edged"}
			if needTLS && s.https == "" {
				sub.Skipped = "no TLS listener (Varnish needs a TLS proxy such as hitch in front)"
			}
			c.Subjects = append(c.Subjects, sub)
			byName[s.name] = s
		}
		suite.Cases = append(suite.Cases, c)
		if note != "" {
			suite.Notes = append(suite.Notes, note)
		}
		err := benchkit.Alternate(ctx, os.Stdout, "edge", c, rounds, func(ctx context.Context, sub *benchkit.Subject, _ int) (map[string]float64, error) {
			return measure(ctx, byName[sub.Name])
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	// addCase is addSampled for a load generator's run.
	addCase := func(name string, metrics []benchkit.Metric, needTLS bool, note string, load func(ctx context.Context, s *server) (benchkit.Load, benchkit.Usage, benchkit.Usage, error)) {
		addSampled(name, metrics, needTLS, note, func(ctx context.Context, s *server) (map[string]float64, error) {
			l, before, after, err := load(ctx, s)
			if err != nil {
				return nil, err
			}
			return benchkit.Sample(l, before, after, benchkit.MetricRPS.Key), nil
		})
	}
	var splitNote string // the separate-cores note, once
	for i, n := range sizes {
		path := "/obj-" + strconv.Itoa(n)
		for _, s := range servers {
			url := "http://127.0.0.1:" + s.port + path
			for range 3 {
				if err := warm(url, n); err != nil {
					return fmt.Errorf("%s: warm %s: %w", s.name, url, err)
				}
			}
		}
		addCase("cache hit "+sizeName(n),
			[]benchkit.Metric{benchkit.MetricRPS, benchkit.MetricCPU, benchkit.MetricP50, benchkit.MetricP99, benchkit.MetricErrors, benchkit.MetricRSS}, false, "",
			func(ctx context.Context, s *server) (benchkit.Load, benchkit.Usage, benchkit.Usage, error) {
				return benchkit.Wrk(ctx, "http://127.0.0.1:"+s.port+path, duration, threads, conns, s.proc)
			})
		if perRequest {
			note := ""
			if i == 0 {
				note = fmt.Sprintf("Per request: h2load --h1 -t%d -c%d for %s, a closed loop like wrk's, with p50/p99 over every request from h2load's log. wrk 4.1 (Debian's) prints percentiles corrected for coordinated omission: each latency n is also counted at n−i, n−2i, … down to 2i, i being the run's mean time per request on a connection, so a pause of wrk's own thread counts many times over, and the more the faster the server (i is smaller). Its mean then exceeds connections ÷ requests/s, the most Little's law allows.", threads, conns, duration)
			}
			addCase(fmt.Sprintf("cache hit %s, per request (h2load closed loop)", sizeName(n)),
				[]benchkit.Metric{benchkit.MetricRPS, benchkit.MetricCPU, benchkit.MetricP50, benchkit.MetricP99, benchkit.MetricErrors}, false, note,
				func(ctx context.Context, s *server) (benchkit.Load, benchkit.Usage, benchkit.Usage, error) {
					return benchkit.ClosedLoop(ctx, "http://127.0.0.1:"+s.port+path, duration, threads, conns, s.proc)
				})
		}
		if cpus := benchkit.AllCPUs(); split && len(cpus) >= 2 {
			serverCPU, clientCPU := cpus[0], cpus[1]
			if i == 0 {
				splitNote = fmt.Sprintf("Separate cores: every thread of the server's process tree confined to CPU %d for the run (then released), wrk -t1 -c%d on CPU %d. With both free to use both cores, a saturated server and wrk take turns on them and wrk's scheduling delays (ms) land in the latency tail; this case shows the server's own tail. Go servers drop to GOMAXPROCS=1 while confined (the runtime follows the CPU mask); each run starts 1.5 s after confining.", serverCPU, conns, clientCPU)
			} else {
				splitNote = ""
			}
			addCase(fmt.Sprintf("cache hit %s, server and wrk on separate cores", sizeName(n)),
				[]benchkit.Metric{benchkit.MetricRPS, benchkit.MetricCPU, benchkit.MetricP50, benchkit.MetricP99, benchkit.MetricErrors}, false,
				splitNote,
				func(ctx context.Context, s *server) (benchkit.Load, benchkit.Usage, benchkit.Usage, error) {
					pid := s.proc.Cmd.Process.Pid
					if err := benchkit.Pin(pid, serverCPU); err != nil {
						return benchkit.Load{}, benchkit.Usage{}, benchkit.Usage{}, err
					}
					defer benchkit.Pin(pid, cpus...)
					select {
					case <-time.After(1500 * time.Millisecond):
					case <-ctx.Done():
						return benchkit.Load{}, benchkit.Usage{}, benchkit.Usage{}, ctx.Err()
					}
					return benchkit.WrkOn(ctx, strconv.Itoa(clientCPU), "http://127.0.0.1:"+s.port+path, duration, 1, conns, s.proc)
				})
		}
	}
	if pass {
		for _, s := range servers {
			if err := warm("http://127.0.0.1:"+s.port+passPath, 1024); err != nil {
				return fmt.Errorf("%s: warm %s: %w", s.name, passPath, err)
			}
		}
		addCase("pass-through 1 KiB (uncacheable, every request to the origin)",
			[]benchkit.Metric{benchkit.MetricRPS, benchkit.MetricCPU, benchkit.MetricP50, benchkit.MetricP99, benchkit.MetricErrors}, false,
			"Pass-through: the origin answers "+passPath+" with Cache-Control: no-store, so every request reaches it. edged and Varnish run their defaults (a hit-for-miss marker after the first answer); nginx has a location for it without proxy_cache, as an nginx user would configure an API path. CPU per request counts the edge server only, not the origin.",
			func(ctx context.Context, s *server) (benchkit.Load, benchkit.Usage, benchkit.Usage, error) {
				return benchkit.Wrk(ctx, "http://127.0.0.1:"+s.port+passPath, duration, threads, conns, s.proc)
			})
	}
	if miss {
		var next int // a new path per request: every one a cold miss
		addSampled(fmt.Sprintf("cold miss %s from a slow origin (%d MiB/s)", sizeName(slowSize), slowRate>>20),
			[]benchkit.Metric{metricFirstByte, metricLastByte, benchkit.MetricCPU, benchkit.MetricErrors}, false,
			fmt.Sprintf("Cold miss: %d requests one after another, each for a new path, so each is a miss; the origin sends the %s body in 64 KiB parts at %d MiB/s (%d ms for the whole). Time to the first byte of the body and to the last, medians of the requests; a server that reads a miss whole before sending it has a first byte as late as its last. CPU per request counts the edge server only.", missRequests, sizeName(slowSize), slowRate>>20, slowSize*1000/slowRate),
			func(ctx context.Context, s *server) (map[string]float64, error) {
				return coldMisses(ctx, s, &next)
			})
	}
	if len(sizes) > 0 {
		n := sizes[0]
		path := "/obj-" + strconv.Itoa(n)
		if rate > 0 {
			addCase(fmt.Sprintf("cache hit %s at %d req/s", sizeName(n), rate),
				[]benchkit.Metric{benchkit.MetricP50, benchkit.MetricP99, benchkit.MetricCPU, benchkit.MetricErrors}, false,
				fmt.Sprintf("At a fixed rate: h2load --h1 -t%d -c%d --rps=%d (%d req/s in all), the same load offered to every subject; percentiles over every request from h2load's log.", threads, conns, rate/conns, rate),
				func(ctx context.Context, s *server) (benchkit.Load, benchkit.Usage, benchkit.Usage, error) {
					return benchkit.AtRate(ctx, "http://127.0.0.1:"+s.port+path, rate, duration, threads, conns, true, s.proc)
				})
		}
		if h2 {
			addCase("HTTPS/1.1 cache hit "+sizeName(n),
				[]benchkit.Metric{benchkit.MetricRPS, benchkit.MetricCPU, benchkit.MetricP50, benchkit.MetricP99, benchkit.MetricErrors}, true,
				fmt.Sprintf("HTTPS/1.1: wrk -t%d -c%d over TLS (keep-alive, so handshakes are negligible), same object, already cached.", threads, conns),
				func(ctx context.Context, s *server) (benchkit.Load, benchkit.Usage, benchkit.Usage, error) {
					return benchkit.Wrk(ctx, "https://127.0.0.1:"+s.https+path, duration, threads, conns, s.proc)
				})
			addCase("HTTPS + HTTP/2 cache hit "+sizeName(n),
				[]benchkit.Metric{benchkit.MetricRPS, benchkit.MetricCPU, benchkit.MetricMean, benchkit.MetricErrors, benchkit.MetricRSS}, true,
				fmt.Sprintf("HTTPS + HTTP/2: h2load -t%d -c%d -m10 over TLS 1.3 (self-signed P-256 certificate), same object, already cached.", threads, max(conns/2, 2)),
				func(ctx context.Context, s *server) (benchkit.Load, benchkit.Usage, benchkit.Usage, error) {
					return benchkit.H2Load(ctx, "https://127.0.0.1:"+s.https+path, duration, threads, max(conns/2, 2), 10, s.proc)
				})
		}
	}
	if p, err := res.WriteJSON(resultsDir); err == nil {
		fmt.Println("results:", p)
	}
	p, err := res.WriteReport(reportDir)
	if err != nil {
		return err
	}
	fmt.Println("report:", p)
	for _, c := range suite.Cases {
		fmt.Printf("\n%s\n", c.Name)
		for _, s := range c.Subjects {
			fmt.Printf("  %-8s", s.Name)
			for _, m := range c.Metrics {
				fmt.Printf("  %s %.2f", m.Key, s.Summary[m.Key].Median)
			}
			fmt.Println()
		}
	}
	return nil
}

// warm fetches url and checks the size.
// passPath is the origin's uncacheable object (the pass-through case).
const passPath = "/pass-1024"

func warm(url string, n int) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, _ := io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 || got != int64(n) {
		return fmt.Errorf("status %d, %d bytes", resp.StatusCode, got)
	}
	return nil
}

func parseSize(s string) (int, error) {
	mult := 1
	for suf, m := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func sizeName(n int) string {
	switch {
	case n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}
