package ctl

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"
)

// DNS is the group of commands for dnsd's change API.
func DNS() Group {
	return Group{
		Name: "dns", Summary: "hosted zones, record sets and health checks", Daemon: "dnsd", Default: DefaultDNSD,
		Commands: []Command{
			{Name: "zones", Args: "[list | create ZONE [-ns NS,..] [-email E] | delete ZONE]", Summary: "list, create or delete hosted zones", Run: dnsZones},
			{Name: "records", Args: "ZONE", Summary: "list the record sets of a zone", Run: dnsRecords},
			{Name: "change", Args: "ZONE -file BATCH.json|yaml", Summary: "apply a change batch (all or nothing)", Run: dnsChange},
			{Name: "export", Args: "ZONE", Summary: "print a zone as a master file", Run: dnsExport},
			{Name: "healthchecks", Args: "[list | create ID -file CHECK.json|yaml | delete ID]", Summary: "list, create or delete health checks", Run: dnsHealthchecks},
		},
	}
}

func zonePath(z string) string { return "/v1/zones/" + url.PathEscape(strings.TrimSpace(z)) }

func dnsZones(c *Context, fs *flag.FlagSet, args []string) error {
	ns := fs.String("ns", "", "create: name servers, comma separated (default ns1.ZONE)")
	email := fs.String("email", "", "create: SOA mailbox as a name (default hostmaster.ZONE)")
	view := fs.String("view", "", "create: private view the zone belongs to")
	pos, err := c.Parse(fs, args)
	if err != nil {
		return err
	}
	sub := "list"
	if len(pos) > 0 {
		sub = pos[0]
	}
	switch sub {
	case "list":
		var zones []struct {
			Name   string `json:"name"`
			View   string `json:"view"`
			Serial uint32 `json:"serial"`
			RRSets int    `json:"rrsets"`
			Source string `json:"source"`
		}
		if err := c.Client().Do(c.Ctx, http.MethodGet, "/v1/zones", nil, &zones); err != nil {
			return err
		}
		if c.JSON {
			return c.Print(zones)
		}
		tw := tabwriter.NewWriter(c.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ZONE\tVIEW\tSERIAL\tRRSETS\tSOURCE")
		for _, z := range zones {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", z.Name, z.View, z.Serial, z.RRSets, z.Source)
		}
		return tw.Flush()
	case "create":
		if len(pos) != 2 {
			return Usagef("zones create needs a ZONE")
		}
		body := map[string]any{"name": pos[1], "soa_email": *email, "view": *view}
		if *ns != "" {
			body["nameservers"] = strings.Split(*ns, ",")
		}
		var out json.RawMessage
		if err := c.Client().Do(c.Ctx, http.MethodPost, "/v1/zones", body, &out); err != nil {
			return err
		}
		if c.JSON {
			return c.Print(out)
		}
		fmt.Fprintf(c.Out, "created %s\n", pos[1])
		return nil
	case "delete":
		if len(pos) != 2 {
			return Usagef("zones delete needs a ZONE")
		}
		if err := c.Client().Do(c.Ctx, http.MethodDelete, zonePath(pos[1]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(c.Out, "deleted %s\n", pos[1])
		return nil
	}
	return Usagef("unknown zones command %q (want list, create or delete)", sub)
}

func dnsRecords(c *Context, fs *flag.FlagSet, args []string) error {
	pos, err := c.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return Usagef("records needs a ZONE")
	}
	var sets []struct {
		Name          string   `json:"name"`
		Type          string   `json:"type"`
		TTL           uint32   `json:"ttl"`
		Records       []string `json:"records"`
		SetIdentifier string   `json:"set_identifier"`
		HealthCheckID string   `json:"health_check_id"`
		Alias         struct {
			Name string `json:"name"`
		} `json:"alias"`
	}
	var raw json.RawMessage
	if err := c.Client().Do(c.Ctx, http.MethodGet, zonePath(pos[0])+"/rrsets", nil, &raw); err != nil {
		return err
	}
	if c.JSON {
		return c.Print(raw)
	}
	if err := json.Unmarshal(raw, &sets); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tTTL\tSET\tHEALTH\tVALUES")
	for _, s := range sets {
		vals := strings.Join(s.Records, " | ")
		if s.Alias.Name != "" {
			vals = "ALIAS " + s.Alias.Name
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", s.Name, s.Type, s.TTL, s.SetIdentifier, s.HealthCheckID, vals)
	}
	return tw.Flush()
}

// readDoc reads a JSON or YAML file (or "-" for stdin) into JSON bytes.
func readDoc(path string) ([]byte, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = readAllStdin()
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		if !json.Valid(t) {
			return nil, fmt.Errorf("%s: invalid JSON", path)
		}
		return t, nil
	}
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return json.Marshal(v)
}

func readAllStdin() ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(os.Stdin)
	return b.Bytes(), err
}

func dnsChange(c *Context, fs *flag.FlagSet, args []string) error {
	file := fs.String("file", "", "change batch `file`, JSON or YAML (- for stdin)")
	pos, err := c.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *file == "" {
		return Usagef("change needs a ZONE and -file")
	}
	body, err := readDoc(*file)
	if err != nil {
		return err
	}
	var out struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Serial uint32 `json:"serial"`
	}
	if err := c.Client().Do(c.Ctx, http.MethodPost, zonePath(pos[0])+"/changes", json.RawMessage(body), &out); err != nil {
		return err
	}
	if c.JSON {
		return c.Print(out)
	}
	fmt.Fprintf(c.Out, "%s\t%s\tserial %d\n", out.ID, out.Status, out.Serial)
	return nil
}

