package ctl

import (
	"bytes"
	"context"
	"flag"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeGroup talks to a real HTTP server standing in for a daemon's admin
// API: the transport, auth header, error decoding and exit codes are what is
// under test.
func testGroup(base string) Group {
	return Group{Name: "t", Summary: "test", Daemon: "testd", Default: base, Commands: []Command{
		{Name: "get", Args: "NAME", Summary: "get a thing", Run: func(c *Context, fs *flag.FlagSet, args []string) error {
			upper := fs.Bool("upper", false, "upper-case")
			pos, err := c.Parse(fs, args)
			if err != nil {
				return err
			}
			if len(pos) != 1 {
				return Usagef("want one NAME")
			}
			var out map[string]string
			if err := c.Client().Do(c.Ctx, http.MethodGet, "/v1/things/"+pos[0], nil, &out); err != nil {
				return err
			}
			v := out["value"]
			if *upper {
				v = strings.ToUpper(v)
			}
			_, err = c.Out.Write([]byte(v + "\n"))
			return err
		}},
	}}
}

func TestMain_(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":"missing or wrong bearer token"}`))
			return
		}
		if r.URL.Path == "/v1/things/a" {
			_, _ = w.Write([]byte(`{"value":"apple"}`))
			return
		}
		w.WriteHeader(404)
		_, _ = w.Write([]byte(`{"error":"no thing named b"}`))
	}))
	defer srv.Close()
	type tc struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantOut  string
		wantErr  string
	}
	cases := []tc{
		{"ok", []string{"t", "get", "a"}, map[string]string{"EDGECTL_TOKEN": "tok"}, 0, "apple\n", ""},
		{"flag after group", []string{"t", "get", "-upper", "a"}, map[string]string{"EDGECTL_TOKEN": "tok"}, 0, "APPLE\n", ""},
		{"api error is shown", []string{"t", "get", "b"}, map[string]string{"EDGECTL_TOKEN": "tok"}, 1, "", "404 Not Found: no thing named b"},
		{"unauthorized", []string{"t", "get", "a"}, nil, 1, "", "401 Unauthorized: missing or wrong bearer token"},
		{"usage error", []string{"t", "get"}, nil, 2, "", "want one NAME"},
		{"unknown command", []string{"t", "nope"}, nil, 2, "", "unknown command"},
		{"unknown group", []string{"zz", "get"}, nil, 2, "", "unknown or incomplete"},
		{"bad flag", []string{"t", "get", "-bogus", "a"}, nil, 2, "", "flag provided but not defined"},
		{"version", []string{"version"}, nil, 0, "edgectl dev\n", ""},
		{"unreachable", []string{"t", "get", "-testd", "http://127.0.0.1:1", "a"}, nil, 1, "", "connection refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			env := map[string]string{"EDGECTL_TESTD": srv.URL}
			for k, v := range c.env {
				env[k] = v
			}
			code := Main(context.Background(), []Group{testGroup(srv.URL)}, c.args, env, &out, &errb)
			if code != c.wantCode {
				t.Errorf("exit %d, want %d; stderr %q", code, c.wantCode, errb.String())
			}
			if c.wantOut != "" && out.String() != c.wantOut {
				t.Errorf("stdout %q, want %q", out.String(), c.wantOut)
			}
			if c.wantErr != "" && !strings.Contains(errb.String(), c.wantErr) {
				t.Errorf("stderr %q lacks %q", errb.String(), c.wantErr)
			}
		})
	}
}
