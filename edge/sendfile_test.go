package edge

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/edgestack/edgestack/edge/cache"
)

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc")
	}
	return len(ents)
}

// blobFDs counts this process's open descriptors whose target starts with
// prefix (a memfd's name, or a directory for O_TMPFILE copies).
func blobFDs(t *testing.T, prefix string) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc")
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, prefix) {
			n++
		}
	}
	return n
}

// TestSendfileLargeHits: large cached bodies are served by sendfile from
// a memfd, or from an unnamed file in cache.sendfile_dir, byte for byte,
// and those files close when the objects leave; bodies above
// sendfile_max_size get no copy and are written from memory.
func TestSendfileLargeHits(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile path is Linux only")
	}
	bodies := map[string][]byte{}
	// The last is above the 768 KiB bound where the machine's measured
	// default sets one.
	sizes := []int{64 << 10, 300 << 10, 700 << 10, 1 << 20}
	withCopy := 0
	max := defaultSendfileMax()
	for i, n := range sizes {
		if Size(n) >= defaultSendfileMin() && (max == 0 || Size(n) <= max) {
			withCopy++
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rand.IntN(256))
		}
		bodies[fmt.Sprintf("/big%d", i)] = b
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, dir, fdPrefix string
	}{
		{"memfd", "", "/memfd:edged-object"},
		{"sendfile_dir", dir, dir + "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := cache.CheckBlobDir(tc.dir); err != nil {
				t.Skip(err) // a filesystem without O_TMPFILE
			}
			o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				w.Write(bodies[r.URL.Path])
			})
			cfg := oneOrigin(o, "")
			if tc.dir != "" {
				cfg = "listeners:\n  - address: 127.0.0.1:0\ncache:\n  max_size: 64MiB\n  max_object_size: 1MiB\n  sendfile_dir: " + tc.dir + "\n" + cfg
			}
			te := startEdge(t, cfg, nil)
			before := blobFDs(t, tc.fdPrefix)
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
			filled := blobFDs(t, tc.fdPrefix)
			if filled < before+withCopy {
				t.Errorf("copies under %s: %d open, %d before filling; want %d more", tc.fdPrefix, filled, before, withCopy)
			}
			te.svc.Store().Purge()
			te.wait()
			if n := blobFDs(t, tc.fdPrefix); n != filled-withCopy {
				t.Errorf("copies not closed after purge: %d open, %d with the objects cached", n, filled)
			}
		})
	}
}

// TestSendfileDirChecked: a sendfile_dir that cannot hold the copies is
// refused, naming the field, by Validate (not a directory, relative) or
// at start (no O_TMPFILE there).
func TestSendfileDirChecked(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"relative/dir", "/no/such/dir", file} {
		cfg := DefaultConfig()
		cfg.Cache.SendfileDir = dir
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "cache.sendfile_dir") {
			t.Errorf("sendfile_dir %q: Validate = %v; want an error naming cache.sendfile_dir", dir, err)
		}
	}
	if runtime.GOOS == "linux" {
		// /proc is a directory where no file can be made.
		if err := cache.CheckBlobDir("/proc"); err == nil {
			t.Error("CheckBlobDir(/proc) succeeded")
		}
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
