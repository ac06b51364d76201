package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AtRate runs h2load at a fixed total request rate (conns clients, each
// sending rate/conns requests per second; HTTP/1.1 keep-alive when h1,
// else whatever the URL negotiates) for d, and measures the servers'
// usage around it. Latency percentiles come from h2load's per-request
// log, not its summary, so they cover every request.
//
// Unlike a closed-loop run (wrk), the offered load is the same for every
// subject: latency then says how long a request waits at that load, not
// how the server and the load generator split two cores at saturation.
//
// rate 0 is a closed loop instead (each client sends its next request when
// the last answer is in, as wrk does), with the percentiles still taken
// over every request: wrk's own are not, since wrk 4.1 corrects them for
// coordinated omission (see ClosedLoop).
func AtRate(ctx context.Context, url string, rate int, d time.Duration, threads, conns int, h1 bool, servers ...*Proc) (Load, Usage, Usage, error) {
	if conns <= 0 || (rate != 0 && rate < conns) {
		return Load{}, Usage{}, Usage{}, fmt.Errorf("rate %d too low for %d connections", rate, conns)
	}
	dir, err := os.MkdirTemp("", "h2load-rate-")
	if err != nil {
		return Load{}, Usage{}, Usage{}, err
	}
	defer os.RemoveAll(dir)
	logFile := filepath.Join(dir, "requests.tsv")
	args := []string{fmt.Sprintf("-t%d", threads), fmt.Sprintf("-c%d", conns),
		"-D", strconv.Itoa(max(1, int(d.Seconds()))), "--log-file=" + logFile}
	if rate > 0 {
		args = append(args, fmt.Sprintf("--rps=%d", rate/conns))
	}
	if h1 {
		args = append(args, "--h1")
	}
	out, before, after, err := measured(ctx, d, servers, "h2load", append(args, url)...)
	if err != nil {
		return Load{}, before, after, err
	}
	l, err := ParseH2Load(string(out))
	if err != nil {
		return l, before, after, err
	}
	f, err := os.Open(logFile)
	if err != nil {
		return l, before, after, err
	}
	defer f.Close()
	lat, err := ParseH2LoadLog(f)
	if err != nil {
		return l, before, after, err
	}
	l.P50, l.P75, l.P90, l.P99 = lat.P50, lat.P75, lat.P90, lat.P99
	if !bytes.Contains(out, []byte("Application protocol:")) {
		return l, before, after, fmt.Errorf("h2load: no protocol negotiated:\n%s", tail(string(out), 1000))
	}
	return l, before, after, nil
}

// ClosedLoop is AtRate's closed loop over HTTP/1.1 keep-alive: the load
// wrk offers, with latency percentiles over every request.
//
// Why not wrk's: wrk 4.1 (Debian's) corrects its latency histogram for
// coordinated omission before printing it (stats_correct): every recorded
// latency n is copied at n−i, n−2i, … down to 2i, where i is the run's mean
// time per request on a connection. A closed loop at saturation has no
// schedule the client fell behind on, so those copies are not requests;
// and since i shrinks as the server gets faster, the same pause of the
// load generator's thread adds more copies for a faster server. Its mean
// then exceeds what Little's law allows (connections ÷ requests/s) by 2–4×
// on this machine.
func ClosedLoop(ctx context.Context, url string, d time.Duration, threads, conns int, servers ...*Proc) (Load, Usage, Usage, error) {
	return AtRate(ctx, url, 0, d, threads, conns, true, servers...)
}

// ParseH2LoadLog reads h2load's --log-file (tab-separated: start time in
// µs since the epoch, status, µs until the response ended) and returns the
// latency percentiles of the requests that got a status (failed ones are
// logged with -1 and counted in the summary's errors instead).
func ParseH2LoadLog(r io.Reader) (Load, error) {
	var lat []float64
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Split(strings.TrimSpace(sc.Text()), "\t")
		if len(f) != 3 {
			return Load{}, fmt.Errorf("h2load log line %d: %d fields, want 3", line, len(f))
		}
		status, err1 := strconv.Atoi(f[1])
		us, err2 := strconv.ParseFloat(f[2], 64)
		if err1 != nil || err2 != nil {
			return Load{}, fmt.Errorf("h2load log line %d: %q", line, sc.Text())
		}
		if status > 0 {
			lat = append(lat, us)
		}
	}
	if err := sc.Err(); err != nil {
		return Load{}, err
	}
	if len(lat) == 0 {
		return Load{}, fmt.Errorf("h2load log: no completed request")
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return time.Duration(Quantile(lat, p) * float64(time.Microsecond)) }
	return Load{Requests: float64(len(lat)), P50: q(0.50), P75: q(0.75), P90: q(0.90), P99: q(0.99), Max: q(1)}, nil
}
