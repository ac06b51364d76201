// Command dnsbench runs dnsperf against dnsd, NSD and Knot serving the
// same generated zone on this machine, one after the other, and prints
// queries per second, latency and CPU time per query (from /proc) for each,
// and dnsd's ratios to the others. It also loads a large generated zone
// into dnsd and reports the load time and resident memory. Every run is
// bounded in time. See README.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgestack/edgestack/bench/benchkit"
	"github.com/miekg/dns"
)

type options struct {
	records  int
	big      int
	duration time.Duration
	latQPS   int
	servers  []string
	modes    []string
	dnsd     string
	rounds   int
	clients  int
	profile  string
	// resultsDir and reportDir, when set, receive the harness's JSON and
	// Markdown report.
	resultsDir, reportDir string
}

func main() {
	var o options
	var servers, modes string
	flag.IntVar(&o.records, "records", 100000, "names in the benchmark zone")
	flag.IntVar(&o.big, "big", 1000000, "records of the load-time/memory zone (0 skips)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each throughput run")
	flag.IntVar(&o.latQPS, "latency-qps", 20000, "fixed query rate of the latency runs (0 skips them)")
	flag.StringVar(&servers, "servers", "dnsd,nsd,knot", "servers to measure (also dnsd-nofast: dnsd with the fast path off)")
	flag.StringVar(&modes, "modes", "udp,tcp", "transports")
	flag.StringVar(&o.dnsd, "dnsd", "", "dnsd binary (default: go build ./cmd/dnsd)")
	flag.IntVar(&o.rounds, "rounds", 1, "alternating rounds over the servers")
	flag.IntVar(&o.clients, "clients", 8, "dnsperf clients (-c)")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of dnsd's first UDP run to this file")
	flag.StringVar(&o.resultsDir, "results", "", "folder for the JSON results (bench/benchkit format; none by default)")
	flag.StringVar(&o.reportDir, "report", "", "folder for the Markdown report and plots (none by default)")
	flag.Parse()
	o.servers = strings.Split(servers, ",")
	o.modes = strings.Split(modes, ",")
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "dnsbench:", err)
		os.Exit(1)
	}
}

