package cache

import (
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestParseCacheControl(t *testing.T) {
	type tc struct {
		in   string
		want Directives
	}
	none := Directives{MaxAge: -1, SMaxAge: -1, StaleWhileRevalidate: -1, StaleIfError: -1, MaxStale: -1, MinFresh: -1}
	with := func(f func(*Directives)) Directives { d := none; f(&d); return d }
	for _, c := range []tc{
		{"", none},
		{"max-age=60", with(func(d *Directives) { d.MaxAge = time.Minute })},
		{`MAX-AGE="60", Public`, with(func(d *Directives) { d.MaxAge = time.Minute; d.Public = true })},
		{"max-age=abc", with(func(d *Directives) { d.MaxAge = 0 })},
		{"max-age", with(func(d *Directives) { d.MaxAge = 0 })},
		{"max-age=99999999999999999999", with(func(d *Directives) { d.MaxAge = maxDelta * time.Second })},
		{"s-maxage=5, must-revalidate, proxy-revalidate", with(func(d *Directives) {
			d.SMaxAge = 5 * time.Second
			d.MustRevalidate, d.ProxyRevalidate = true, true
		})},
		{`no-cache="Set-Cookie, X-A", private`, with(func(d *Directives) { d.NoCache, d.Private = true, true })},
		{"no-store,immutable,no-transform", with(func(d *Directives) { d.NoStore, d.Immutable, d.NoTransform = true, true, true })},
		{"stale-while-revalidate=30, stale-if-error=600", with(func(d *Directives) {
			d.StaleWhileRevalidate, d.StaleIfError = 30*time.Second, 10*time.Minute
		})},
		{"max-stale, min-fresh=3, only-if-cached", with(func(d *Directives) {
			d.MaxStale, d.MinFresh, d.OnlyIfCached = MaxStaleAny, 3*time.Second, true
		})},
		{"unknown=1, ,,", none},
	} {
		if got := ParseCacheControl([]string{c.in}); got != c.want {
			t.Errorf("%q:\n got %+v\nwant %+v", c.in, got, c.want)
		}
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pol := Policy{DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour, Grace: time.Minute}
	type tc struct {
		name   string
		status int
		hdrs   map[string]string
		auth   bool
		store  bool
		fresh  time.Duration
		sie    time.Duration
	}
	for _, c := range []tc{
		{"default ttl", 200, nil, false, true, time.Hour, time.Minute},
		{"max-age capped", 200, map[string]string{"Cache-Control": "max-age=999999"}, false, true, 24 * time.Hour, time.Minute},
		{"expires", 200, map[string]string{"Date": now.Format(http.TimeFormat), "Expires": now.Add(90 * time.Second).Format(http.TimeFormat)}, false, true, 90 * time.Second, time.Minute},
		{"no-store", 200, map[string]string{"Cache-Control": "no-store"}, false, false, 0, 0},
		{"auth not public", 200, map[string]string{"Cache-Control": "max-age=5"}, true, false, 0, 0},
		{"auth public", 200, map[string]string{"Cache-Control": "public, max-age=5"}, true, true, 5 * time.Second, time.Minute},
		{"302 no explicit", 302, nil, false, false, 0, 0},
		{"302 explicit", 302, map[string]string{"Cache-Control": "max-age=5"}, false, true, 5 * time.Second, time.Minute},
		{"206 never", 206, map[string]string{"Cache-Control": "max-age=5"}, false, false, 0, 0},
		{"stale-if-error longer than grace", 200, map[string]string{"Cache-Control": "max-age=5, stale-if-error=600"}, false, true, 5 * time.Second, 10 * time.Minute},
		{"must-revalidate: no stale", 200, map[string]string{"Cache-Control": "max-age=5, must-revalidate, stale-if-error=600"}, false, true, 5 * time.Second, 0},
		{"heuristic from last-modified", 200, map[string]string{"Date": now.Format(http.TimeFormat), "Last-Modified": now.Add(-100 * time.Hour).Format(http.TimeFormat)}, false, true, time.Hour, time.Minute},
	} {
		h := http.Header{}
		for k, v := range c.hdrs {
			h.Set(k, v)
		}
		d := Decide(c.status, h, c.auth, pol, now)
		if d.Store != c.store || (d.Store && (d.Fresh != c.fresh || d.SIE != c.sie)) {
			t.Errorf("%s: %+v", c.name, d)
		}
	}
	// Without a default TTL, Last-Modified gives 10% of the age.
	h := http.Header{"Date": {now.Format(http.TimeFormat)}, "Last-Modified": {now.Add(-100 * time.Hour).Format(http.TimeFormat)}}
	if d := Decide(200, h, false, Policy{}, now); d.Fresh != 10*time.Hour {
		t.Errorf("heuristic: %v", d.Fresh)
	}
}

func TestCorrectedInitialAge(t *testing.T) {
	req := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	resp := req.Add(2 * time.Second)
	h := http.Header{"Age": {"10"}, "Date": {req.Add(-30 * time.Second).Format(http.TimeFormat)}}
	if got := CorrectedInitialAge(h, req, resp); got != 32*time.Second {
		t.Errorf("apparent age wins: %v", got)
	}
	h = http.Header{"Age": {"100"}, "Date": {resp.Format(http.TimeFormat)}}
	if got := CorrectedInitialAge(h, req, resp); got != 102*time.Second {
		t.Errorf("corrected age wins: %v", got)
	}
}

func TestStoreBansAndCost(t *testing.T) {
	s := newTestStore(t, 1<<20)
	mk := func(path string, tags ...string) *Entry {
		return &Entry{Status: 200, Body: make([]byte, 100), Seq: s.Seq(), ResponseTime: time.Now(), Fresh: time.Hour, Dist: "d", Path: path, Tags: tags}
	}
	for _, p := range []string{"/a", "/img/1", "/img/2"} {
		s.Set(p, mk(p, "t"+p))
	}
	s.Wait()
	if st := s.Stats(); st.Objects != 3 || st.Bytes < 300 {
		t.Fatalf("stats %+v", st)
	}
	s.Invalidate(Ban{Path: "/img/*"})
	for p, want := range map[string]bool{"/a": true, "/img/1": false, "/img/2": false} {
		if _, ok := s.Get(p); ok != want {
			t.Errorf("%s: %v", p, ok)
		}
	}
	s.Set("/img/1", mk("/img/1")) // stored after the ban: visible
	s.Wait()
	if _, ok := s.Get("/img/1"); !ok {
		t.Error("entry fetched after the ban is hidden")
	}
	s.Invalidate(Ban{Tag: "t/a"})
	if _, ok := s.Get("/a"); ok {
		t.Error("tag ban missed")
	}
	if _, err := New(Options{}); err == nil {
		t.Error("zero budget accepted")
	}
}

func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{"max-age=60", `no-cache="a,b", private`, "s-maxage=1,stale-while-revalidate=2", "max-stale", `x="\"",max-age=1`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := ParseCacheControl([]string{s})
		for _, v := range []time.Duration{d.MaxAge, d.SMaxAge, d.StaleIfError, d.StaleWhileRevalidate, d.MinFresh} {
			if v < -1 || v > maxDelta*time.Second {
				t.Fatalf("%q: out of range %v", s, v)
			}
		}
		h := http.Header{"Cache-Control": {s}}
		dec := Decide(200, h, false, Policy{DefaultTTL: time.Hour}, time.Now())
		if dec.Fresh < 0 {
			t.Fatalf("%q: negative freshness", s)
		}
		if d.NoStore && dec.Store {
			t.Fatalf("%q: no-store stored", s)
		}
	})
}

