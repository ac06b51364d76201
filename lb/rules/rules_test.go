package rules

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	type tc struct {
		pattern, s string
		fold, want bool
	}
	for _, c := range []tc{
		{"*.example.com", "www.example.com", true, true},
		{"*.example.com", "WWW.Example.COM", true, true},
		{"*.example.com", "example.com", true, false},
		{"/api/*", "/api/v1/users", false, true},
		{"/api/*", "/API/v1", false, false},
		{"/img/*.png", "/img/a/b.png", false, true},
		{"/img/?.png", "/img/ab.png", false, false},
		{"*", "", false, true},
		{"a*b*c", "axxbyyc", false, true},
		{"a*b*c", "axxbyy", false, false},
	} {
		if got := Glob(c.pattern, c.s, c.fold); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}

func TestMatch(t *testing.T) {
	rs := []Rule{
		{Priority: 30, Conditions: Conditions{Path: []string{"/api/*"}}, Action: Action{Forward: &Forward{TargetGroup: "api"}}},
		{Priority: 10, Conditions: Conditions{Host: []string{"*.beta.test"}, Header: []HeaderMatch{{Name: "x-env", Values: []string{"canary*"}}}}, Action: Action{Forward: &Forward{TargetGroup: "canary"}}},
		{Priority: 20, Conditions: Conditions{Method: []string{"DELETE"}, SourceIP: []string{"10.0.0.0/8"}}, Action: Action{FixedResponse: &FixedResponse{StatusCode: 403}}},
		{Priority: 40, Conditions: Conditions{Query: []QueryMatch{{Key: "v", Value: "2"}}}, Action: Action{Forward: &Forward{TargetGroup: "v2"}}},
	}
	if err := ValidateRules(rs, func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	tab := Compile(rs)
	type tc struct {
		name string
		req  Request
		want int // priority, 0 = none
	}
	for _, c := range []tc{
		{"path", Request{Host: "a.test", Path: "/api/x", Method: "GET"}, 30},
		{"host and header", Request{Host: "x.BETA.test", Path: "/api/x", Method: "GET", Header: http.Header{"X-Env": {"Canary-1"}}}, 10},
		{"host without header", Request{Host: "x.beta.test", Path: "/", Method: "GET"}, 0},
		{"method and source", Request{Path: "/api/y", Method: "DELETE", Source: netip.MustParseAddr("10.1.2.3")}, 20},
		{"method, other source", Request{Path: "/api/y", Method: "DELETE", Source: netip.MustParseAddr("192.0.2.1")}, 30},
		{"v4-mapped source", Request{Path: "/", Method: "DELETE", Source: netip.MustParseAddr("::ffff:10.0.0.1")}, 20},
		{"query", Request{Path: "/", Method: "GET", RawQuery: "a=1&V=2"}, 40},
		{"nothing", Request{Path: "/", Method: "GET"}, 0},
	} {
		got := 0
		if m := tab.Match(&c.req); m != nil {
			got = m.Rule.Priority
		}
		if got != c.want {
			t.Errorf("%s: matched priority %d, want %d", c.name, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	rs := []Rule{
		{Priority: 0, Action: Action{}},
		{Priority: 5, Conditions: Conditions{Path: []string{"api"}, SourceIP: []string{"10.0.0.0/33"}}, Action: Action{Forward: &Forward{TargetGroup: "nope"}}},
		{Priority: 5, Conditions: Conditions{Method: []string{"get"}}, Action: Action{Redirect: &Redirect{StatusCode: 200}, FixedResponse: &FixedResponse{StatusCode: 200}}},
	}
	err := ValidateRules(rs, func(n string) bool { return n == "web" })
	for _, want := range []string{"[0].priority", "[0].conditions", "[0].action", "[1].conditions.path[0]", "[1].conditions.source_ip[0]", `[1].action.forward.target_group: no target group named "nope"`, "[2].priority: duplicate", "[2].conditions.method[0]", "[2].action.redirect.status_code"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

// FuzzMatch: matching arbitrary requests against arbitrary patterns never
// panics, and "*" matches everything.
func FuzzMatch(f *testing.F) {
	f.Add("*.example.com", "www.example.com", "/api/*", "/api/x", "a=1&b=2")
	f.Add("?", "", "*a*b", "ab", "%zz=1;x")
	f.Fuzz(func(t *testing.T, hostPat, host, pathPat, path, query string) {
		_ = Glob(hostPat, host, true)
		_ = Glob(pathPat, path, false)
		if !Glob("*", host, false) {
			t.Fatal("* did not match")
		}
		tab := Compile([]Rule{{Priority: 1, Conditions: Conditions{Host: []string{hostPat}, Path: []string{pathPat}, Query: []QueryMatch{{Value: "*"}}}}})
		_ = tab.Match(&Request{Host: host, Path: path, RawQuery: query})
	})
}
