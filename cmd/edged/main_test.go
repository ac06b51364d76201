package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/edgestack/edgestack/internal/apptest"
)

func TestConformance(t *testing.T) {
	apptest.Conformance(t, apptest.Case{
		Package: "github.com/edgestack/edgestack/cmd/edged",
		Name:    "edged",
		Files: map[string]string{
			"site/index.html": "<h1>hello from the bucket</h1>\n",
			"site/404.html":   "not here\n",
		},
		Good: `admin:
  listen: {{.Admin}}
  token: {{.Token}}
listeners:
  - name: http
    address: 127.0.0.1:{{port "http"}}
cache:
  max_size: 16MiB
  max_object_size: 1MiB
distributions:
  - name: site
    domains: ["*"]
    origins:
      - name: bucket
        bucket:
          dir: {{.Dir}}/site
          error_document: 404.html
    default_behavior:
      origin: bucket
      compress: true
`,
		Bad: `admin:
  listen: {{.Admin}}
listeners:
  - address: 127.0.0.1:{{port "http"}}
distributions:
  - name: site
    domains: ["*"]
    origins:
      - name: bucket
        bucket:
          dir: {{.Dir}}/no-such-folder
    default_behavior:
      origin: nowhere
      viewer_protocol: sometimes
`,
		BadWant: []string{
			"cfg.yaml:11: distributions[0].origins[0].bucket.dir",
			"cfg.yaml:13: distributions[0].default_behavior.origin",
			"cfg.yaml:14: distributions[0].default_behavior.viewer_protocol",
		},
		Serving: func(t *testing.T, ports map[string]string) {
			base := "http://127.0.0.1:" + ports["http"]
			for i, want := range []string{"Miss", "Hit"} {
				resp, err := http.Get(base + "/")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(string(body), "hello from the bucket") {
					t.Fatalf("GET / #%d: %d %q", i, resp.StatusCode, body)
				}
				if xc := resp.Header.Get("X-Cache"); i == 1 && !strings.HasPrefix(xc, want) && !strings.HasPrefix(xc, "Hit") {
					t.Errorf("GET / #%d: X-Cache %q, want %s", i, xc, want)
				}
			}
			resp, err := http.Get(base + "/missing")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 404 || string(body) != "not here\n" {
				t.Errorf("GET /missing: %d %q, want the error document", resp.StatusCode, body)
			}
		},
	})
}
