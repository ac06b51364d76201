package libdnsprovider

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/certs/testdns"
	"github.com/libdns/libdns"
)

// TestAppendDeleteSeveralValues runs against a real HTTP+DNS server that
// implements dnsd's change API contract (certs/testdns).
func TestAppendDeleteSeveralValues(t *testing.T) {
	srv := testdns.Start(t, "tok", "example.test")
	p := &Provider{URL: srv.APIURL, Token: "tok", VerifyServer: srv.DNSAddr, VerifyTimeout: 3 * time.Second}
	ctx := context.Background()
	// Wildcard and apex orders add a value each to the same name.
	if _, err := p.AppendRecords(ctx, "example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "apex-value"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.AppendRecords(ctx, "example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "wild\"card value"}}); err != nil {
		t.Fatal(err)
	}
	got := srv.TXT("_acme-challenge.example.test")
	if len(got) != 2 {
		t.Fatalf("TXT values = %q, want both", got)
	}
	recs, err := p.GetRecords(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, r := range recs {
		texts = append(texts, r.RR().Data)
	}
	slices.Sort(texts)
	if !slices.Equal(texts, []string{"apex-value", "wild\"card value"}) {
		t.Fatalf("GetRecords = %q", texts)
	}
	if _, err := p.DeleteRecords(ctx, "example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "apex-value"}}); err != nil {
		t.Fatal(err)
	}
	if got := srv.TXT("_acme-challenge.example.test"); len(got) != 1 {
		t.Fatalf("after one delete: %q", got)
	}
	if _, err := p.DeleteRecords(ctx, "example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "wild\"card value"}}); err != nil {
		t.Fatal(err)
	}
	if got := srv.TXT("_acme-challenge.example.test"); len(got) != 0 {
		t.Fatalf("after deletes: %q", got)
	}
	log := strings.Join(srv.Log(), "\n")
	if !strings.Contains(log, "DELETE _acme-challenge.example.test. 1") {
		t.Fatalf("last value was not removed with DELETE:\n%s", log)
	}
}

func TestErrors(t *testing.T) {
	srv := testdns.Start(t, "tok", "example.test")
	ctx := context.Background()
	type errCase struct {
		name string
		p    *Provider
		zone string
		rec  libdns.Record
		want string
	}
	for _, tc := range []errCase{
		{"wrong token", &Provider{URL: srv.APIURL, Token: "bad"}, "example.test.", libdns.TXT{Name: "x", Text: "v"}, "401"},
		{"unknown zone", &Provider{URL: srv.APIURL, Token: "tok"}, "other.test.", libdns.TXT{Name: "x", Text: "v"}, "404"},
		{"not TXT", &Provider{URL: srv.APIURL, Token: "tok"}, "example.test.", libdns.RR{Name: "x", Type: "A", Data: "192.0.2.1"}, "only TXT"},
		{"unreachable", &Provider{URL: "http://127.0.0.1:1", Token: "tok"}, "example.test.", libdns.TXT{Name: "x", Text: "v"}, "unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.p.AppendRecords(ctx, tc.zone, []libdns.Record{tc.rec})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			var ae *APIError
			if strings.Contains(tc.want, "40") && !errors.As(err, &ae) {
				t.Fatalf("not an APIError: %v", err)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	for _, s := range []string{"", "abc", `a"b`, `a\b`, "with space"} {
		if got := UnquoteTXT(QuoteTXT(s)); got != s {
			t.Errorf("round trip %q -> %q -> %q", s, QuoteTXT(s), got)
		}
	}
}

func FuzzUnquoteTXT(f *testing.F) {
	f.Add(`"abc" "def"`)
	f.Add(`"a\"b`)
	f.Fuzz(func(t *testing.T, s string) {
		_ = UnquoteTXT(s)
		if got := UnquoteTXT(QuoteTXT(s)); got != s {
			t.Fatalf("round trip of %q gave %q", s, got)
		}
	})
}
