// Package ctl is edgectl, the command line for the admin APIs of dnsd,
// certd, edged and lbd. Each component contributes a Group of commands;
// cmd/edgectl lists them.
package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

// Default admin addresses of the daemons, matching their config defaults.
const (
	DefaultDNSD  = "http://127.0.0.1:9101"
	DefaultCertd = "http://127.0.0.1:9102"
	DefaultEdged = "http://127.0.0.1:9103"
	DefaultLBD   = "http://127.0.0.1:9104"
)

// Group is one daemon's commands: "edgectl <group> <command> [args]".
type Group struct {
	Name    string // "dns", "certs", "cdn", "lb"
	Summary string
	// Daemon names the daemon whose admin API the group talks to; its
	// address comes from -<daemon> or EDGECTL_<DAEMON> (e.g. EDGECTL_DNSD).
	Daemon   string
	Default  string // default admin base URL
	Commands []Command
}

// Command is one action.
type Command struct {
	Name    string
	Args    string // synopsis of arguments, e.g. "ZONE [-type A]"
	Summary string
	// Run gets its own FlagSet (already holding the shared flags): it adds
	// its flags, then calls c.Parse(fs, args) to get the positional args.
	Run func(c *Context, fs *flag.FlagSet, args []string) error
}

// Context is what a command works with.
type Context struct {
	Ctx context.Context
	Out io.Writer
	// Targets are the admin base URLs of the group's daemon (several for
	// commands that fan out, e.g. cdn invalidate across edges).
	Targets []string
	Token   string
	JSON    bool
	HTTP    *http.Client

	parse func([]string) ([]string, error)
}

// Parse parses args with the command's FlagSet and the shared flags and
// returns the positional arguments. Flags may also follow the positional
// arguments ("records example.test -json").
func (c *Context) Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	return c.parse(flagsFirst(fs, args))
}

// flagsFirst moves flags given after positional arguments ("register web
// 10.0.0.1:80 -weight 2") in front of them, as the flag package wants.
func flagsFirst(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return append(flags, pos...)
}

// Usagef returns an error that makes edgectl print the command's usage and
// exit 2.
func Usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

type usageError struct{ error }

// Client is the first target's client.
func (c *Context) Client() *Client { return c.ClientFor(c.Targets[0]) }

// ClientFor returns a client of the admin API at base.
func (c *Context) ClientFor(base string) *Client {
	return &Client{Base: strings.TrimRight(base, "/"), Token: c.Token, HTTP: c.HTTP}
}

// Print writes v as indented JSON (for -json, or for records with no
// table form).
func (c *Context) Print(v any) error {
	enc := json.NewEncoder(c.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Client calls one daemon's admin API.
type Client struct {
	Base  string
	Token string
	HTTP  *http.Client
}

// APIError is an error answer of an admin API.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Do sends a request with an optional JSON body (in: nil, []byte raw, or a
// value to encode) and decodes a JSON answer into out (nil to discard, or
// *[]byte for raw bytes).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	contentType := "application/json"
	switch v := in.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(v)
		contentType = "application/octet-stream"
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, c.Base+path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, c.Base+path, err)
	}
	if resp.StatusCode >= 300 {
		var eb struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		return &APIError{Status: resp.StatusCode, Message: msg}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = data
		return nil
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, c.Base+path, err)
		}
		return nil
	}
}

// Main runs edgectl with args and returns the exit code: 0 ok, 1 a failed
// call, 2 bad usage.
func Main(ctx context.Context, groups []Group, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	sort.Slice(groups, func(i, j int) bool { return groups[i].Name < groups[j].Name })
	usage := func() {
		fmt.Fprintf(stderr, "Usage: edgectl <group> <command> [flags] [args]\n\nGroups:\n")
		for _, g := range groups {
			fmt.Fprintf(stderr, "  %-6s %s (admin API of %s: -%s URL or EDGECTL_%s, default %s)\n", g.Name, g.Summary, g.Daemon, g.Daemon, strings.ToUpper(g.Daemon), g.Default)
			for _, c := range g.Commands {
				fmt.Fprintf(stderr, "           %-10s %-28s %s\n", c.Name, c.Args, c.Summary)
			}
		}
		fmt.Fprintf(stderr, "\nShared flags: -token-file FILE (or EDGECTL_TOKEN), -json, -timeout 10s\n  edgectl version\n")
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "help" || args[0] == "--help" {
		usage()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "version" {
		fmt.Fprintf(stdout, "edgectl %s\n", Version)
		return 0
	}
	var g *Group
	for i := range groups {
		if groups[i].Name == args[0] {
			g = &groups[i]
		}
	}
	if g == nil || len(args) < 2 {
		fmt.Fprintf(stderr, "edgectl: unknown or incomplete command %q\n", strings.Join(args, " "))
		usage()
		return 2
	}
	var cmd *Command
	for i := range g.Commands {
		if g.Commands[i].Name == args[1] {
			cmd = &g.Commands[i]
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "edgectl %s: unknown command %q\n", g.Name, args[1])
		usage()
		return 2
	}
	fs := flag.NewFlagSet("edgectl "+g.Name+" "+cmd.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	envTarget := environ["EDGECTL_"+strings.ToUpper(g.Daemon)]
	if envTarget == "" {
		envTarget = g.Default
	}
	target := fs.String(g.Daemon, envTarget, "admin base `URL`(s) of "+g.Daemon+", comma separated")
	tokenFile := fs.String("token-file", "", "`file` holding the admin bearer token (default $EDGECTL_TOKEN)")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of each API call")
	c := &Context{Out: stdout, Token: environ["EDGECTL_TOKEN"]}
	// Flags are parsed by the command (it may add its own) through Run;
	// shared values are read after.
	parse := func(rest []string) ([]string, error) {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return nil, err
			}
			c.Token = strings.TrimSpace(string(b))
		}
		for _, t := range strings.Split(*target, ",") {
			if t = strings.TrimSpace(t); t != "" {
				c.Targets = append(c.Targets, t)
			}
		}
		if len(c.Targets) == 0 {
			return nil, fmt.Errorf("no %s address", g.Daemon)
		}
		c.JSON = *asJSON
		c.HTTP = &http.Client{Timeout: *timeout}
		return fs.Args(), nil
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.Ctx = cctx
	c.parse = func(rest []string) ([]string, error) {
		pos, err := parse(rest)
		if err != nil {
			return nil, usageError{err}
		}
		return pos, nil
	}
	err := cmd.Run(c, fs, args[2:])
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
			if !errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(stderr, "edgectl %s %s: %v\nusage: edgectl %s %s %s\n", g.Name, cmd.Name, err, g.Name, cmd.Name, cmd.Args)
			}
			return 2
		}
		fmt.Fprintf(stderr, "edgectl %s %s: %v\n", g.Name, cmd.Name, err)
		return 1
	}
	return 0
}

// Version is set by cmd/edgectl.
var Version = "dev"
