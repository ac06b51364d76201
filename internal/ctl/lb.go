package ctl

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
)

// LB is the group of lbd commands: target groups, targets, registration.
func LB() Group {
	return Group{
		Name: "lb", Summary: "target groups and targets of lbd", Daemon: "lbd", Default: DefaultLBD,
		Commands: []Command{
			{Name: "groups", Args: "", Summary: "list target groups with target counts by state", Run: lbGroups},
			{Name: "targets", Args: "GROUP", Summary: "list a group's targets and their states", Run: lbTargets},
			{Name: "register", Args: "GROUP HOST:PORT [-weight N]", Summary: "register a target (token)", Run: lbRegister},
			{Name: "deregister", Args: "GROUP HOST:PORT [-wait]", Summary: "drain and remove a target (token)", Run: lbDeregister},
			{Name: "state", Args: "", Summary: "listeners and target groups (JSON)", Run: lbState},
		},
	}
}

type lbTarget struct {
	Address     string `json:"address"`
	Weight      int    `json:"weight"`
	Source      string `json:"source"`
	State       string `json:"state"`
	Outstanding int64  `json:"outstanding"`
	Ejected     bool   `json:"passively_ejected,omitempty"`
}

type lbGroup struct {
	Name      string     `json:"name"`
	Protocol  string     `json:"protocol"`
	Algorithm string     `json:"algorithm"`
	Healthy   int        `json:"healthy"`
	Targets   []lbTarget `json:"targets"`
}

func lbGroups(c *Context, fs *flag.FlagSet, args []string) error {
	if _, err := c.Parse(fs, args); err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.Client().Do(c.Ctx, http.MethodGet, "/v1/target-groups", nil, &raw); err != nil {
		return err
	}
	if c.JSON {
		return c.Print(raw)
	}
	var gs []lbGroup
	if err := json.Unmarshal(raw, &gs); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPROTOCOL\tALGORITHM\tTARGETS\tHEALTHY\tSTATES")
	for _, g := range gs {
		counts := map[string]int{}
		for _, t := range g.Targets {
			counts[t.State]++
		}
		var states []string
		for _, s := range []string{"initial", "healthy", "unhealthy", "draining", "unused"} {
			if counts[s] > 0 {
				states = append(states, fmt.Sprintf("%s=%d", s, counts[s]))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", g.Name, g.Protocol, g.Algorithm, len(g.Targets), g.Healthy, strings.Join(states, " "))
	}
	return tw.Flush()
}

func lbTargets(c *Context, fs *flag.FlagSet, args []string) error {
	pos, err := c.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return Usagef("want GROUP")
	}
	var raw json.RawMessage
	if err := c.Client().Do(c.Ctx, http.MethodGet, "/v1/target-groups/"+url.PathEscape(pos[0])+"/targets", nil, &raw); err != nil {
		return err
	}
	if c.JSON {
		return c.Print(raw)
	}
	var ts []lbTarget
	if err := json.Unmarshal(raw, &ts); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tSTATE\tWEIGHT\tIN-FLIGHT\tSOURCE")
	for _, t := range ts {
		st := t.State
		if t.Ejected {
			st += " (ejected)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", t.Address, st, t.Weight, t.Outstanding, t.Source)
	}
	return tw.Flush()
}

func lbRegister(c *Context, fs *flag.FlagSet, args []string) error {
	weight := fs.Int("weight", 0, "relative `weight` (default 1)")
	pos, err := c.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return Usagef("want GROUP HOST:PORT")
	}
	var out lbTarget
	body := map[string]any{"address": pos[1]}
	if *weight != 0 {
		body["weight"] = *weight
	}
	if err := c.Client().Do(c.Ctx, http.MethodPost, "/v1/target-groups/"+url.PathEscape(pos[0])+"/targets", body, &out); err != nil {
		return err
	}
	if c.JSON {
		return c.Print(out)
	}
	fmt.Fprintf(c.Out, "%s\tregistered in %s (%s)\n", out.Address, pos[0], out.State)
	return nil
}

func lbDeregister(c *Context, fs *flag.FlagSet, args []string) error {
	wait := fs.Bool("wait", false, "wait until the target has drained")
	pos, err := c.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return Usagef("want GROUP HOST:PORT")
	}
	path := "/v1/target-groups/" + url.PathEscape(pos[0]) + "/targets/" + url.PathEscape(pos[1])
	if *wait {
		path += "?wait=true"
		c.HTTP.Timeout = 0 // draining may take the whole deregistration delay
	}
	var out map[string]string
	if err := c.Client().Do(c.Ctx, http.MethodDelete, path, nil, &out); err != nil {
		return err
	}
	if c.JSON {
		return c.Print(out)
	}
	fmt.Fprintf(c.Out, "%s\t%s\n", pos[1], out["state"])
	return nil
}

func lbState(c *Context, fs *flag.FlagSet, args []string) error {
	if _, err := c.Parse(fs, args); err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.Client().Do(c.Ctx, http.MethodGet, "/v1/state", nil, &raw); err != nil {
		return err
	}
	return c.Print(raw)
}
