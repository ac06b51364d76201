package httpguard

import (
	"bytes"
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

// TestTrimOWS: TrimOWS trims what bytes.Trim(b, " \t") trims, and no
// more (a CR, a NUL or a non-breaking space stays), returning nil when
// nothing is left as bytes.Trim does (callers tell an empty value from
// a missing one by it).
func TestTrimOWS(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{" ", ""},
		{" \t \t", ""},
		{"a", "a"},
		{"  max-age=60 \t", "max-age=60"},
		{"\ta b\t", "a b"},
		{"\r x \r", "\r x \r"},
		{" \x00 ", "\x00"},
		{"\u00a0x\u00a0", "\u00a0x\u00a0"},
	} {
		got := TrimOWS([]byte(tc.in))
		if string(got) != tc.want {
			t.Errorf("TrimOWS(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if want := bytes.Trim([]byte(tc.in), " \t"); (got == nil) != (want == nil) {
			t.Errorf("TrimOWS(%q) nil = %v, bytes.Trim's nil = %v", tc.in, got == nil, want == nil)
		}
	}
}

// FuzzTrimOWS compares TrimOWS with bytes.Trim(b, " \t") on any input,
// nil-ness included.
func FuzzTrimOWS(f *testing.F) {
	for _, s := range []string{"", " a ", "\t\t", "x", " \r\n "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := bytes.Trim(b, " \t")
		got := TrimOWS(b)
		if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
			t.Fatalf("TrimOWS(%q) = %q (nil %v), bytes.Trim %q (nil %v)", b, got, got == nil, want, want == nil)
		}
	})
}

func BenchmarkTrimOWS(b *testing.B) {
	v := []byte(" public, max-age=3600 ")
	b.Run("TrimOWS", func(b *testing.B) {
		for b.Loop() {
			_ = TrimOWS(v)
		}
	})
	b.Run("bytes.Trim", func(b *testing.B) {
		for b.Loop() {
			_ = bytes.Trim(v, " \t")
		}
	})
}
