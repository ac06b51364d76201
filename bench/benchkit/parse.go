package benchkit

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Load is what one load-generator run measured.
type Load struct {
	Requests  float64       // completed requests or queries
	Errors    float64       // failed, lost, timed out, non-2xx/3xx
	Seconds   float64       // run time
	PerSecond float64       // requests (or queries) per second
	Mean      time.Duration // latency
	P50, P99  time.Duration // zero when the tool does not report them
	P75, P90  time.Duration // wrk --latency only
	Max       time.Duration
}

// ParseWrk reads wrk's output (run with --latency for percentiles).
func ParseWrk(out string) (Load, error) {
	var l Load
	sc := bufio.NewScanner(strings.NewReader(out))
	inDist := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 0:
		case f[0] == "Latency" && len(f) >= 4 && !inDist:
			l.Mean, _ = parseDur(f[1])
			l.Max, _ = parseDur(f[3])
		case f[0] == "Latency" && len(f) >= 2 && f[1] == "Distribution":
			inDist = true
		case inDist && strings.HasSuffix(f[0], "%") && len(f) >= 2:
			d, _ := parseDur(f[1])
			switch f[0] {
			case "50%", "50.000%":
				l.P50 = d
			case "75%", "75.000%":
				l.P75 = d
			case "90%", "90.000%":
				l.P90 = d
			case "99%", "99.000%":
				l.P99 = d
			}
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			inDist = false
			l.Requests, _ = strconv.ParseFloat(f[0], 64)
			s, _ := parseDur(strings.TrimSuffix(f[3], ","))
			l.Seconds = s.Seconds()
		case f[0] == "Non-2xx" && len(f) >= 5:
			n, _ := strconv.ParseFloat(f[4], 64)
			l.Errors += n
		case f[0] == "Socket" && len(f) >= 2:
			for _, m := range regexp.MustCompile(`(\d+)`).FindAllString(strings.Join(f[2:], " "), -1) {
				n, _ := strconv.ParseFloat(m, 64)
				l.Errors += n
			}
		case f[0] == "Requests/sec:" && len(f) >= 2:
			l.PerSecond, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	if l.PerSecond == 0 {
		return l, fmt.Errorf("wrk: no Requests/sec in output:\n%s", tail(out, 1000))
	}
	return l, nil
}

// ParseDNSPerf reads dnsperf's final statistics.
func ParseDNSPerf(out string) (Load, error) {
	var l Load
	num := func(s string) float64 {
		v, _ := strconv.ParseFloat(strings.Fields(s)[0], 64)
		return v
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Queries completed":
			l.Requests = num(v)
		case "Queries lost":
			l.Errors = num(v)
		case "Run time (s)":
			l.Seconds = num(v)
		case "Queries per second":
			l.PerSecond = num(v)
		case "Average Latency (s)":
			l.Mean = time.Duration(num(v) * float64(time.Second))
			if m := regexp.MustCompile(`max ([0-9.]+)`).FindStringSubmatch(v); m != nil {
				x, _ := strconv.ParseFloat(m[1], 64)
				l.Max = time.Duration(x * float64(time.Second))
			}
		}
	}
	if l.PerSecond == 0 {
		return l, fmt.Errorf("dnsperf: no 'Queries per second' in output:\n%s", tail(out, 1000))
	}
	return l, nil
}

// ParseH2Load reads h2load's summary.
func ParseH2Load(out string) (Load, error) {
	var l Load
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "finished in"):
			// finished in 1.23s, 81234.56 req/s, 1.23MB/s
			d, _ := parseDur(strings.TrimSuffix(f[2], ","))
			l.Seconds = d.Seconds()
			l.PerSecond, _ = strconv.ParseFloat(f[3], 64)
		case strings.HasPrefix(line, "requests:"):
			// requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
			for i := 1; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseFloat(f[i], 64)
				switch strings.TrimSuffix(f[i+1], ",") {
				case "succeeded":
					l.Requests = n
				case "failed", "timeout":
					l.Errors += n
				}
			}
		case strings.HasPrefix(line, "time for request:") && len(f) >= 7:
			l.Max, _ = parseDur(f[4])
			l.Mean, _ = parseDur(f[5])
		}
	}
	if l.PerSecond == 0 {
		return l, fmt.Errorf("h2load: no 'finished in' line in output:\n%s", tail(out, 1000))
	}
	return l, nil
}

// parseDur understands the units wrk and h2load print: us, ms, s, m.
func parseDur(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, "m") && !strings.HasSuffix(s, "ms") {
		// wrk's "1.2m" is minutes.
		v, err := strconv.ParseFloat(strings.TrimSuffix(s, "m"), 64)
		return time.Duration(v * float64(time.Minute)), err
	}
	return time.ParseDuration(s)
}
