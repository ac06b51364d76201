package h2

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCurlEarlyAnswer: curl, a client people use, gets an answer sent
// before it finished uploading (a 413, an origin's early error), followed
// by RST_STREAM NO_ERROR. curl 7.88 (Debian 12) fails such a stream with
// error 92 when the RST_STREAM arrives in the same TLS record as the
// response's END_STREAM, so the server writes the response first.
func TestCurlEarlyAnswer(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	if v, err := exec.Command(curl, "-V").Output(); err != nil || !bytes.Contains(v, []byte("HTTP2")) {
		t.Skip("curl without HTTP/2")
	}
	cert, _ := selfSigned(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge) // the body unread
	})}, tlsHandshake(cfg))
	upload := filepath.Join(t.TempDir(), "upload")
	if err := os.WriteFile(upload, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		out, err := exec.Command(curl, "-ksS", "--http2", "--max-time", "10", "-X", "POST",
			"--data-binary", "@"+upload, "-o", os.DevNull, "-w", "%{http_version} %{http_code}",
			"https://"+ts.addr+"/").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "2 413" {
			t.Fatalf("curl run %d: %v: %s (want 2 413)", i, err, out)
		}
	}
}