type result struct {
	server, mode      string
	qps               float64
	avgLat            float64 // seconds
	p50, p99          float64 // seconds, from the fixed-rate run
	cpuPerQ           float64 // microseconds
	queries, answered int
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "dnsbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	procs, _ := benchkit.NewProcs(context.Background())
	defer procs.Close()
	if o.dnsd == "" {
		o.dnsd = filepath.Join(dir, "bin", "dnsd")
		fmt.Fprintln(os.Stderr, "building dnsd ...")
		if out, err := exec.Command("go", "build", "-o", o.dnsd, "github.com/edgestack/edgestack/cmd/dnsd").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	zoneFile := filepath.Join(dir, "bench.zone")
	if err := genZone(zoneFile, "example.bench.", o.records); err != nil {
		return err
	}
	queries := filepath.Join(dir, "queries.txt")
	if err := genQueries(queries, o.records, 100000); err != nil {
		return err
	}
	fmt.Printf("zone: %d names (A), queries: 95%% existing names, 5%% NXDOMAIN; %d dnsperf clients; %v per run; %d cores\n\n", o.records, o.clients, o.duration, nproc())
	var results []result
	for round := 0; round < o.rounds; round++ {
		for _, mode := range o.modes {
			for _, name := range o.servers {
				srv, err := startServer(procs, name, o, dir, zoneFile)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				r, err := measure(srv, mode, queries, o, round == 0 && mode == "udp" && name == "dnsd")
				srv.proc.Stop()
				if err != nil {
					return fmt.Errorf("%s %s: %w", name, mode, err)
				}
				results = append(results, r)
				fmt.Fprintf(os.Stderr, "%-11s %-4s %9.0f qps  avg %6.0f µs  p50 %6.0f µs  p99 %6.0f µs  cpu %5.1f µs/q\n", r.server, r.mode, r.qps, r.avgLat*1e6, r.p50*1e6, r.p99*1e6, r.cpuPerQ)
			}
		}
	}
	report(results, o)
	var big *benchkit.Case
	if o.big > 0 {
		if big, err = loadTest(procs, o, dir); err != nil {
			return err
		}
	}
	return writeResults(results, big, o)
}

// writeResults saves the runs in the harness's format (bench/benchkit),
// one case per transport, plus the big-zone load when it ran.
func writeResults(rs []result, big *benchkit.Case, o options) error {
	if o.resultsDir == "" && o.reportDir == "" {
		return nil
	}
	suite := &benchkit.Suite{Name: "dns", Title: "Authoritative DNS: dnsd vs NSD vs Knot (dnsperf)", Notes: []string{
		fmt.Sprintf("dnsperf -c %d for %v per run against one generated zone of %d A records (95%% existing names, 5%% NXDOMAIN); servers run alternately, %d round(s).", o.clients, o.duration, o.records, o.rounds),
		fmt.Sprintf("p50/p99 come from a separate run at a fixed %d queries/s (dnsperf reports no percentiles); CPU per query is the server's user+system time from /proc divided by the queries answered.", o.latQPS),
	}}
	metrics := []benchkit.Metric{benchkit.MetricQPS, benchkit.MetricCPU, benchkit.MetricMean, benchkit.MetricP50, benchkit.MetricP99}
	for _, mode := range o.modes {
		c := &benchkit.Case{Name: strings.ToUpper(mode), Metrics: metrics}
		for _, name := range o.servers {
			if name == "dnsd-nofast" {
				continue // an ablation of ours, not a peer
			}
			sub := &benchkit.Subject{Name: name, Ours: name == "dnsd"}
			for _, r := range rs {
				if r.server != name || r.mode != mode {
					continue
				}
				m := map[string]float64{benchkit.MetricQPS.Key: r.qps, benchkit.MetricCPU.Key: r.cpuPerQ, benchkit.MetricMean.Key: r.avgLat * 1e3}
				if r.p99 > 0 {
					m[benchkit.MetricP50.Key], m[benchkit.MetricP99.Key] = r.p50*1e3, r.p99*1e3
				}
				sub.Samples = append(sub.Samples, m)
			}
			c.Subjects = append(c.Subjects, sub)
		}
		c.Summarize()
		suite.Cases = append(suite.Cases, c)
	}
	if big != nil {
		suite.Cases = append(suite.Cases, big)
	}
	versions := map[string]string{"dnsd": benchkit.Version(o.dnsd, "version"), "nsd": benchkit.Version("nsd", "-v"), "knot": benchkit.Version("knotd", "--version"), "dnsperf": "dnsperf " + benchkit.VersionLine("Version", "dnsperf", "-h")}
	res := &benchkit.Results{Started: time.Now(), Host: benchkit.Hostname(), Machine: benchkit.DescribeMachine(), Versions: versions, Suites: []*benchkit.Suite{suite}}
	if o.resultsDir != "" {
		if _, err := res.WriteJSON(o.resultsDir); err != nil {
			return err
		}
	}
	if o.reportDir != "" {
		if _, err := res.WriteReport(o.reportDir); err != nil {
			return err
		}
	}
	return nil
}

func nproc() int {
	out, _ := exec.Command("nproc").Output()
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

func genZone(path, origin string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintf(w, "$ORIGIN %s\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.53\n", origin)
	for i := range n {
		fmt.Fprintf(w, "host%d IN A 10.%d.%d.%d\n", i, i>>16&255, i>>8&255, i&255)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

func genQueries(path string, names, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	r := rand.New(rand.NewPCG(1, 2))
	for range n {
		if r.IntN(20) == 0 {
			fmt.Fprintf(w, "miss%d.example.bench A\n", r.IntN(names))
		} else {
			fmt.Fprintf(w, "host%d.example.bench A\n", r.IntN(names))
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

type server struct {
	name    string
	port    int
	proc    *benchkit.Proc
	admin   string // dnsd only
	started time.Time
}

func (s *server) pid() int { return s.proc.Cmd.Process.Pid }

func startServer(procs *benchkit.Procs, name string, o options, dir, zoneFile string) (*server, error) {
	port, _ := strconv.Atoi(benchkit.FreePort())
	s := &server{name: name, port: port}
	sdir := filepath.Join(dir, name)
	if err := os.MkdirAll(sdir, 0o755); err != nil {
		return nil, err
	}
	var args []string
	var bin string
	switch name {
	case "dnsd", "dnsd-nofast":
		s.admin = "127.0.0.1:" + benchkit.FreePort()
		cfg := fmt.Sprintf("listen: 127.0.0.1:%d\nadmin:\n  listen: %s\n  pprof: true\nlog:\n  level: warn\nzones:\n  - name: example.bench.\n    file: %s\n", s.port, s.admin, zoneFile)
		if name == "dnsd-nofast" { // the slow path only: miekg/dns parse, lookup, pack
			cfg += "cache_entries: 0\n"
		}
		p := filepath.Join(sdir, "dnsd.yaml")
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		bin, args = o.dnsd, []string{"run", "-config", p}
	case "nsd":
		cfg := fmt.Sprintf(`server:
  ip-address: 127.0.0.1@%[1]d
  port: %[1]d
  username: ""
  chroot: ""
  pidfile: "%[2]s/nsd.pid"
  zonelistfile: "%[2]s/zone.list"
  xfrdfile: "%[2]s/xfrd.state"
  xfrdir: "%[2]s"
  logfile: "%[2]s/nsd.log"
  database: ""
  minimal-responses: yes
  rrl-ratelimit: 0
  server-count: %[4]d
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: example.bench.
  zonefile: %[3]q
`, s.port, sdir, zoneFile, nproc())
		p := filepath.Join(sdir, "nsd.conf")
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		bin, args = "/usr/sbin/nsd", []string{"-d", "-c", p}
	case "knot":
		cfg := fmt.Sprintf(`server:
  listen: 127.0.0.1@%[1]d
  rundir: "%[2]s"
database:
  storage: "%[2]s"
log:
  - target: stderr
    any: error
zone:
  - domain: example.bench.
    file: %[3]q
    journal-content: none
    zonefile-sync: -1
`, s.port, sdir, zoneFile)
		p := filepath.Join(sdir, "knot.conf")
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		bin, args = "/usr/sbin/knotd", []string{"-c", p}
	default:
		return nil, fmt.Errorf("unknown server %q", name)
	}
	s.started = time.Now()
	pr, err := procs.Start(name, append([]string{bin}, args...), sdir, nil)
	if err != nil {
		return nil, err
	}
	s.proc = pr
	answers := func() error { return querySOA(s.port) }
	if err := benchkit.WaitTCP(context.Background(), pr, answers, 120*time.Second); err != nil {
		pr.Stop()
		return nil, err
	}
	return s, nil
}

// querySOA asks the zone's SOA once over UDP.
func querySOA(port int) error {
	m := new(dns.Msg)
	m.SetQuestion("example.bench.", dns.TypeSOA)
	r, _, err := (&dns.Client{Timeout: 200 * time.Millisecond}).Exchange(m, fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("SOA query: %s", dns.RcodeToString[r.Rcode])
	}
	return nil
}

var (
	reQPS  = regexp.MustCompile(`Queries per second:\s+([\d.]+)`)
	reSent = regexp.MustCompile(`Queries sent:\s+(\d+)`)
	reDone = regexp.MustCompile(`Queries completed:\s+(\d+)`)
	reLat  = regexp.MustCompile(`Average Latency \(s\):\s+([\d.]+)`)
)

func measure(s *server, mode, queries string, o options, profile bool) (result, error) {
	r := result{server: s.name, mode: mode}
	secs := int(o.duration.Seconds())
	base := []string{"-s", "127.0.0.1", "-p", strconv.Itoa(s.port), "-d", queries, "-m", mode, "-c", strconv.Itoa(o.clients), "-q", "500", "-t", "2"}
	// Warm up (fills dnsd's fast path, page cache, ...).
	_ = exec.Command("dnsperf", append(base, "-l", "1")...).Run()
	var prof *exec.Cmd
	if profile && o.profile != "" && s.admin != "" {
		prof = exec.Command("curl", "-s", "-o", o.profile, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.admin, max(1, secs-1)))
		_ = prof.Start()
	}
	u0, err := benchkit.TreeUsage(s.pid())
	if err != nil {
		return r, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.duration+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dnsperf", append(base, "-l", strconv.Itoa(secs))...).CombinedOutput()
	if err != nil {
		return r, fmt.Errorf("dnsperf: %v\n%s", err, out)
	}
	u1, _ := benchkit.TreeUsage(s.pid())
	if prof != nil {
		_ = prof.Wait()
	}
	r.qps = parseF(reQPS, out)
	r.avgLat = parseF(reLat, out)
	r.queries = int(parseF(reSent, out))
	r.answered = int(parseF(reDone, out))
	if os.Getenv("DNSBENCH_VERBOSE") != "" {
		os.Stderr.Write(out)
	}
	if r.answered > 0 {
		r.cpuPerQ = float64((u1.CPU - u0.CPU).Microseconds()) / float64(r.answered)
	}
	if o.latQPS > 0 {
		r.p50, r.p99, err = latency(ctx, base, o.latQPS)
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

// latency runs dnsperf at a fixed rate for 3 s with per-query output and
// returns the median and 99th percentile.
func latency(ctx context.Context, base []string, qps int) (float64, float64, error) {
	cmd := exec.CommandContext(ctx, "dnsperf", append(base, "-l", "3", "-Q", strconv.Itoa(qps), "-v")...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	var lats []float64
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		// "> NOERROR host1.example.bench A 0.000123"
		line := sc.Text()
		if !strings.HasPrefix(line, "> ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			lats = append(lats, v)
		}
	}
	if err := cmd.Wait(); err != nil {
		return 0, 0, err
	}
	if len(lats) == 0 {
		return 0, 0, errors.New("no latencies parsed from dnsperf -v")
	}
	slices.Sort(lats)
	return lats[len(lats)/2], lats[len(lats)*99/100], nil
}

func parseF(re *regexp.Regexp, out []byte) float64 {
	m := re.FindSubmatch(out)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func report(rs []result, o options) {
	type key struct{ server, mode string }
	agg := map[key]*result{}
	n := map[key]int{}
	var keys []key
	for _, r := range rs {
		k := key{r.server, r.mode}
		a := agg[k]
		if a == nil {
			a = &result{server: r.server, mode: r.mode}
			agg[k] = a
			keys = append(keys, k)
		}
		a.qps += r.qps
		a.avgLat += r.avgLat
		a.p50 += r.p50
		a.p99 += r.p99
		a.cpuPerQ += r.cpuPerQ
		n[k]++
	}
	for k, a := range agg {
		c := float64(n[k])
		a.qps, a.avgLat, a.p50, a.p99, a.cpuPerQ = a.qps/c, a.avgLat/c, a.p50/c, a.p99/c, a.cpuPerQ/c
	}
	sort.SliceStable(keys, func(i, j int) bool { return keys[i].mode > keys[j].mode })
	fmt.Printf("%-11s %-4s %10s %10s %10s %10s %12s\n", "server", "mode", "qps", "avg µs", "p50 µs", "p99 µs", "cpu µs/query")
	for _, k := range keys {
		a := agg[k]
		fmt.Printf("%-11s %-4s %10.0f %10.0f %10.0f %10.0f %12.2f\n", a.server, a.mode, a.qps, a.avgLat*1e6, a.p50*1e6, a.p99*1e6, a.cpuPerQ)
	}
	fmt.Printf("\n(p50/p99 at a fixed %d qps; qps and avg at full load)\n\nratios dnsd / other (qps: higher is better; cpu, p99: lower is better)\n", o.latQPS)
	for _, mode := range o.modes {
		d := agg[key{"dnsd", mode}]
		if d == nil {
			continue
		}
		for _, other := range []string{"nsd", "knot"} {
			x := agg[key{other, mode}]
			if x == nil || x.qps == 0 || x.cpuPerQ == 0 {
				continue
			}
			p99 := 0.0
			if x.p99 > 0 {
				p99 = d.p99 / x.p99
			}
			fmt.Printf("  %-4s vs %-5s qps %.2f  cpu/query %.2f  p99 %.2f\n", mode, other, d.qps/x.qps, d.cpuPerQ/x.cpuPerQ, p99)
		}
	}
}

// loadTest loads a zone of o.big records into dnsd and reports the time
// to the first answer and the resident memory.
func loadTest(procs *benchkit.Procs, o options, dir string) (*benchkit.Case, error) {
	p := filepath.Join(dir, "big.zone")
	if err := genZone(p, "example.bench.", o.big); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "loading %d records into dnsd ...\n", o.big)
	s, err := startServer(procs, "dnsd", o, dir, p)
	if err != nil {
		return nil, err
	}
	defer s.proc.Stop()
	load := time.Since(s.started)
	u, err := benchkit.TreeUsage(s.pid())
	if err != nil {
		return nil, err
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid()))
	rss := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") || strings.HasPrefix(l, "VmHWM:") {
			rss += strings.Join(strings.Fields(l), " ") + "  "
		}
	}
	fmt.Printf("\nload test: %d records loaded and answering after %v wall, %v CPU; %s\n", o.big, load.Round(10*time.Millisecond), u.CPU, rss)
	c := &benchkit.Case{Name: fmt.Sprintf("zone of %d records: load time and memory (targets: < 10 s, < 1 GiB)", o.big),
		Metrics:  []benchkit.Metric{{Key: "load_s", Name: "seconds until answering"}, benchkit.MetricRSS},
		Subjects: []*benchkit.Subject{{Name: "dnsd", Ours: true, Samples: []map[string]float64{{"load_s": load.Seconds(), benchkit.MetricRSS.Key: float64(u.RSS) / (1 << 20)}}}}}
	c.Summarize()
	return c, nil
}
