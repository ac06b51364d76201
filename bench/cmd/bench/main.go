// Command bench is `make bench`: it runs every edgestack benchmark next to
// the established servers on this machine, in one run, and writes one report.
//
//	go run ./bench/cmd/bench -suites dns,edge,lb -rounds 3 -duration 5s
//
// Each suite is a runner of its own (bench/<suite>, a main package taking
// -duration, -rounds, -results and -report; bench/certs is Go benchmarks); this command installs what is
// missing, runs the selected runners one after the other, merges their
// JSON into bench/results/<date>-<host>.json and writes the combined
// Markdown report with plots into bench/results/latest/.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/edgestack/edgestack/bench/benchkit"
)

// suites maps a suite to its runner package and the Debian packages it needs.
var suites = []struct {
	name, pkg string
	debs      []string
}{
	{"dns", "./bench/dns", []string{"nsd", "knot", "dnsperf"}},
	{"edge", "./bench/edge", []string{"varnish", "nginx", "wrk", "nghttp2-client"}},
	{"lb", "./bench/lb", []string{"haproxy", "nginx", "libnginx-mod-stream", "wrk", "nghttp2-client"}},
	{"certs", "./bench/certs", []string{"nginx", "nghttp2-client"}},
	// stack also runs the failover and memory suites.
	{"stack", "./bench/stack", []string{"wrk", "nginx", "haproxy", "varnish"}},
}