// TestParseHTTPDate: the three forms parse, IMF-fixdate by hand exactly
// as http.ParseTime reads it, and what the hand parser refuses still
// gets http.ParseTime's answer.
func TestParseHTTPDate(t *testing.T) {
	want := time.Date(1994, time.November, 6, 8, 49, 37, 0, time.UTC)
	for _, c := range []struct {
		in       string
		ok, fast bool
	}{
		{"Sun, 06 Nov 1994 08:49:37 GMT", true, true},
		{"Sunday, 06-Nov-94 08:49:37 GMT", true, false}, // RFC 850
		{"Sun Nov  6 08:49:37 1994", true, false},       // asctime
		{"sun, 06 nov 1994 08:49:37 GMT", true, false},  // time.Parse ignores the names' case
		{"Sun, 06 Nov 1994 08:49:37 UTC", false, false},
		{"Sun, 31 Nov 1994 08:49:37 GMT", false, false},
		{"Sun, 06 Nov 1994 24:49:37 GMT", false, false},
		{"Sun, 06 Nov 1994 08:49:60 GMT", false, false},
		{"Xyz, 06 Nov 1994 08:49:37 GMT", false, false},
		{"unMo, 06 Nov 1994 08:49:37 GMT", false, false},
		{"Sun, 06 ovD 1994 08:49:37 GMT", false, false},
		{"Sun, 06 Nov 1994 08:49:37 GMT ", false, false},
		{"Sun, 0x Nov 1994 08:49:37 GMT", false, false},
		{"", false, false},
	} {
		got, ok := ParseHTTPDate(c.in)
		if ok != c.ok || (ok && !got.Equal(want)) {
			t.Errorf("ParseHTTPDate(%q) = %v, %v; want ok %v", c.in, got, ok, c.ok)
		}
		if _, fast := parseIMFFixdate(c.in); fast != c.fast {
			t.Errorf("parseIMFFixdate(%q) ok = %v, want %v", c.in, fast, c.fast)
		}
	}
	leap, ok := ParseHTTPDate("Tue, 29 Feb 2000 00:00:00 GMT")
	if _, notLeap := parseIMFFixdate("Thu, 29 Feb 1900 00:00:00 GMT"); !ok || leap.Day() != 29 || notLeap {
		t.Errorf("29 February: 2000 %v %v, 1900 accepted %v", leap, ok, notLeap)
	}
}

