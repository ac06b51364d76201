package benchkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// RunFunc runs one measurement of one subject and returns its metrics.
type RunFunc func(ctx context.Context, subject *Subject, round int) (map[string]float64, error)

// Alternate runs every subject of c once per round, in turn (ours, peer,
// peer, ours, peer, peer, ...), so slow drifts of a shared machine hit every
// subject alike. It prints progress to w. A subject whose run returns
// ErrSkipped is marked skipped and not run again; other errors are recorded
// and the harness goes on.
func Alternate(ctx context.Context, w io.Writer, suite string, c *Case, rounds int, run RunFunc) error {
	var errs []error
	total := rounds * len(c.Subjects)
	step := 0
	for round := 1; round <= rounds; round++ {
		for _, s := range c.Subjects {
			step++
			if s.Skipped != "" {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			start := time.Now()
			fmt.Fprintf(w, "[%s] %s: %s round %d/%d (%d/%d)... ", suite, c.Name, s.Name, round, rounds, step, total)
			m, err := run(ctx, s, round)
			switch {
			case errors.Is(err, ErrSkipped):
				s.Skipped = err.Error()
				fmt.Fprintf(w, "skipped: %v\n", err)
			case err != nil:
				errs = append(errs, fmt.Errorf("%s/%s/%s round %d: %w", suite, c.Name, s.Name, round, err))
				fmt.Fprintf(w, "failed: %v\n", err)
			default:
				s.Samples = append(s.Samples, m)
				fmt.Fprintf(w, "%s (%.1fs)\n", brief(m, c.Metrics), time.Since(start).Seconds())
			}
		}
	}
	c.Summarize()
	return errors.Join(errs...)
}

func brief(m map[string]float64, metrics []Metric) string {
	out := ""
	for i, k := range metrics {
		if i == 3 {
			break
		}
		if v, ok := m[k.Key]; ok {
			out += fmt.Sprintf("%s=%.4g ", k.Key, v)
		}
	}
	return out
}
