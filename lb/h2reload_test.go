package lb

import (
	"crypto/tls"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
	"golang.org/x/net/http2"
)

// TestHTTP2ConfigReload: a reload that changes the http2 section applies
// to the https listeners it keeps (a new server on the same socket), and
// a connection opened before it still gets its answers.
func TestHTTP2ConfigReload(t *testing.T) {
	b := newBackend(t, "b", nil)
	cert, key, _ := writeCert(t, t.TempDir(), "one", "one.test")
	listen := "127.0.0.1:" + render(t, `{{port "secure"}}`, nil)
	config := func(server string, streams int) string {
		return httpsConfig(listen, "{server: "+server+", max_concurrent_streams: "+strconv.Itoa(streams)+"}", b.addr, [2]string{cert, key})
	}
	h := startLB(t, config("edgestack", 100))
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "one.test"}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	get := func(what string) {
		t.Helper()
		resp, err := client.Get("https://" + listen + "/")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("%s: %s %d", what, resp.Proto, resp.StatusCode)
		}
	}
	get("before the reloads") // a connection kept across them
	for _, c := range []struct {
		server  string
		streams uint32
	}{{"edgestack", 7}, {"net/http", 9}, {"edgestack", 11}} {
		if err := h.reload(config(c.server, int(c.streams))); err != nil {
			t.Fatal(err)
		}
		if got := apptest.H2Settings(t, listen, "one.test")[http2.SettingMaxConcurrentStreams]; got != c.streams {
			t.Errorf("after a reload to %s with %d streams: a new connection is told %d", c.server, c.streams, got)
		}
		get("after the reload to " + c.server)
	}
}