func main() {
	names := make([]string, len(suites))
	for i, s := range suites {
		names[i] = s.name
	}
	sel := flag.String("suites", strings.Join(names, ","), "comma-separated suites to run: "+strings.Join(names, ", "))
	rounds := flag.Int("rounds", 3, "runs per subject (alternating ours and theirs)")
	duration := flag.Duration("duration", 5*time.Second, "length of each load run")
	out := flag.String("results", "bench/results", "folder for the merged JSON and the latest report")
	install := flag.Bool("install", true, "install missing Debian packages with apt-get")
	include := flag.String("include", "", "also report the suites of an earlier run's results `JSON` that this run does not run again")
	reportOnly := flag.String("report-only", "", "run nothing: rewrite the report in -results/latest from this results `JSON`")
	flag.Parse()
	if *reportOnly != "" {
		if err := rewriteReport(*reportOnly, *out); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *rounds < 1 || *rounds > 20 || *duration <= 0 || *duration > time.Minute {
		fmt.Fprintln(os.Stderr, "bench: keep runs bounded: 1 <= -rounds <= 20, 0 < -duration <= 1m")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, strings.Split(*sel, ","), *rounds, *duration, *out, *install, *include); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, selected []string, rounds int, duration time.Duration, out string, install bool, include string) error {
	host, _ := os.Hostname()
	merged := &benchkit.Results{Started: time.Now().UTC(), Host: host, Machine: benchkit.DescribeMachine(), Versions: map[string]string{}}
	work, err := os.MkdirTemp("", "edgestack-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	var debs []string
	for _, s := range suites {
		if slices.Contains(selected, s.name) {
			debs = append(debs, s.debs...)
		}
	}
	if install {
		if err := installMissing(ctx, debs); err != nil {
			fmt.Fprintf(os.Stderr, "bench: installing peers: %v (suites whose peer is missing mark it skipped)\n", err)
		}
	}

	var errs []error
	done := 0
	for _, s := range suites {
		if !slices.Contains(selected, s.name) {
			continue
		}
		done++
		if _, err := os.Stat(s.pkg); err != nil {
			fmt.Printf("== suite %s: no runner at %s yet, skipped\n", s.name, s.pkg)
			continue
		}
		fmt.Printf("== suite %s (%d of %d selected) ==\n", s.name, done, len(selected))
		dir := filepath.Join(work, s.name)
		if s.name == "certs" {
			// bench/certs is a set of Go benchmarks, not a runner.
			if err := certsSuite(ctx, dir, duration); err != nil {
				errs = append(errs, fmt.Errorf("suite %s: %w", s.name, err))
			}
		} else {
			cmd := exec.CommandContext(ctx, "go", "run", s.pkg,
				"-rounds", fmt.Sprint(rounds), "-duration", duration.String(),
				"-results", dir, "-report", filepath.Join(dir, "report"))
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				errs = append(errs, fmt.Errorf("suite %s: %w", s.name, err))
			}
		}
		if err := mergeFrom(merged, dir); err != nil {
			errs = append(errs, fmt.Errorf("suite %s: %w", s.name, err))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if include != "" {
		if err := includeFrom(merged, include); err != nil {
			errs = append(errs, err)
		}
	}
	order := []string{"dns", "edge", "lb", "certs", "stack", "failover", "memory"}
	slices.SortStableFunc(merged.Suites, func(a, b *benchkit.Suite) int {
		return slices.Index(order, a.Name) - slices.Index(order, b.Name)
	})
	if len(merged.Suites) == 0 {
		return errors.Join(append(errs, errors.New("no suite produced results"))...)
	}
	jsonPath, err := merged.WriteJSON(out)
	if err != nil {
		return err
	}
	latest := filepath.Join(out, "latest")
	_ = os.RemoveAll(latest)
	report, err := merged.WriteReport(latest)
	if err != nil {
		return err
	}
	fmt.Printf("\nresults: %s\nreport:  %s\n", jsonPath, report)
	return errors.Join(errs...)
}

// rewriteReport writes out/latest/report.md and its plots from an
// earlier results file, e.g. after the report's layout changed.
func rewriteReport(path, out string) error {
	r, err := readResults(path)
	if err != nil {
		return err
	}
	latest := filepath.Join(out, "latest")
	_ = os.RemoveAll(latest)
	report, err := r.WriteReport(latest)
	if err != nil {
		return err
	}
	fmt.Printf("report: %s\n", report)
	return nil
}

// readResults reads a results JSON file.
func readResults(path string) (*benchkit.Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r benchkit.Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// mergeFrom adds the suites and versions of every results JSON in dir.
func mergeFrom(into *benchkit.Results, dir string) error {
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) == 0 {
		return fmt.Errorf("no results JSON in %s", dir)
	}
	for _, f := range files {
		r, err := readResults(f)
		if err != nil {
			return err
		}
		into.Suites = append(into.Suites, r.Suites...)
		for k, v := range r.Versions {
			into.Versions[k] = v
		}
	}
	return nil
}

// includeFrom adds the suites of an earlier results file that this run
// did not produce, so one suite can be rerun without rerunning the rest.
func includeFrom(into *benchkit.Results, path string) error {
	old, err := readResults(path)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, s := range into.Suites {
		have[s.Name] = true
	}
	for _, s := range old.Suites {
		if !have[s.Name] {
			if !slices.ContainsFunc(s.Notes, func(n string) bool { return strings.HasPrefix(n, "From the run of") }) {
				s.Notes = append(s.Notes, fmt.Sprintf("From the run of %s.", old.Started.UTC().Format("2006-01-02 15:04 MST")))
			}
			into.Suites = append(into.Suites, s)
		}
	}
	for k, v := range old.Versions {
		if _, ok := into.Versions[k]; !ok {
			into.Versions[k] = v
		}
	}
	return nil
}

// installMissing installs the Debian packages not yet installed.
func installMissing(ctx context.Context, debs []string) error {
	var missing []string
	for _, d := range debs {
		if slices.Contains(missing, d) {
			continue
		}
		if exec.CommandContext(ctx, "dpkg", "-s", d).Run() != nil {
			missing = append(missing, d)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Printf("== installing %s\n", strings.Join(missing, " "))
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root: install %s yourself", strings.Join(missing, " "))
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return err
		}
	}
	return nil
}