func dnsExport(c *Context, fs *flag.FlagSet, args []string) error {
	pos, err := c.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return Usagef("export needs a ZONE")
	}
	var out []byte
	if err := c.Client().Do(c.Ctx, http.MethodGet, zonePath(pos[0])+"/export", nil, &out); err != nil {
		return err
	}
	_, err = c.Out.Write(out)
	return err
}

func dnsHealthchecks(c *Context, fs *flag.FlagSet, args []string) error {
	file := fs.String("file", "", "create: check config `file`, JSON or YAML (the health_checks syntax of dnsd's config)")
	pos, err := c.Parse(fs, args)
	if err != nil {
		return err
	}
	sub := "list"
	if len(pos) > 0 {
		sub = pos[0]
	}
	switch sub {
	case "list":
		var checks []struct {
			ID        string          `json:"id"`
			State     string          `json:"state"`
			Source    string          `json:"source"`
			LastError string          `json:"last_error"`
			Config    json.RawMessage `json:"config"`
		}
		if err := c.Client().Do(c.Ctx, http.MethodGet, "/v1/healthchecks", nil, &checks); err != nil {
			return err
		}
		if c.JSON {
			return c.Print(checks)
		}
		tw := tabwriter.NewWriter(c.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tSOURCE\tLAST ERROR")
		for _, h := range checks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.ID, h.State, h.Source, h.LastError)
		}
		return tw.Flush()
	case "create":
		if len(pos) != 2 || *file == "" {
			return Usagef("healthchecks create needs an ID and -file")
		}
		cfg, err := readDoc(*file)
		if err != nil {
			return err
		}
		body := map[string]any{"id": pos[1], "config": json.RawMessage(cfg)}
		if err := c.Client().Do(c.Ctx, http.MethodPost, "/v1/healthchecks", body, nil); err != nil {
			return err
		}
		fmt.Fprintf(c.Out, "created %s\n", pos[1])
		return nil
	case "delete":
		if len(pos) != 2 {
			return Usagef("healthchecks delete needs an ID")
		}
		if err := c.Client().Do(c.Ctx, http.MethodDelete, "/v1/healthchecks/"+url.PathEscape(pos[1]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(c.Out, "deleted %s\n", pos[1])
		return nil
	}
	return Usagef("unknown healthchecks command %q (want list, create or delete)", sub)
}
