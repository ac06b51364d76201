package zone

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const head = "$ORIGIN example.test.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\n"

func TestLoadFileErrors(t *testing.T) {
	type tc struct {
		name  string
		files map[string]string
		want  []string // substrings of the error; none: loads
	}
	cases := []tc{
		{name: "ok", files: map[string]string{"z": head}},
		{name: "syntax error names file and line", files: map[string]string{"z": head + "www IN A 192.0.2.300\n"}, want: []string{"z:6:", "A"}},
		{name: "include inside folder", files: map[string]string{"z": head + "$INCLUDE inc/more.zone\n", "inc/more.zone": "www IN A 192.0.2.2\n"}},
		{name: "include error names included file", files: map[string]string{"z": head + "$INCLUDE more.zone\n", "more.zone": "www IN A nope\n"}, want: []string{"more.zone:1:"}},
		{name: "include outside folder refused", files: map[string]string{"z": head + "$INCLUDE ../../../../etc/passwd\n"}, want: []string{"z:6:"}},
		{name: "absolute include refused", files: map[string]string{"z": head + "$INCLUDE /etc/hostname\n"}, want: []string{"hostname"}},
		{name: "no SOA", files: map[string]string{"z": "$ORIGIN example.test.\nwww 300 IN A 192.0.2.1\n"}, want: []string{"SOA"}},
		{name: "CNAME and other data", files: map[string]string{"z": head + "www IN CNAME ns1\nwww IN A 192.0.2.1\n"}, want: []string{"CNAME and other data"}},
		{name: "out of zone", files: map[string]string{"z": head + "www.example.org. IN A 192.0.2.1\n"}, want: []string{"outside the zone"}},
		{name: "class CH refused", files: map[string]string{"z": head + "www CH A 1\n"}, want: []string{"z:"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			sub := filepath.Join(dir, "a", "b")
			var main string
			for n, text := range c.files {
				p := write(t, sub, n, text)
				if n == "z" {
					main = p
				}
			}
			z, err := LoadFile(main, "example.test.")
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("LoadFile: %v", err)
				}
				if z.Serial() != 1 {
					t.Fatalf("serial %d", z.Serial())
				}
				return
			}
			if err == nil {
				t.Fatalf("loaded; want an error with %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLookupTTLNormalisedAndDuplicatesDropped(t *testing.T) {
	rrs, err := Parse(strings.NewReader(head+"www 300 IN A 192.0.2.1\nwww 60 IN A 192.0.2.2\nwww 300 IN A 192.0.2.1\n"), "example.test.", "t")
	if err != nil {
		t.Fatal(err)
	}
	z, err := Build("example.test.", Group(rrs))
	if err != nil {
		t.Fatal(err)
	}
	r := z.Lookup("www.example.test.", dns.TypeA, false, func(s []*RRSet) []dns.RR { return s[0].RRs })
	if len(r.Answer) != 2 {
		t.Fatalf("answer %v", r.Answer)
	}
	for _, rr := range r.Answer {
		if rr.Header().Ttl != 60 {
			t.Errorf("ttl %d, want 60 (smallest of the set)", rr.Header().Ttl)
		}
	}
}

func TestCompareNames(t *testing.T) {
	names := []string{"example.test.", "a.example.test.", "z.example.test.", "*.z.example.test.", "b.a.example.test."}
	want := []string{"example.test.", "a.example.test.", "b.a.example.test.", "z.example.test.", "*.z.example.test."}
	// sort with CompareNames
	for i := range names {
		for j := i + 1; j < len(names); j++ {
			if CompareNames(names[i], names[j]) > 0 {
				names[i], names[j] = names[j], names[i]
			}
		}
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v want %v", names, want)
	}
}
