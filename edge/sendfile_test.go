package edge

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc")
	}
	return len(ents)
}

// TestSendfileLargeHits: large cached bodies are served by sendfile from a
// memfd, byte for byte, and the memfds close when the objects leave; bodies
// above sendfile_max_size get no memfd and are written from memory.
func TestSendfileLargeHits(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile path is Linux only")
	}
	bodies := map[string][]byte{}
	// The last is above the 768 KiB bound where the machine's measured
	// default sets one.
	sizes := []int{64 << 10, 300 << 10, 700 << 10, 1 << 20}
	withMemfd := 0
	max := defaultSendfileMax()
	for i, n := range sizes {
		if Size(n) >= defaultSendfileMin() && (max == 0 || Size(n) <= max) {
			withMemfd++
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rand.IntN(256))
		}
		bodies[fmt.Sprintf("/big%d", i)] = b
	}
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write(bodies[r.URL.Path])
	})
	te := startEdge(t, oneOrigin(o, ""), nil)
	before := openFDs(t)
	for p, b := range bodies {
		for i, want := range []string{"Miss", "Hit", "Hit"} {
			r := te.get(p)
			if r.xcache() != want || !bytes.Equal([]byte(r.body), b) {
				t.Errorf("%s #%d: %s, %d bytes, equal %v", p, i, r.xcache(), len(r.body), bytes.Equal([]byte(r.body), b))
			}
			if r := te.do("HEAD", p); r.code != 200 || r.body != "" || r.header.Get("Content-Length") != fmt.Sprint(len(b)) {
				t.Errorf("HEAD %s: %d %q", p, r.code, r.header.Get("Content-Length"))
			}
			te.wait()
		}
	}
	filled := openFDs(t)
	if filled < before+withMemfd {
		t.Errorf("memfds: %d open, %d before filling", filled, before)
	}
	te.svc.Store().Purge()
	te.wait()
	if n := openFDs(t); n != filled-withMemfd {
		t.Errorf("memfds not closed after purge: %d open, %d with the objects cached", n, filled)
	}
}

// TestDefaultSendfileMin: the default threshold follows the kernel's
// Meltdown mitigation.
func TestDefaultSendfileMin(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	dir := t.TempDir()
	defer func(f string) { meltdownFile = f }(meltdownFile)
	for _, c := range []struct {
		content string
		want    Size
	}{
		{"Mitigation: PTI\n", 160 << 10},
		{"Not affected\n", 64 << 10},
		{"Vulnerable\n", 64 << 10},
		{"", 64 << 10}, // no such file
	} {
		meltdownFile = filepath.Join(dir, "missing")
		if c.content != "" {
			meltdownFile = filepath.Join(dir, "meltdown")
			os.WriteFile(meltdownFile, []byte(c.content), 0o644)
		}
		if got := defaultSendfileMin(); got != c.want {
			t.Errorf("%q: %d, want %d", c.content, got, c.want)
		}
	}
}

// TestDefaultSendfileMax: the measurement runs, decides for one of the two
// bounds, and runs once per process.
func TestDefaultSendfileMax(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	for i := 0; i < 3; i++ {
		wins, err := sendfileWins(256<<10, 3)
		if err != nil {
			t.Fatalf("measuring: %v", err)
		}
		t.Logf("sendfile of 256 KiB cheaper than a write: %v", wins)
	}
	got := defaultSendfileMax()
	if got != 0 && got != 768<<10 {
		t.Fatalf("default %d, want 0 or 768 KiB", got)
	}
	if again := defaultSendfileMax(); again != got {
		t.Errorf("measured again: %d then %d", got, again)
	}
	if cfg := DefaultConfig(); cfg.Cache.SendfileMaxSize != got {
		t.Errorf("DefaultConfig has %d, measured %d", cfg.Cache.SendfileMaxSize, got)
	}
}