// FuzzParseHTTPDate: whatever the hand parser accepts, http.ParseTime
// accepts as the same instant.
func FuzzParseHTTPDate(f *testing.F) {
	for _, s := range []string{"Sun, 06 Nov 1994 08:49:37 GMT", "Tue, 29 Feb 2000 23:59:59 GMT", "Mon, 01 Jan 0000 00:00:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseIMFFixdate(s)
		want, err := http.ParseTime(s)
		if ok && (err != nil || !got.Equal(want)) {
			t.Fatalf("%q: by hand %v, http.ParseTime %v, %v", s, got, want, err)
		}
	})
}

func BenchmarkParseHTTPDate(b *testing.B) {
	for _, v := range []string{"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT"} {
		b.Run(v[:6], func(b *testing.B) {
			for b.Loop() {
				ParseHTTPDate(v)
			}
		})
	}
}

func FuzzParseTags(f *testing.F) {
	f.Add("a b  c", "x, y,,z")
	f.Fuzz(func(t *testing.T, sk, ct string) {
		for _, tag := range ParseTags(http.Header{"Surrogate-Key": {sk}, "Cache-Tag": {ct}}) {
			if tag == "" {
				t.Fatal("empty tag")
			}
		}
	})
}

// TestExactBans: bans of one path in one distribution (an unsafe
// method's) cover that path's entries fetched before them, in that
// distribution only, however many were made; bans from before the
// longest lifetime stored are dropped.
func TestExactBans(t *testing.T) {
	s := newTestStore(t, 8<<20)
	s.maxLife.Store(int64(time.Hour)) // as if an hour-long entry were stored: bans matter that long
	mk := func(dist, path string) *Entry {
		return &Entry{Status: 200, Body: make([]byte, 10), Seq: s.Seq(), ResponseTime: time.Now(), Fresh: time.Hour, Dist: dist, Path: path}
	}
	old := mk("d", "/hit")        // fetched before every ban below
	other := mk("e", "/items/7")  // another distribution
	target := mk("d", "/items/7") // the one the ban names
	for i := range 20000 {
		s.Invalidate(Ban{Dist: "d", Path: fmt.Sprintf("/items/%d/x", i)})
	}
	s.Invalidate(Ban{Dist: "d", Path: "/items/7"})
	later := mk("d", "/items/7") // fetched after it
	for _, c := range []struct {
		name string
		e    *Entry
		want bool
	}{
		{"older entry of another path", old, false},
		{"same path, other distribution", other, false},
		{"the banned path", target, true},
		{"fetched after the ban", later, false},
	} {
		if got := s.Banned(c.e); got != c.want {
			t.Errorf("%s: banned %v, want %v", c.name, got, c.want)
		}
	}
	if st := s.Stats(); st.Bans != 20001 {
		t.Errorf("%d bans held, want 20001", st.Bans)
	}
	if n := len(*s.bans.Load()); n != 0 {
		t.Errorf("%d exact bans in the scanned list", n)
	}
	// Globs, tags, hosts and bans across distributions stay in the list.
	s.Invalidate(Ban{Dist: "d", Path: "/items/*"}, Ban{Tag: "t"}, Ban{Dist: "d", Host: "h", Path: "/a"}, Ban{Path: "/b"})
	if n := len(*s.bans.Load()); n != 4 {
		t.Errorf("%d list bans, want 4", n)
	}
	// Past the horizon (nothing stored lives longer than 1 ns now), the
	// next additions sweep the old ones out.
	s.maxLife.Store(1)
	time.Sleep(time.Millisecond)
	for i := range 40000 {
		s.Invalidate(Ban{Dist: "d", Path: fmt.Sprintf("/new/%d", i)})
	}
	if n := s.exact.n.Load(); n >= 40000 {
		t.Errorf("%d exact bans held after the sweep, want fewer than 40000", n)
	}
}

