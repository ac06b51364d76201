package edge

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAccessLog(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "hello")
	})
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	te := startEdge(t, "access_log: {path: "+logPath+", format: combined}\n"+oneOrigin(o, ""), nil)
	te.get("/a", "User-Agent: test-agent", "Referer: http://r.test/")
	te.wait()
	te.get("/a", "User-Agent: test-agent")                  // fast path hit
	te.get("/a", "If-None-Match: \"x\"", "User-Agent: ua2") // handler hit
	var lines []string
	waitFor(t, func() bool {
		b, _ := os.ReadFile(logPath)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(lines) == 3
	})
	for i, want := range []string{
		`"GET /a HTTP/1.1" 200 5 "http://r.test/" "test-agent" duration_ms=`,
		`"GET /a HTTP/1.1" 200 5 "-" "test-agent" duration_ms=`,
		`"GET /a HTTP/1.1" 200 5 "-" "ua2" duration_ms=`,
	} {
		if !strings.HasPrefix(lines[i], "127.0.0.1 - - [") || !strings.Contains(lines[i], want) {
			t.Errorf("line %d: %s\nwant %s", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[0], "cache=Miss upstream=o upstream_status=200 upstream_bytes=5") {
		t.Errorf("miss line lacks the upstream leg: %s", lines[0])
	}
	for _, l := range lines[1:] {
		if !strings.Contains(l, "cache=Hit") || strings.Contains(l, "upstream=") {
			t.Errorf("hit line: %s", l)
		}
	}
	_ = time.Second
}
