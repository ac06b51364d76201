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
	"time"

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

// blobContents reads the files behind this process's open descriptors
// whose target starts with prefix (blobFDs's), keyed by content.
func blobContents(t *testing.T, prefix string) map[string]int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc")
	}
	got := map[string]int{}
	for _, e := range ents {
		p := "/proc/self/fd/" + e.Name()
		if target, err := os.Readlink(p); err != nil || !strings.HasPrefix(target, prefix) {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		got[string(b)]++
	}
	return got
}

// TestSendfileLargeHits: large cached bodies are served by sendfile from
// a memfd, or from an unnamed file in cache.sendfile_dir, byte for byte,
// and those files close when the objects leave; bodies above
// sendfile_max_size get no copy and are written from memory. The copies
// are made while the bodies arrive, of a known length (Content-Length)
// and of an unknown one (chunked), and hold exactly the bodies.
func TestSendfileLargeHits(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile path is Linux only")
	}
	bodies := map[string][]byte{}
	// The last is above the 768 KiB bound where the machine's memfd
	// measurement sets one (copies in sendfile_dir have no bound).
	sizes := []int{64 << 10, 300 << 10, 700 << 10, 1 << 20}
	for i, n := range sizes {
		for _, prefix := range []string{"/big", "/len"} {
			b := make([]byte, n)
			for j := range b {
				b[j] = byte(rand.IntN(256))
			}
			bodies[fmt.Sprintf("%s%d", prefix, i)] = b
		}
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
			max := CacheConfig{SendfileMaxSize: SizeAuto, SendfileDir: tc.dir}.sendfileMax()
			copied := map[string]bool{}
			for _, b := range bodies {
				if n := Size(len(b)); n >= defaultSendfileMin() && (max == 0 || n <= max) {
					copied[string(b)] = true
				}
			}
			withCopy := len(copied)
			o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				if strings.HasPrefix(r.URL.Path, "/len") {
					w.Header().Set("Content-Length", fmt.Sprint(len(bodies[r.URL.Path])))
				}
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
			contents := blobContents(t, tc.fdPrefix)
			for b := range copied {
				if contents[b] != 1 {
					t.Errorf("%d copies of a %d-byte body, want 1", contents[b], len(b))
				}
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

// blobFile finds the one open copy under prefix and reads it; "" and
// false when there is none, or more than one.
func blobFile(t *testing.T, prefix string) (string, bool) {
	contents := blobContents(t, prefix)
	if len(contents) != 1 {
		return "", false
	}
	for b, n := range contents {
		return b, n == 1
	}
	return "", false
}

// TestStreamedMissCopiedWhileFilling: a body streamed to its viewer is
// written to its sendfile copy as it arrives, not in one go once it is
// complete: while the origin holds back the rest, the copy already holds
// the first part but for at most blobBatch bytes. Of a known length and
// of an unknown one; once stored, the copy holds exactly the body.
func TestStreamedMissCopiedWhileFilling(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sendfile path is Linux only")
	}
	dir := t.TempDir()
	if err := cache.CheckBlobDir(dir); err != nil {
		t.Skip(err) // a filesystem without O_TMPFILE
	}
	const size, first = 1600 << 10, 1 << 20
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			o := newSlowOrigin(t, streamBody(size), "application/octet-stream", first, false)
			o.chunked = chunked
			prefix := filepath.Join(dir, fmt.Sprint(chunked))
			if err := os.Mkdir(prefix, 0o755); err != nil {
				t.Fatal(err)
			}
			te := startEdge(t, "listeners:\n  - address: 127.0.0.1:0\ncache:\n  max_size: 64MiB\n  max_object_size: 2MiB\n  sendfile_min_size: 64KiB\n  sendfile_dir: "+prefix+"\n"+oneOrigin(o.testOrigin, ""), nil)
			resp, err := client.Get(te.base + "/big")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got := readWithin(t, resp.Body, first, 10*time.Second); !bytes.Equal(got, o.body[:first]) {
				t.Fatal("the first part differs from the origin's")
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				b, ok := blobFile(t, prefix+"/")
				if ok && len(b) > first-blobBatch && len(b) <= first && b == string(o.body[:len(b)]) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("while the origin holds the rest: the copy holds %d bytes (one copy: %v, the body's first: %v), want more than the first %d", len(b), ok, b == string(o.body[:min(len(b), size)]), first-blobBatch)
				}
				time.Sleep(5 * time.Millisecond)
			}
			close(o.release)
			expectRest(t, "viewer", resp.Body, o.body[first:])
			te.wait()
			if b, ok := blobFile(t, prefix+"/"); !ok || b != string(o.body) {
				t.Errorf("stored: one copy %v, of %d bytes; want the %d-byte body", ok, len(b), size)
			}
			if r := te.get("/big"); r.xcache() != "Hit" || r.body != string(o.body) {
				t.Errorf("hit: %s, %d bytes", r.xcache(), len(r.body))
			}
		})
	}
}
