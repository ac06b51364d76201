package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/edgestack/edgestack/bench/benchkit"
)

// The cold-miss case: every request is for a new path under slowPrefix,
// which the origin answers with a cacheable slowSize body sent in
// slowChunk parts at slowRate bytes per second.
const (
	slowPrefix   = "/slow/"
	slowSize     = 2 << 20
	slowRate     = 16 << 20
	slowChunk    = 64 << 10
	missRequests = 40 // CPU per miss in steps of 250 µs (a 10 ms clock tick over 40)
)

var (
	metricFirstByte = benchkit.Metric{Key: "first_byte_ms", Name: "first byte ms (median)"}
	metricLastByte  = benchkit.Metric{Key: "last_byte_ms", Name: "last byte ms (median)"}
)

// serveSlow sends a slowSize body at slowRate, paced from the request's
// start so that the whole takes slowSize/slowRate however the writes go.
func serveSlow(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "max-age=3600")
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(slowSize))
	chunk := make([]byte, slowChunk)
	for i := range chunk {
		chunk[i] = 's'
	}
	start := time.Now()
	fl, _ := w.(http.Flusher)
	for sent := 0; sent < slowSize; sent += slowChunk {
		if wait := time.Duration(sent) * time.Second / slowRate; wait > time.Since(start) {
			select {
			case <-time.After(wait - time.Since(start)):
			case <-r.Context().Done():
				return
			}
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
}

// coldMisses makes missRequests requests to s, one after another, each for
// a new path (next numbers them across subjects and rounds), and returns
// the medians of the time to the body's first byte and to its last, and
// the server's CPU per request.
func coldMisses(ctx context.Context, s *server, next *int) (map[string]float64, error) {
	pid := s.proc.Cmd.Process.Pid
	before, err := benchkit.TreeUsage(pid)
	if err != nil {
		return nil, err
	}
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer cl.CloseIdleConnections()
	var first, last []float64
	errs := 0
	buf := make([]byte, 64<<10)
	for range missRequests {
		*next++
		url := fmt.Sprintf("http://127.0.0.1:%s%s%d", s.port, slowPrefix, *next)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		start := time.Now()
		resp, err := cl.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs++
			continue
		}
		n, err := io.ReadAtLeast(resp.Body, buf, 1)
		t1 := time.Since(start)
		if err == nil {
			var m int64
			m, err = io.CopyBuffer(io.Discard, resp.Body, buf)
			n += int(m)
		}
		t2 := time.Since(start)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n != slowSize {
			errs++
			continue
		}
		first = append(first, float64(t1)/float64(time.Millisecond))
		last = append(last, float64(t2)/float64(time.Millisecond))
	}
	after, err := benchkit.TreeUsage(pid)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{benchkit.MetricErrors.Key: float64(errs)}
	if len(first) > 0 {
		m[metricFirstByte.Key] = benchkit.Summarize(first).Median
		m[metricLastByte.Key] = benchkit.Summarize(last).Median
		m[benchkit.MetricCPU.Key] = float64((after.CPU - before.CPU).Microseconds()) / float64(len(first))
	}
	return m, nil
}
