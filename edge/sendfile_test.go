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
	"github.com/edgestack/edgestack/internal/config"
	"go.yaml.in/yaml/v3"
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
	// The last is above the 768 KiB bound where the machine's memfd
	// measurement sets one (copies in sendfile_dir have no bound).
	sizes := []int{64 << 10, 300 << 10, 700 << 10, 1 << 20}
	for i, n := range sizes {
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
			withCopy, max := 0, CacheConfig{SendfileMaxSize: SizeAuto, SendfileDir: tc.dir}.sendfileMax()
			for _, n := range sizes {
				if Size(n) >= defaultSendfileMin() && (max == 0 || Size(n) <= max) {
					withCopy++
				}
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

// TestSendfileMaxAuto: cache.sendfile_max_size defaults to auto, which is
// no bound for copies in sendfile_dir and the memfd measurement (one of
// its two bounds, taken once per process) otherwise; a size given wins;
// "auto" is refused for sizes that have no automatic value.
func TestSendfileMaxAuto(t *testing.T) {
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
	measured := memfdSendfileMax()
	if measured != 0 && measured != 768<<10 {
		t.Fatalf("memfd bound %d, want 0 or 768 KiB", measured)
	}
	if again := memfdSendfileMax(); again != measured {
		t.Errorf("measured again: %d then %d", measured, again)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml string
		want       Size
		err        string
	}{
		{"default, memfd", "", measured, ""},
		{"default, dir", "sendfile_dir: " + dir, 0, ""},
		{"auto, dir", "sendfile_dir: " + dir + "\n  sendfile_max_size: auto", 0, ""},
		{"given, dir", "sendfile_dir: " + dir + "\n  sendfile_max_size: 512KiB", 512 << 10, ""},
		{"given 0, memfd", "sendfile_max_size: 0", 0, ""},
		{"auto elsewhere", "max_object_size: auto", 0, "test.yaml:4"},
		{"below the minimum", "sendfile_max_size: 1KiB", 0, "cache.sendfile_max_size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			text := "listeners:\n  - address: 127.0.0.1:0\ncache:\n  " + tc.yaml + "\n" +
				"distributions:\n  - name: d\n    domains: [\"*\"]\n    origins: [{name: o, url: \"http://127.0.0.1:9\"}]\n    default_behavior: {origin: o}\n"
			_, err := config.Decode("test.yaml", []byte(text), cfg)
			if err == nil {
				err = cfg.Validate()
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Cache.sendfileMax(); got != tc.want {
				t.Errorf("sendfile bound %v, want %v", got, tc.want)
			}
		})
	}
	if out, err := yaml.Marshal(DefaultConfig().Cache); err != nil || !strings.Contains(string(out), "sendfile_max_size: auto") {
		t.Errorf("default printed as %q (%v), want sendfile_max_size: auto", out, err)
	}
}
