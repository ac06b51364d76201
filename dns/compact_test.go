package dnsserver

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgestack/edgestack/dns/store"
)

// TestJournalCompaction makes more than 2 × maxJournal changes to an API
// zone and to a file zone, then restarts dnsd twice on the same storage:
// the first restart squashes all but the newest maxJournal batches of each
// zone into one, and both restarts serve exactly what was served before
// (same records, same serial), deletions included.
func TestJournalCompaction(t *testing.T) {
	defer func(n int) { maxJournal = n }(maxJournal)
	maxJournal = 3 // squashed above 6 stored batches
	storage := filepath.Join(t.TempDir(), "dnsd.db")
	cfgFor := func() *Config {
		cfg := testConfig(t)
		cfg.Storage = storage
		return cfg
	}
	exports := func(t *testing.T, srv *testServer) map[string]string {
		out := map[string]string{}
		for _, z := range []string{"api.test", "example.test"} {
			code, body := call(t, srv.adminURL, "GET", "/v1/zones/"+z+"/export", nil, nil)
			if code != 200 {
				t.Fatalf("export %s: %d %s", z, code, body)
			}
			// The first line is a comment with the export's time.
			_, out[z], _ = strings.Cut(body, "\n")
		}
		return out
	}
	stored := func(t *testing.T) map[string]int {
		st, err := store.Open(storage)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		zs, err := st.Zones()
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, z := range zs {
			n[strings.TrimSuffix(z.Name, ".")] = len(z.Batches)
		}
		return n
	}
	apply := func(t *testing.T, srv *testServer, z string, cs ...Change) {
		t.Helper()
		if code, body := call(t, srv.adminURL, "POST", "/v1/zones/"+z+"/changes", ChangeBatch{Changes: cs}, nil); code != 200 {
			t.Fatalf("%s %+v: %d %s", z, cs, code, body)
		}
	}
	txt := func(name, v string) RRSet {
		return RRSet{Name: name, Type: "TXT", TTL: 60, Records: []string{`"` + v + `"`}}
	}
	w1, w2 := 1, 2

	var before map[string]string
	t.Run("changes", func(t *testing.T) {
		srv := start(t, cfgFor())
		if code, body := call(t, srv.adminURL, "POST", "/v1/zones", CreateZone{Name: "api.test"}, nil); code != 201 {
			t.Fatalf("create zone: %d %s", code, body)
		}
		for i := range 9 {
			apply(t, srv, "api.test", Change{"UPSERT", a("www.api.test.", 60, fmt.Sprintf("192.0.2.%d", i+1))})
			apply(t, srv, "example.test", Change{"UPSERT", txt("acme.example.test.", fmt.Sprint("token-", i))})
		}
		apply(t, srv, "api.test", Change{"CREATE", txt("gone.api.test.", "x")}, Change{"CREATE", a("kept.api.test.", 60, "192.0.2.50")})
		apply(t, srv, "api.test",
			Change{"CREATE", RRSet{Name: "w.api.test.", Type: "A", TTL: 60, Records: []string{"192.0.2.61"}, SetIdentifier: "one", Weight: &w1}},
			Change{"CREATE", RRSet{Name: "w.api.test.", Type: "A", TTL: 60, Records: []string{"192.0.2.62"}, SetIdentifier: "two", Weight: &w2}})
		apply(t, srv, "api.test", Change{"DELETE", txt("gone.api.test.", "x")})
		apply(t, srv, "api.test", Change{"DELETE", RRSet{Name: "w.api.test.", Type: "A", TTL: 60, Records: []string{"192.0.2.62"}, SetIdentifier: "two", Weight: &w2}})
		// The file zone: a record from the file deleted, one added and
		// then deleted.
		apply(t, srv, "example.test", Change{"CREATE", txt("tmp.example.test.", "y")})
		apply(t, srv, "example.test", Change{"DELETE", txt("tmp.example.test.", "y")})
		for i := 10; i < 13; i++ { // newer than what gets squashed
			apply(t, srv, "api.test", Change{"UPSERT", a("www.api.test.", 60, fmt.Sprintf("192.0.2.%d", i+1))})
			apply(t, srv, "example.test", Change{"UPSERT", txt("acme.example.test.", fmt.Sprint("token-", i))})
		}
		before = exports(t, srv)
	})
	if t.Failed() {
		return
	}
	if n := stored(t); n["api.test"] != 16 || n["example.test"] != 14 {
		t.Fatalf("stored batches before the restart: %v", n)
	}
	for _, want := range []string{"www.api.test.\t60\tIN\tA\t192.0.2.13", "kept.api.test.", "192.0.2.61"} {
		if !strings.Contains(before["api.test"], want) {
			t.Fatalf("api.test lacks %q:\n%s", want, before["api.test"])
		}
	}
	for _, gone := range []string{"gone.api.test.", "192.0.2.62"} {
		if strings.Contains(before["api.test"], gone) {
			t.Fatalf("api.test still has %q:\n%s", gone, before["api.test"])
		}
	}
	for i := range 2 {
		t.Run(fmt.Sprint("restart", i+1), func(t *testing.T) {
			srv := start(t, cfgFor())
			after := exports(t, srv)
			for z := range before {
				if after[z] != before[z] {
					t.Errorf("%s after restart %d:\n%s\nbefore:\n%s", z, i+1, after[z], before[z])
				}
			}
		})
		if n := stored(t); n["api.test"] != maxJournal+1 || n["example.test"] != maxJournal+1 {
			t.Errorf("stored batches after restart %d: %v, want %d each (one squashed + the newest %d)", i+1, n, maxJournal+1, maxJournal)
		}
	}
	t.Run("changes after compaction", func(t *testing.T) {
		srv := start(t, cfgFor())
		apply(t, srv, "api.test", Change{"DELETE", a("kept.api.test.", 60, "192.0.2.50")})
		r := query(t, srv.Addr(), "kept.api.test.", 1)
		if r.Rcode != 3 {
			t.Errorf("kept.api.test. after its DELETE: rcode %d", r.Rcode)
		}
	})
}

// TestRemoveIsInternal: the API refuses the squashed journal's REMOVE.
func TestRemoveIsInternal(t *testing.T) {
	srv := start(t, testConfig(t))
	code, body := call(t, srv.adminURL, "POST", "/v1/zones/example.test/changes",
		ChangeBatch{Changes: []Change{{"REMOVE", a("www.example.test.", 60, "192.0.2.1")}}}, nil)
	if code != 400 || !strings.Contains(body, `changes[0]: action \"REMOVE\"`) {
		t.Errorf("%d %s", code, body)
	}
}
