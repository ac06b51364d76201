package health

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/config"
	"go.yaml.in/yaml/v3"
)

func TestWithDefaults(t *testing.T) {
	got := CheckConfig{Kind: KindHTTP, Address: "10.0.0.1"}.WithDefaults()
	want := CheckConfig{
		Kind: KindHTTP, Address: "10.0.0.1", Path: "/", ExpectedStatus: "200-399",
		Interval: config.Duration(10 * time.Second), Timeout: config.Duration(2 * time.Second),
		HealthyThreshold: 3, UnhealthyThreshold: 3,
	}
	if got.Path != want.Path || got.ExpectedStatus != want.ExpectedStatus || got.Interval != want.Interval ||
		got.Timeout != want.Timeout || got.HealthyThreshold != want.HealthyThreshold || got.UnhealthyThreshold != want.UnhealthyThreshold {
		t.Errorf("WithDefaults() = %+v, want %+v", got, want)
	}
	// A short interval shortens the default timeout.
	if got := (CheckConfig{Kind: KindTCP, Interval: config.Duration(500 * time.Millisecond)}).WithDefaults(); got.Timeout.D() != 500*time.Millisecond {
		t.Errorf("timeout with 500ms interval = %v, want 500ms", got.Timeout)
	}
	// Calculated checks default to all children and get no probe defaults.
	c := CheckConfig{Kind: KindCalculated, Children: []string{"a", "b", "c"}}.WithDefaults()
	if c.MinHealthy != 3 || c.Timeout != 0 || c.HealthyThreshold != 0 || c.Path != "" {
		t.Errorf("calculated defaults = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("calculated with defaults: %v", err)
	}
	// gRPC checks call the standard health service and want grpc-status 0.
	g := CheckConfig{Kind: KindGRPCS, Address: "10.0.0.1:50051"}.WithDefaults()
	if g.Path != DefaultGRPCPath || g.ExpectedGRPCStatus != "0" || g.ExpectedStatus != "" || g.GRPCService != "" || g.HealthyThreshold != 3 {
		t.Errorf("grpcs defaults = %+v", g)
	}
}

func TestValidate(t *testing.T) {
	ok := CheckConfig{Kind: KindHTTP, Address: "10.0.0.1:8080"}
	tests := []struct {
		name   string
		mod    func(*CheckConfig)
		fields []string // fields that must be named; nil means valid
	}{
		{"valid http", func(c *CheckConfig) {}, nil},
		{"valid http without port", func(c *CheckConfig) { c.Address = "backend.internal" }, nil},
		{"valid https ipv6", func(c *CheckConfig) {
			c.Kind, c.Address, c.ServerName, c.InsecureSkipVerify = KindHTTPS, "[::1]:8443", "api.example.com", true
		}, nil},
		{"valid tcp", func(c *CheckConfig) { c.Kind, c.Path = KindTCP, "" }, nil},
		{"valid fast check", func(c *CheckConfig) {
			c.Interval, c.Timeout = config.Duration(100*time.Millisecond), config.Duration(100*time.Millisecond)
		}, nil},
		{"missing kind", func(c *CheckConfig) { c.Kind = "" }, []string{"kind"}},
		{"unknown kind", func(c *CheckConfig) { c.Kind = "icmp" }, []string{"kind"}},
		{"missing address", func(c *CheckConfig) { c.Address = "" }, []string{"address"}},
		{"address with scheme", func(c *CheckConfig) { c.Address = "http://x:80" }, []string{"address"}},
		{"tcp address without port", func(c *CheckConfig) { c.Kind, c.Address = KindTCP, "10.0.0.1" }, []string{"address"}},
		{"bad port", func(c *CheckConfig) { c.Address = "10.0.0.1:99999" }, []string{"address"}},
		{"unbracketed ipv6", func(c *CheckConfig) { c.Address = "::1" }, []string{"address"}},
		{"interval too short", func(c *CheckConfig) { c.Interval = config.Duration(50 * time.Millisecond) }, []string{"interval"}},
		{"interval too long", func(c *CheckConfig) { c.Interval = config.Duration(2 * time.Hour) }, []string{"interval"}},
		{"timeout above interval", func(c *CheckConfig) {
			c.Interval, c.Timeout = config.Duration(time.Second), config.Duration(2*time.Second)
		}, []string{"timeout"}},
		{"negative timeout", func(c *CheckConfig) { c.Timeout = config.Duration(-time.Second) }, []string{"timeout"}},
		{"thresholds out of range", func(c *CheckConfig) { c.HealthyThreshold, c.UnhealthyThreshold = 11, -1 }, []string{"healthy_threshold", "unhealthy_threshold"}},
		{"relative path", func(c *CheckConfig) { c.Path = "healthz" }, []string{"path"}},
		{"bad status", func(c *CheckConfig) { c.ExpectedStatus = "200-" }, []string{"expected_status"}},
		{"reversed status range", func(c *CheckConfig) { c.ExpectedStatus = "399-200" }, []string{"expected_status"}},
		{"body too long", func(c *CheckConfig) { c.BodyContains = strings.Repeat("x", BodyLimit+1) }, []string{"body_contains"}},
		{"bad host", func(c *CheckConfig) { c.Host = "http://x/" }, []string{"host"}},
		{"tls fields on http", func(c *CheckConfig) { c.ServerName, c.InsecureSkipVerify = "x", true }, []string{"server_name", "insecure_skip_verify"}},
		{"server_name with port", func(c *CheckConfig) { c.Kind, c.ServerName = KindHTTPS, "x:443" }, []string{"server_name"}},
		{"http fields on tcp", func(c *CheckConfig) {
			c.Kind, c.Path, c.Host, c.ExpectedStatus, c.BodyContains = KindTCP, "/x", "h", "200", "ok"
		}, []string{"path", "host", "expected_status", "body_contains"}},
		{"children on http", func(c *CheckConfig) { c.Children, c.MinHealthy = []string{"a"}, 1 }, []string{"children", "min_healthy"}},
		{"calculated without children", func(c *CheckConfig) { c.Kind, c.Address = KindCalculated, "" }, []string{"children"}},
		{"calculated with probe fields", func(c *CheckConfig) {
			c.Kind, c.Children, c.Timeout, c.HealthyThreshold = KindCalculated, []string{"a"}, config.Duration(time.Second), 2
		}, []string{"address", "timeout", "healthy_threshold"}},
		{"calculated bad children", func(c *CheckConfig) {
			c.Kind, c.Address, c.Children = KindCalculated, "", []string{"a", "", "a"}
		}, []string{"children[1]", "children[2]"}},
		{"min_healthy above children", func(c *CheckConfig) {
			c.Kind, c.Address, c.Children, c.MinHealthy = KindCalculated, "", []string{"a", "b"}, 3
		}, []string{"min_healthy"}},
		{"min_healthy negative", func(c *CheckConfig) {
			c.Kind, c.Address, c.Children, c.MinHealthy = KindCalculated, "", []string{"a"}, -1
		}, []string{"min_healthy"}},
		{"valid grpc", func(c *CheckConfig) { c.Kind = KindGRPC }, nil},
		{"valid grpc with service", func(c *CheckConfig) { c.Kind, c.GRPCService, c.Host = KindGRPC, "my.pkg.Svc", "api.test:50051" }, nil},
		{"valid grpc ALB path", func(c *CheckConfig) { c.Kind, c.Path, c.ExpectedGRPCStatus = KindGRPC, "/AWS.ALB/healthcheck", "12" }, nil},
		{"valid grpcs", func(c *CheckConfig) {
			c.Kind, c.ServerName, c.InsecureSkipVerify, c.ExpectedGRPCStatus = KindGRPCS, "api.test", true, "0, 12-14"
		}, nil},
		{"grpc address without port", func(c *CheckConfig) { c.Kind, c.Address = KindGRPC, "10.0.0.1" }, []string{"address"}},
		{"grpc path not a method", func(c *CheckConfig) { c.Kind, c.Path = KindGRPC, "/healthz" }, []string{"path"}},
		{"grpc path with query", func(c *CheckConfig) { c.Kind, c.Path = KindGRPC, "/a.B/C?x=1" }, []string{"path"}},
		{"grpc bad matcher", func(c *CheckConfig) { c.Kind, c.ExpectedGRPCStatus = KindGRPC, "100" }, []string{"expected_grpc_status"}},
		{"grpc reversed matcher", func(c *CheckConfig) { c.Kind, c.ExpectedGRPCStatus = KindGRPC, "12-0" }, []string{"expected_grpc_status"}},
		{"grpc service on another path", func(c *CheckConfig) { c.Kind, c.Path, c.GRPCService = KindGRPC, "/a.B/C", "x" }, []string{"grpc_service"}},
		{"grpc service not UTF-8", func(c *CheckConfig) { c.Kind, c.GRPCService = KindGRPC, "\xff" }, []string{"grpc_service"}},
		{"http fields on grpc", func(c *CheckConfig) {
			c.Kind, c.ExpectedStatus, c.BodyContains = KindGRPC, "200", "ok"
		}, []string{"expected_status", "body_contains"}},
		{"tls fields on grpc", func(c *CheckConfig) { c.Kind, c.ServerName, c.InsecureSkipVerify = KindGRPC, "x", true }, []string{"server_name", "insecure_skip_verify"}},
		{"grpc fields on http", func(c *CheckConfig) { c.ExpectedGRPCStatus, c.GRPCService = "0", "x" }, []string{"expected_grpc_status", "grpc_service"}},
		{"grpc fields on tcp", func(c *CheckConfig) { c.Kind, c.ExpectedGRPCStatus = KindTCP, "0" }, []string{"expected_grpc_status"}},
		{"several problems at once", func(c *CheckConfig) {
			c.Address, c.Interval, c.ExpectedStatus = "", config.Duration(time.Millisecond), "abc"
		}, []string{"address", "interval", "expected_status"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			err := c.Validate()
			if tt.fields == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors for %v", tt.fields)
			}
			named := map[string]bool{}
			for _, e := range config.Flatten(err) {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Errorf("error %q is not a *config.FieldError", e)
					continue
				}
				named[fe.Field] = true
			}
			for _, f := range tt.fields {
				if !named[f] {
					t.Errorf("no error names %q; got %v", f, err)
				}
			}
			if len(named) != len(tt.fields) {
				t.Errorf("errors name %v, want exactly %v", named, tt.fields)
			}
		})
	}
}

