package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Daemons is the group of commands every daemon answers: status and reload.
// Its -daemon flag takes any admin base URL(s).
func Daemons() Group {
	return Group{
		Name: "daemon", Summary: "status and reload of any daemon", Daemon: "admin", Default: DefaultDNSD,
		Commands: []Command{
			{Name: "status", Args: "", Summary: "readiness of each -admin URL", Run: daemonStatus},
			{Name: "reload", Args: "", Summary: "reload the config of each -admin URL (token)", Run: daemonReload},
		},
	}
}

func daemonStatus(c *Context, fs *flag.FlagSet, args []string) error {
	if _, err := c.Parse(fs, args); err != nil {
		return err
	}
	var errs []error
	for _, t := range c.Targets {
		req, err := http.NewRequestWithContext(c.Ctx, http.MethodGet, strings.TrimRight(t, "/")+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := c.HTTP.Do(req)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t, err))
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		fmt.Fprintf(c.Out, "%s\t%s\t%s\n", t, resp.Status, strings.ReplaceAll(strings.TrimSpace(string(body)), "\n", "; "))
		if resp.StatusCode != http.StatusOK {
			errs = append(errs, fmt.Errorf("%s: not ready", t))
		}
	}
	return errors.Join(errs...)
}

func daemonReload(c *Context, fs *flag.FlagSet, args []string) error {
	if _, err := c.Parse(fs, args); err != nil {
		return err
	}
	var errs []error
	for _, t := range c.Targets {
		if err := c.ClientFor(t).Do(c.Ctx, http.MethodPost, "/v1/reload", nil, nil); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t, err))
			continue
		}
		fmt.Fprintf(c.Out, "%s\treloaded\n", t)
	}
	return errors.Join(errs...)
}