// BenchmarkGetWithExactBans: a hit's lookup with 10,000 unsafe-method bans
// made after it was stored (the ban list scanned them all: ~79 µs per
// lookup, against ~150 ns with exact bans in their map).
func BenchmarkGetWithExactBans(b *testing.B) {
	s := newTestStore(b, 8<<20)
	s.Set("/hit", &Entry{Status: 200, Body: make([]byte, 10), Seq: s.Seq(), ResponseTime: time.Now(), Fresh: time.Hour, Dist: "d", Path: "/hit"})
	s.Wait()
	for i := range 10000 {
		s.Invalidate(Ban{Dist: "d", Path: fmt.Sprintf("/items/%d", i)})
	}
	b.ResetTimer()
	for range b.N {
		if _, ok := s.Get("/hit"); !ok {
			b.Fatal("miss")
		}
	}
}

// TestExactBansOverflow: past maxExactBans live exact bans, each
// distribution's are replaced by a ban of all its earlier entries.
func TestExactBansOverflow(t *testing.T) {
	s := newTestStore(t, 8<<20)
	s.maxLife.Store(int64(time.Hour))
	before := &Entry{Seq: s.Seq(), Dist: "d", Path: "/kept-until-overflow"}
	otherDist := &Entry{Seq: s.Seq(), Dist: "e", Path: "/x"}
	for i := range maxExactBans {
		s.Invalidate(Ban{Dist: "d", Path: fmt.Sprintf("/u/%d", i)})
	}
	if s.Banned(before) {
		t.Fatal("an unrelated path was banned before the overflow")
	}
	for i := range maxExactBans + 1 {
		s.Invalidate(Ban{Dist: "d", Path: fmt.Sprintf("/v/%d", i)})
	}
	if n := s.exact.n.Load(); n > maxExactBans {
		t.Errorf("%d exact bans held, more than %d", n, maxExactBans)
	}
	after := &Entry{Seq: s.Seq(), Dist: "d", Path: "/kept-until-overflow"}
	if !s.Banned(before) || s.Banned(after) || s.Banned(otherDist) {
		t.Errorf("after the overflow: earlier entry banned %v (want true), later %v (want false), other distribution %v (want false)",
			s.Banned(before), s.Banned(after), s.Banned(otherDist))
	}
}

// TestStoredHeader: hop-by-hop and Connection-listed fields go, the rest
// is copied; appending to one copied field changes neither another field
// nor the original header.
func TestStoredHeader(t *testing.T) {
	h := http.Header{
		"Content-Type":      {"text/plain"},
		"Cache-Control":     {"max-age=60", "public"},
		"Set-Cookie":        {"a=1", "b=2"},
		"Connection":        {"keep-alive, X-Secret"},
		"X-Secret":          {"s"},
		"Keep-Alive":        {"timeout=5"},
		"Transfer-Encoding": {"chunked"},
		"Age":               {"3"},
		"Etag":              {`"v1"`},
	}
	want := http.Header{
		"Content-Type":  {"text/plain"},
		"Cache-Control": {"max-age=60", "public"},
		"Set-Cookie":    {"a=1", "b=2"},
		"Etag":          {`"v1"`},
	}
	got := StoredHeader(h)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("StoredHeader = %v, want %v", got, want)
	}
	for k := range got {
		got[k] = append(got[k], "added")
	}
	for k, vs := range want {
		if n := len(got[k]); n != len(vs)+1 {
			t.Errorf("%s: %d values after one append, want %d", k, n, len(vs)+1)
		}
		for i, v := range vs {
			if got[k][i] != v {
				t.Errorf("%s[%d] = %q after appends to the other fields, want %q", k, i, got[k][i], v)
			}
		}
		if !reflect.DeepEqual(h[k], vs) {
			t.Errorf("original %s changed: %v", k, h[k])
		}
	}
}

// newTestStore returns a store of maxBytes, closed when the test ends.
func newTestStore(tb testing.TB, maxBytes int64) *Store {
	tb.Helper()
	s, err := New(Options{MaxBytes: maxBytes})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}
