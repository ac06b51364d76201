package ctl

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
)

// CDN is the edged command group: invalidations fanned out to every edge,
// cache statistics and the distributions each edge serves.
func CDN() Group {
	return Group{
		Name: "cdn", Summary: "CDN edge cache: invalidate, stats", Daemon: "edged", Default: DefaultEdged,
		Commands: []Command{
			{Name: "invalidate", Args: "[-distribution D] [-tags t1,t2] [PATH...]", Summary: "drop cached objects by path (* wildcards) or tag on every -edged URL (token)", Run: cdnInvalidate},
			{Name: "stats", Args: "", Summary: "cache size, objects and requests by cache status of each edge", Run: cdnStats},
			{Name: "distributions", Args: "", Summary: "distributions served by each edge", Run: cdnDistributions},
		},
	}
}

type cdnInvalidation struct {
	Distribution string   `json:"distribution,omitempty"`
	Paths        []string `json:"paths,omitempty"`
	Tags         []string `json:"tags,omitempty"`
}

// printTargets prints the answers of a fan-out and returns the failures:
// with -json, one object keyed by target (failed targets as
// {"error": ...} when withErrors, else left out); otherwise text(target,
// answer) for each answer and a FAILED line for each failure.
func printTargets[T any](c *Context, res []T, errs []error, withErrors bool, text func(target string, v T)) error {
	if c.JSON {
		return printByTarget(c, res, errs, withErrors)
	}
	for i, t := range c.Targets {
		if errs[i] != nil {
			fmt.Fprintf(c.Out, "%s\tFAILED\t%v\n", t, errs[i])
			continue
		}
		text(t, res[i])
	}
	return joinTargets(c.Targets, errs)
}

// printByTarget prints the answers of a fan-out as JSON keyed by target
// (failed targets as {"error": ...} when withErrors, else left out) and
// returns the failures.
func printByTarget[T any](c *Context, res []T, errs []error, withErrors bool) error {
	out := map[string]any{}
	for i, t := range c.Targets {
		switch {
		case errs[i] == nil:
			out[t] = res[i]
		case withErrors:
			out[t] = map[string]string{"error": errs[i].Error()}
		}
	}
	return errors.Join(c.Print(out), joinTargets(c.Targets, errs))
}

// fanOut runs f for each target concurrently and returns results in
// target order.
func fanOut[T any](c *Context, f func(cl *Client) (T, error)) ([]T, []error) {
	res := make([]T, len(c.Targets))
	errs := make([]error, len(c.Targets))
	var wg sync.WaitGroup
	for i, t := range c.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = f(c.ClientFor(t))
		}()
	}
	wg.Wait()
	return res, errs
}

func cdnInvalidate(c *Context, fs *flag.FlagSet, args []string) error {
	dist := fs.String("distribution", "", "limit to one `distribution` (default: all on the edge)")
	tags := fs.String("tags", "", "comma-separated Surrogate-Key/Cache-Tag `tags` to purge")
	paths, err := c.Parse(fs, args)
	if err != nil {
		return err
	}
	req := cdnInvalidation{Distribution: *dist, Paths: paths}
	for _, t := range strings.Split(*tags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			req.Tags = append(req.Tags, t)
		}
	}
	if len(req.Paths) == 0 && len(req.Tags) == 0 {
		return Usagef("give at least one PATH or -tags")
	}
	type answer struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	res, errs := fanOut(c, func(cl *Client) (answer, error) {
		var a answer
		err := cl.Do(c.Ctx, http.MethodPost, "/v1/invalidations", req, &a)
		return a, err
	})
	return printTargets(c, res, errs, true, func(t string, a answer) {
		fmt.Fprintf(c.Out, "%s\t%s\t%s\n", t, a.Status, a.ID)
	})
}

func joinTargets(targets []string, errs []error) error {
	var out []error
	for i, err := range errs {
		if err != nil {
			out = append(out, fmt.Errorf("%s: %w", targets[i], err))
		}
	}
	return errors.Join(out...)
}

type cdnStatsBody struct {
	Cache struct {
		Objects   int64  `json:"objects"`
		Bytes     int64  `json:"bytes"`
		MaxBytes  int64  `json:"max_bytes"`
		Evictions uint64 `json:"evictions"`
		Bans      int    `json:"active_invalidations"`
	} `json:"cache"`
	Requests      map[string]map[string]int64 `json:"requests"`
	Coalesced     int64                       `json:"coalesced_requests"`
	Invalidations int64                       `json:"invalidations"`
}

func cdnStats(c *Context, fs *flag.FlagSet, args []string) error {
	if _, err := c.Parse(fs, args); err != nil {
		return err
	}
	res, errs := fanOut(c, func(cl *Client) (cdnStatsBody, error) {
		var s cdnStatsBody
		err := cl.Do(c.Ctx, http.MethodGet, "/v1/stats", nil, &s)
		return s, err
	})
	return printTargets(c, res, errs, false, func(t string, s cdnStatsBody) {
		fmt.Fprintf(c.Out, "%s\tobjects %d\tbytes %d/%d\tevictions %d\tcoalesced %d\tinvalidations %d\n",
			t, s.Cache.Objects, s.Cache.Bytes, s.Cache.MaxBytes, s.Cache.Evictions, s.Coalesced, s.Invalidations)
		dists := make([]string, 0, len(s.Requests))
		for d := range s.Requests {
			dists = append(dists, d)
		}
		sort.Strings(dists)
		for _, d := range dists {
			var parts []string
			var total, hits int64
			for _, st := range []string{"Hit", "RefreshHit", "Stale", "Miss", "Pass", "Error", "Redirect", "Denied"} {
				if n := s.Requests[d][st]; n > 0 {
					parts = append(parts, fmt.Sprintf("%s %d", st, n))
					total += n
					if st == "Hit" || st == "RefreshHit" || st == "Stale" {
						hits += n
					}
				}
			}
			ratio := 0.0
			if total > 0 {
				ratio = 100 * float64(hits) / float64(total)
			}
			fmt.Fprintf(c.Out, "  %s\thit ratio %.1f%%\t%s\n", d, ratio, strings.Join(parts, ", "))
		}
	})
}

func cdnDistributions(c *Context, fs *flag.FlagSet, args []string) error {
	if _, err := c.Parse(fs, args); err != nil {
		return err
	}
	type dist struct {
		Name      string   `json:"name"`
		Domains   []string `json:"domains"`
		Origins   []string `json:"origins"`
		Behaviors []string `json:"behaviors"`
	}
	res, errs := fanOut(c, func(cl *Client) ([]dist, error) {
		var d []dist
		err := cl.Do(c.Ctx, http.MethodGet, "/v1/distributions", nil, &d)
		return d, err
	})
	return printTargets(c, res, errs, false, func(t string, ds []dist) {
		for _, d := range ds {
			fmt.Fprintf(c.Out, "%s\t%s\t%s\torigins: %s\tbehaviors: %s\n", t, d.Name, strings.Join(d.Domains, ","),
				strings.Join(d.Origins, ","), strings.Join(d.Behaviors, "; "))
		}
	})
}
