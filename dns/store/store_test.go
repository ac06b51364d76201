package store

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/health"
)

func TestStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dnsd.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	z := &Zone{Name: "a.test.", Serial: 7, Created: time.Unix(1, 0).UTC()}
	if err := s.PutZone(z); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{`{"id":"C1"}`, `{"id":"C2"}`} {
		if err := s.AppendBatch(z, []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	// A batch for a file zone creates its record.
	if err := s.AppendBatch(&Zone{Name: "f.test.", File: true}, []byte(`{"id":"C3"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHealthCheck("web", health.CheckConfig{Kind: health.KindTCP, Address: "127.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	zones, err := s.Zones()
	if err != nil || len(zones) != 2 {
		t.Fatalf("zones: %v %v", zones, err)
	}
	for _, z := range zones {
		switch z.Name {
		case "a.test.":
			if len(z.Batches) != 2 || string(z.Batches[0]) != `{"id":"C1"}` || string(z.Batches[1]) != `{"id":"C2"}` || z.Serial != 7 {
				t.Errorf("a.test.: %+v", z)
			}
		case "f.test.":
			if !z.File || len(z.Batches) != 1 {
				t.Errorf("f.test.: %+v", z)
			}
		}
	}
	hc, err := s.HealthChecks()
	if err != nil || hc["web"].Address != "127.0.0.1:80" {
		t.Fatalf("health checks: %v %v", hc, err)
	}
	if err := s.DeleteZone("", "a.test."); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteZone("", "a.test."); err != ErrNotFound {
		t.Fatalf("delete twice: %v", err)
	}
	if err := s.DeleteHealthCheck("nope"); err != ErrNotFound {
		t.Fatalf("delete missing check: %v", err)
	}
}

func TestCompactBatches(t *testing.T) {
	s, err := OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	z := &Zone{Name: "c.test."}
	for i := range 5 {
		if err := s.AppendBatch(z, []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	batches := func() []string {
		zs, err := s.Zones()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, b := range zs[0].Batches {
			out = append(out, string(b))
		}
		return out
	}
	if err := s.CompactBatches("", "c.test.", 6, []byte(`{}`)); err == nil {
		t.Error("compacted 6 of 5 batches")
	}
	if err := s.CompactBatches("", "nope.test.", 1, nil); err == nil {
		t.Error("compacted a zone without batches")
	}
	if got := batches(); len(got) != 5 {
		t.Fatalf("a refused compaction changed the batches: %v", got)
	}
	if err := s.CompactBatches("", "c.test.", 3, []byte(`{"squashed":true}`)); err != nil {
		t.Fatal(err)
	}
	if got, want := batches(), []string{`{"squashed":true}`, `{"n":3}`, `{"n":4}`}; !slices.Equal(got, want) {
		t.Errorf("after compaction: %v, want %v", got, want)
	}
	// New batches still go after the squashed one.
	if err := s.AppendBatch(z, []byte(`{"n":5}`)); err != nil {
		t.Fatal(err)
	}
	if got := batches(); len(got) != 4 || got[0] != `{"squashed":true}` || got[3] != `{"n":5}` {
		t.Errorf("after a new batch: %v", got)
	}
	if err := s.CompactBatches("", "c.test.", 2, nil); err != nil {
		t.Fatal(err)
	}
	if got := batches(); !slices.Equal(got, []string{`{"n":4}`, `{"n":5}`}) {
		t.Errorf("after dropping 2: %v", got)
	}
}
