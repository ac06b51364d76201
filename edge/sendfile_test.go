package edge

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
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
	sizes := []int{64 << 10, 300 << 10, 700 << 10, 1 << 20} // the last is above the 768 KiB default bound
	withMemfd := 3
	for i, n := range sizes {
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
