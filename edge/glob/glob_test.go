package glob

import "testing"

func TestMatch(t *testing.T) {
	type tc struct {
		pattern, s string
		want       bool
	}
	for _, c := range []tc{
		{"*", "", true},
		{"*", "/a/b", true},
		{"/api/*", "/api/", true},
		{"/api/*", "/api/v1/x", true},
		{"/api/*", "/apix", false},
		{"*.jpg", "/img/a.jpg", true},
		{"*.jpg", "/img/a.jpeg", false},
		{"/img/*.png", "/img/x/y.png", true},
		{"/a?c", "/abc", true},
		{"/a?c", "/ac", false},
		{"/exact", "/exact", true},
		{"/exact", "/exact/", false},
		{"/a*b*c", "/axxbyyc", true},
		{"/a*b*c", "/axxbyy", false},
		{"**", "x", true},
		{"", "", true},
		{"", "a", false},
	} {
		if got := Match(c.pattern, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("/api/*", "/api/v1")
	f.Add("*.jpg", "/a.jpg")
	f.Add("a*b?c*", "axxbyc")
	f.Fuzz(func(t *testing.T, p, s string) {
		if len(p) > 64 || len(s) > 256 {
			return
		}
		m := Match(p, s)
		if Literal(p) && m != (p == s) {
			t.Fatalf("literal %q vs %q: %v", p, s, m)
		}
		if !Match("*", s) {
			t.Fatal("* must match everything")
		}
	})
}