func TestSetRejectsInvalid(t *testing.T) {
	e, _ := newTestEngine(t)
	if err := e.Set("", CheckConfig{Kind: KindTCP, Address: "127.0.0.1:1"}); err == nil {
		t.Error("empty ID accepted")
	}
	err := e.Set("x", CheckConfig{Kind: KindTCP})
	if err == nil || !strings.Contains(err.Error(), `check "x"`) || !strings.Contains(err.Error(), "address: required") {
		t.Errorf("Set with no address = %v", err)
	}
	if _, ok := e.State("x"); ok {
		t.Error("invalid check was added")
	}
}

func TestValidateAll(t *testing.T) {
	checks := map[string]CheckConfig{
		"web":  {Kind: KindHTTP, Address: "10.0.0.1"},
		"bad":  {Kind: KindTCP, Address: "10.0.0.1"},
		"c1":   {Kind: KindCalculated, Children: []string{"web", "c2"}, MinHealthy: 1},
		"c2":   {Kind: KindCalculated, Children: []string{"c1"}},
		"lost": {Kind: KindCalculated, Children: []string{"nope"}},
	}
	err := ValidateAll(checks)
	for _, want := range []string{"bad.address: want host:port", "c1.children: cycle: c1 -> c2 -> c1", `lost.children[0]: no check named "nope"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateAll() = %v, want it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "c2.children: cycle") {
		t.Errorf("cycle reported twice: %v", err)
	}
	delete(checks, "bad")
	delete(checks, "lost")
	checks["c2"] = CheckConfig{Kind: KindCalculated, Children: []string{"web"}}
	if err := ValidateAll(checks); err != nil {
		t.Errorf("ValidateAll(valid) = %v", err)
	}
}

const exampleYAML = `
web:
  kind: https
  address: 10.0.0.5:443
  path: /healthz
  host: www.example.com
  expected_status: "200-299,304"
  body_contains: '"status":"ok"'
  interval: 5s
  timeout: 1500ms
  healthy_threshold: 2
  unhealthy_threshold: 3
db:
  kind: tcp
  address: 10.0.0.9:5432
  interval: 1s
orders:
  kind: grpc
  address: 10.0.0.7:50051
  grpc_service: shop.Orders
alb-style:
  kind: grpcs
  address: 10.0.0.8:443
  path: /AWS.ALB/healthcheck
  expected_grpc_status: "12"
  insecure_skip_verify: true
site:
  kind: calculated
  children: [web, db]
  min_healthy: 2
maintenance:
  kind: calculated
  children: [web]
  inverted: true
  disabled: true
`

func TestYAML(t *testing.T) {
	var checks map[string]CheckConfig
	dec := yaml.NewDecoder(strings.NewReader(exampleYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&checks); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if err := ValidateAll(checks); err != nil {
		t.Fatalf("ValidateAll: %v", err)
	}
	web := checks["web"]
	if web.Kind != KindHTTPS || web.Interval.D() != 5*time.Second || web.Timeout.D() != 1500*time.Millisecond ||
		web.ExpectedStatus != "200-299,304" || web.BodyContains != `"status":"ok"` || web.Host != "www.example.com" {
		t.Errorf("web = %+v", web)
	}
	if o, a := checks["orders"], checks["alb-style"]; o.Kind != KindGRPC || o.GRPCService != "shop.Orders" ||
		a.Kind != KindGRPCS || a.ExpectedGRPCStatus != "12" || a.Path != "/AWS.ALB/healthcheck" || !a.InsecureSkipVerify {
		t.Errorf("orders = %+v, alb-style = %+v", o, a)
	}
	if m := checks["maintenance"]; !m.Inverted || !m.Disabled {
		t.Errorf("maintenance = %+v", m)
	}
	out, err := yaml.Marshal(checks)
	if err != nil {
		t.Fatal(err)
	}
	var again map[string]CheckConfig
	if err := yaml.Unmarshal(out, &again); err != nil {
		t.Fatalf("round trip: %v\n%s", err, out)
	}
	if again["web"].Interval != web.Interval || !strings.Contains(string(out), "interval: 5s") {
		t.Errorf("round trip lost the interval:\n%s", out)
	}
	if strings.Contains(string(out), "min_healthy: 0") || strings.Contains(string(out), "path: \"\"") {
		t.Errorf("unset fields are written out:\n%s", out)
	}

	var bad map[string]CheckConfig
	if err := yaml.Unmarshal([]byte("x: {kind: tcp, interval: 5}"), &bad); err == nil {
		t.Error("bare integer interval accepted")
	}
	dec = yaml.NewDecoder(strings.NewReader("x: {kind: tcp, intervall: 5s}"))
	dec.KnownFields(true)
	if err := dec.Decode(&bad); err == nil {
		t.Error("misspelt field accepted")
	}
}
