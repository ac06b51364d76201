package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Listen  string   `yaml:"listen"`
	Token   string   `yaml:"token" secret:"true"`
	Timeout Duration `yaml:"timeout"`
}

type Shared struct {
	Level string `yaml:"level"`
}

type testConfig struct {
	Shared `yaml:",inline"`
	Admin  inner             `yaml:"admin"`
	Zones  []zone            `yaml:"zones"`
	Labels map[string]string `yaml:"labels"`
	Count  int               `yaml:"count"`
}

type zone struct {
	Name string `yaml:"name"`
	File string `yaml:"file"`
}

func defaults() *testConfig {
	return &testConfig{Shared: Shared{Level: "info"}, Admin: inner{Listen: "127.0.0.1:1", Timeout: Duration(time.Second)}}
}

func TestDecode(t *testing.T) {
	type tc struct {
		name    string
		yaml    string
		wantErr []string // substrings; none means success
		check   func(t *testing.T, c *testConfig)
	}
	cases := []tc{
		{name: "empty file keeps defaults", yaml: "", check: func(t *testing.T, c *testConfig) {
			if c.Level != "info" || c.Admin.Timeout.D() != time.Second {
				t.Errorf("defaults lost: %+v", c)
			}
		}},
		{name: "fields and inline", yaml: "level: debug\nadmin:\n  listen: :9\n  timeout: 250ms\nzones:\n  - {name: a., file: a.zone}\n", check: func(t *testing.T, c *testConfig) {
			if c.Level != "debug" || c.Admin.Listen != ":9" || c.Admin.Timeout.D() != 250*time.Millisecond || len(c.Zones) != 1 || c.Zones[0].File != "a.zone" {
				t.Errorf("decoded %+v", c)
			}
		}},
		{name: "unknown key names file and line", yaml: "level: debug\nadmin:\n  lisen: :9\n", wantErr: []string{"cfg.yaml:3:", "lisen"}},
		{name: "two unknown keys both reported", yaml: "nope: 1\nadmin:\n  lisen: :9\n", wantErr: []string{"cfg.yaml:1:", "nope", "cfg.yaml:3:", "lisen"}},
		{name: "duplicate key", yaml: "level: debug\nlevel: info\n", wantErr: []string{"cfg.yaml:2:", "already defined"}},
		{name: "bad duration", yaml: "admin:\n  timeout: 5\n", wantErr: []string{"cfg.yaml:2:", "invalid duration"}},
		{name: "wrong type", yaml: "count: many\n", wantErr: []string{"cfg.yaml:1:", "many"}},
		{name: "syntax error", yaml: "admin: [\n", wantErr: []string{"cfg.yaml:"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaults()
			_, err := Decode("cfg.yaml", []byte(c.yaml), cfg)
			if len(c.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				c.check(t, cfg)
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", c.wantErr)
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestProblemsNameLines(t *testing.T) {
	src, err := Decode("cfg.yaml", []byte("level: debug\nadmin:\n  listen: bad\nzones:\n  - name: a.\n    file: a.zone\n  - name: b.\n    file: missing.zone\n"), defaults())
	if err != nil {
		t.Fatal(err)
	}
	verr := errors.Join(
		Nest("admin", Errorf("listen", "invalid address")),
		Nest("zones[1]", Errorf("file", "no such file")),
		Errorf("labels", "not set in file"),
		errors.New("plain problem"),
	)
	got := Problems(verr, src)
	want := []string{
		"cfg.yaml:3: admin.listen: invalid address",
		"cfg.yaml:8: zones[1].file: no such file",
		"cfg.yaml: labels: not set in file",
		"plain problem",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestApplyEnv(t *testing.T) {
	type tc struct {
		name    string
		env     []string
		wantErr string
		check   func(t *testing.T, c *testConfig)
	}
	cases := []tc{
		{name: "nested and inline", env: []string{"EDGESTACK_LEVEL=warn", "EDGESTACK_ADMIN__LISTEN=0.0.0.0:1", "EDGESTACK_ADMIN__TIMEOUT=3s", "PATH=/bin"}, check: func(t *testing.T, c *testConfig) {
			if c.Level != "warn" || c.Admin.Listen != "0.0.0.0:1" || c.Admin.Timeout.D() != 3*time.Second {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "list and map in flow style", env: []string{"EDGESTACK_ZONES=[{name: x., file: x.zone}]", "EDGESTACK_LABELS={a: b}"}, check: func(t *testing.T, c *testConfig) {
			if len(c.Zones) != 1 || c.Zones[0].Name != "x." || c.Labels["a"] != "b" {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "config path is reserved", env: []string{"EDGESTACK_CONFIG=/x.yaml"}, check: func(*testing.T, *testConfig) {}},
		{name: "unknown variable is an error", env: []string{"EDGESTACK_ADMIN_LISTEN=x"}, wantErr: "EDGESTACK_ADMIN_LISTEN names no config field"},
		{name: "bad value", env: []string{"EDGESTACK_COUNT=lots"}, wantErr: "EDGESTACK_COUNT"},
		{name: "bad duration", env: []string{"EDGESTACK_ADMIN__TIMEOUT=forever"}, wantErr: "EDGESTACK_ADMIN__TIMEOUT"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaults()
			_, err := ApplyEnv(cfg, c.env)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, cfg)
		})
	}
}

func TestMarshalRedacted(t *testing.T) {
	cfg := defaults()
	cfg.Admin.Token = "hunter2"
	out, err := MarshalRedacted(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2") || !strings.Contains(string(out), "token: REDACTED") {
		t.Errorf("not redacted:\n%s", out)
	}
	if cfg.Admin.Token != "hunter2" {
		t.Errorf("MarshalRedacted modified its input")
	}
	if !strings.Contains(string(out), "timeout: 1s") || !strings.Contains(string(out), "level: info") {
		t.Errorf("missing fields:\n%s", out)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("level: debug\nadmin:\n  listen: :9\n  timeout: 1s\n"))
	f.Add([]byte("zones:\n  - {name: a., file: a.zone}\nlabels: {a: b}\n"))
	f.Add([]byte("level: a\nlevel: b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := defaults()
		src, err := Decode("f.yaml", data, cfg)
		if err != nil {
			if !strings.Contains(err.Error(), "f.yaml") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		_ = src.Line("zones[0].file")
		_ = src.Line("admin.listen")
	})
}
