package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/edgestack/edgestack/bench/benchkit"
)

// benchLine matches a `go test -bench` result line and its extra metrics.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+([0-9.]+) ns/op(.*)$`)

type benchResult struct {
	name    string
	nsPerOp float64
	extra   map[string]float64
}

func runGoBench(ctx context.Context, pkg, pattern, benchtime string) ([]benchResult, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, "-timeout", "10m", pkg)
	out, err := cmd.CombinedOutput()
	os.Stdout.Write(out)
	if err != nil {
		return nil, fmt.Errorf("go test -bench %s %s: %w", pattern, pkg, err)
	}
	var rs []benchResult
	for _, line := range strings.Split(string(out), "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(m[3], 64)
		r := benchResult{name: m[1], nsPerOp: ns, extra: map[string]float64{}}
		f := strings.Fields(m[4])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				r.extra[f[i+1]] = v
			}
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// certsSuite runs bench/certs' Go benchmarks (time to an issued
// certificate against pebble; TLS handshakes through certsource vs nginx)
// and writes them in the harness's format to dir.
func certsSuite(ctx context.Context, dir string, duration time.Duration) error {
	suite := &benchkit.Suite{Name: "certs", Title: "Certificates: time to issue (pebble) and TLS handshakes (certsource vs nginx)", Notes: []string{
		"Issue: go test -bench Issue ./bench/certs against an in-process pebble with zero Retry-After; the time is request → certificate stored and readable by edged/lbd.",
		"Handshakes: go test -bench Handshake ./bench/certs: full TLS 1.3 handshakes (X25519, no resumption) plus one request each, from the same Go client, certsource in its own process vs nginx with the same certificate; rounds interleaved.",
	}}
	issue, err := runGoBench(ctx, "./bench/certs", "Issue", "3x")
	if err != nil {
		return err
	}
	ic := &benchkit.Case{Name: "time to an issued certificate", Metrics: []benchkit.Metric{{Key: "issue_s", Name: "seconds to issued"}}}
	for _, r := range issue {
		name := strings.TrimPrefix(r.name, "BenchmarkIssue/")
		ic.Subjects = append(ic.Subjects, &benchkit.Subject{Name: name, Ours: true, Samples: []map[string]float64{{"issue_s": r.nsPerOp / 1e9}}})
	}
	ic.Summarize()
	hs, err := runGoBench(ctx, "./bench/certs", "Handshake", fmt.Sprintf("%.0fs", max(1, duration.Seconds()/2)))
	if err != nil {
		return err
	}
	hc := &benchkit.Case{Name: "full TLS handshakes", Metrics: []benchkit.Metric{
		{Key: "hs_per_s", Name: "handshakes/s", HigherIsBetter: true}, {Key: "cpu_us", Name: "server CPU µs/handshake"}}}
	subjects := map[string]*benchkit.Subject{}
	for _, r := range hs {
		parts := strings.Split(strings.TrimPrefix(r.name, "BenchmarkHandshake/"), "/")
		name := parts[0]
		if name == "certsource-mlkem" {
			continue // Go's default hybrid key exchange: nginx here offers X25519 only
		}
		s := subjects[name]
		if s == nil {
			s = &benchkit.Subject{Name: name, Ours: name == "certsource"}
			subjects[name] = s
			hc.Subjects = append(hc.Subjects, s)
		}
		s.Samples = append(s.Samples, map[string]float64{"hs_per_s": r.extra["handshakes/s"], "cpu_us": r.extra["server-cpu-µs/handshake"]})
	}
	hc.Summarize()
	suite.Cases = []*benchkit.Case{ic, hc}
	res := &benchkit.Results{Started: time.Now(), Host: benchkit.Hostname(), Machine: benchkit.DescribeMachine(),
		Versions: map[string]string{"nginx": benchkit.Version("nginx", "-v")}, Suites: []*benchkit.Suite{suite}}
	_, err = res.WriteJSON(dir)
	return err
}
