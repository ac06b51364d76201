package httpguard

import (
	"net/textproto"
	"testing"

	"github.com/edgestack/edgestack/internal/httpguard/guardtest"
)

// TestClassifyVectors runs every desync vector through Classify: requests
// ALB refuses (Ambiguous, Severe) must be refused, the others forwarded.
// The exact tier must match too, except where listed in tierDiffs.
func TestClassifyVectors(t *testing.T) {
	vectors, err := guardtest.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(vectors) < 150 {
		t.Fatalf("only %d vectors loaded", len(vectors))
	}
	mismatch := 0
	for _, v := range vectors {
		res := Classify(v.Head("example.test"))
		refused := res.Tier >= Ambiguous
		if refused != v.Refuse() {
			t.Errorf("%s: got %s (%s: %s), want %s (%s)", v, res.Tier, res.Reason, res.Message, v.Expected.Tier, v.Expected.Reason)
			continue
		}
		if res.Tier.String() != v.Expected.Tier {
			mismatch++
			t.Logf("tier differs (same verdict): %s: got %s %s, want %s %s", v, res.Tier, res.Reason, v.Expected.Tier, v.Expected.Reason)
		}
	}
	t.Logf("%d vectors, %d with a different tier but the same verdict", len(vectors), mismatch)
}

func TestClassifyFraming(t *testing.T) {
	type tc struct {
		name    string
		head    string
		tier    Tier
		chunked bool
		cl      int64
		norm    string
	}
	for _, c := range []tc{
		{name: "get", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", tier: Compliant},
		{name: "post cl", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n", tier: Compliant, cl: 12},
		{name: "post chunked", head: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", tier: Compliant, chunked: true},
		{name: "te not last", head: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", tier: Ambiguous},
		{name: "obs-fold", head: "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", tier: Severe},
		{name: "cl plus sign", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", tier: Severe},
		{name: "dropped header", head: "GET / HTTP/1.1\r\nHost: a\r\nX y: 1\r\n\r\n", tier: Acceptable, norm: "GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "space in uri", head: "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", tier: Acceptable, norm: "GET /a%20b HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "http/1.2", head: "GET / HTTP/1.2\r\nHost: a\r\n\r\n", tier: Acceptable, norm: "GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "truncated", head: "GET / HTTP/1.1\r\nHost: a\r\n", tier: Severe},
		{name: "no version", head: "GET /\r\n\r\n", tier: Acceptable, norm: "GET / HTTP/1.0\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := Classify([]byte(c.head))
			if r.Tier != c.tier {
				t.Fatalf("tier %s (%s), want %s", r.Tier, r.Message, c.tier)
			}
			if r.Tier >= Ambiguous {
				return
			}
			if r.Chunked != c.chunked || r.ContentLength != c.cl {
				t.Errorf("framing chunked=%v cl=%d, want %v %d", r.Chunked, r.ContentLength, c.chunked, c.cl)
			}
			if string(r.Normalized) != c.norm {
				t.Errorf("normalized %q, want %q", r.Normalized, c.norm)
			}
		})
	}
}

// TestAppendCanonicalKey: the canonical form of a token is net/textproto's.
func TestAppendCanonicalKey(t *testing.T) {
	for _, name := range []string{"content-type", "CONTENT-TYPE", "x-a-b", "X--y", "te", "a", "www-authenticate", "X-Forwarded-For", "x_under", "1-abc", "-lead"} {
		if !IsToken([]byte(name)) {
			t.Fatalf("%q is a token", name)
		}
		if got, want := string(AppendCanonicalKey([]byte("p:"), []byte(name))), "p:"+textproto.CanonicalMIMEHeaderKey(name); got != want {
			t.Errorf("%q: %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"", "a b", "a:b", "é"} {
		if IsToken([]byte(name)) {
			t.Errorf("%q is no token", name)
		}
	}
}
