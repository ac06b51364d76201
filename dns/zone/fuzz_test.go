package zone

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzZoneParse feeds master-file text to the zone parser wrapper and the
// tree builder: errors are fine, panics are not; a zone that builds must
// answer a lookup.
func FuzzZoneParse(f *testing.F) {
	f.Add("$ORIGIN example.test.\n$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n*.w IN TXT \"x\"\na.b.c IN CNAME a.b\n")
	f.Add("@ IN SOA ns1 h ( 1 2 3\n 4 5 )\n$GENERATE 1-3 h$ A 192.0.2.$\n")
	f.Add("x IN TYPE65400 \\# 2 abcd\n")
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 4096 || strings.Contains(text, "$GENERATE") && len(text) > 200 {
			return
		}
		rrs, err := Parse(strings.NewReader(text), "example.test.", "fuzz")
		if err != nil {
			return
		}
		z, err := Build("example.test.", Group(rrs))
		if err != nil {
			return
		}
		for _, q := range []string{"example.test.", "a.b.c.example.test.", "x.w.example.test.", "nope.example.test."} {
			z.Lookup(q, dns.TypeA, true, func(s []*RRSet) []dns.RR { return s[0].RRs })
		}
	})
}
