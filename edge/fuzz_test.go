package edge

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzCacheKey: the key builder never panics, is deterministic, keeps
// distributions apart and ignores everything the behavior leaves out.
func FuzzCacheKey(f *testing.F) {
	f.Add("/a/b", "b=2&a=1&utm=x", "lang=en; s=1", "en")
	f.Add("/%2F..", "a=%zz&&=", "bad cookie;;", "")
	f.Add("/", "", "", "")
	d := &dist{name: "d"}
	behaviors := []*behavior{
		compileBehavior(d, &Behavior{}),
		compileBehavior(d, &Behavior{CacheKey: CacheKey{QueryStrings: "all", Headers: []string{"Accept-Language"}, Cookies: []string{"lang"}}}),
		compileBehavior(d, &Behavior{CacheKey: CacheKey{QueryStrings: "allow", QueryStringNames: []string{"a"}}}),
	}
	f.Fuzz(func(t *testing.T, path, query, cookie, lang string) {
		u, err := url.Parse("http://x" + "/" + strings.TrimPrefix(path, "/") + "?" + query)
		if err != nil {
			return
		}
		r := &http.Request{Method: "GET", URL: u, Header: http.Header{"Cookie": {cookie}, "Accept-Language": {lang}}}
		for _, b := range behaviors {
			k1, q1 := b.cacheKey(r)
			k2, q2 := b.cacheKey(r)
			if k1 != k2 || q1 != q2 {
				t.Fatalf("not deterministic: %q %q", k1, k2)
			}
			if !strings.HasPrefix(k1, "d\x00") {
				t.Fatalf("key %q lacks the distribution", k1)
			}
			if b.qsMode == 0 && q1 != "" {
				t.Fatalf("query forwarded with query_strings none: %q", q1)
			}
			if b.qsMode == 2 {
				v, _ := url.ParseQuery(q1)
				for name := range v {
					if name != "a" {
						t.Fatalf("query %q outside the allow-list", name)
					}
				}
			}
		}
		// Headers outside the key never change it.
		r2 := &http.Request{Method: "GET", URL: u, Header: http.Header{"Cookie": {cookie}, "Accept-Language": {lang}, "X-Other": {"z"}}}
		if k, _ := behaviors[1].cacheKey(r2); k != func() string { k, _ := behaviors[1].cacheKey(r); return k }() {
			t.Fatal("unkeyed header changed the key")
		}
	})
}

func FuzzNegotiate(f *testing.F) {
	f.Add("gzip, deflate, br")
	f.Add("br;q=0, gzip;q=0.5")
	f.Add("*;q=1, identity;q=")
	f.Fuzz(func(t *testing.T, ae string) {
		switch got := negotiate([]string{ae}); got {
		case "", "gzip", "br":
		default:
			t.Fatalf("%q -> %q", ae, got)
		}
	})
}

func FuzzVerifySigned(f *testing.F) {
	key := []byte("0123456789abcdef0123")
	f.Add(SignURL("/p", "k1", key, time.Unix(2e9, 0), ""))
	f.Add(SignURL("/p?x=1", "k1", key, time.Unix(2e9, 0), "127.0.0.1"))
	f.Add("/p?Expires=1&KeyName=k1&Signature=zz")
	s := &snapshot{keys: map[string][]byte{"k1": key}}
	client := netip.MustParseAddr("127.0.0.1")
	now := time.Unix(1e9, 0)
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{URL: u}
		q, ok := s.verifySigned(r, client, now)
		if !ok {
			return
		}
		// A valid signature means the target is exactly what SignURL makes.
		if strings.Contains(q, "Signature=") || strings.Contains(q, "Expires=") {
			t.Fatalf("signature parameters left in %q", q)
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512", "64KiB", "256MiB", "1GB", "-1", "9223372036854775807GiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err == nil && v < 0 {
			t.Fatalf("%q -> %d", s, v)
		}
	})
}
