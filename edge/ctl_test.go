package edge

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/edgestack/edgestack/internal/ctl"
)

// TestEdgectlFanOut drives `edgectl cdn invalidate` across two edges.
func TestEdgectlFanOut(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Surrogate-Key", "k-"+strings.Trim(r.URL.Path, "/"))
		fmt.Fprint(w, r.URL.Path)
	})
	edges := []*testEdge{startEdge(t, oneOrigin(o, ""), nil), startEdge(t, oneOrigin(o, ""), nil)}
	for _, te := range edges {
		for _, p := range []string{"/a", "/img/1", "/img/2", "/t"} {
			te.get(p)
		}
		te.wait()
	}
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := ctl.Main(context.Background(), ctl.Groups(), args, map[string]string{"EDGECTL_TOKEN": testToken}, &out, &errb)
		return code, out.String() + errb.String()
	}
	targets := edges[0].adm + "," + edges[1].adm
	code, out := run("cdn", "invalidate", "-edged", targets, "-tags", "k-t", "/a", "/img/*")
	if code != 0 || strings.Count(out, "Completed") != 2 {
		t.Fatalf("invalidate: %d\n%s", code, out)
	}
	for i, te := range edges {
		for p, want := range map[string]string{"/a": "Miss", "/img/1": "Miss", "/img/2": "Miss", "/t": "Miss"} {
			if r := te.get(p); r.xcache() != want {
				t.Errorf("edge %d %s: %s, want %s", i, p, r.xcache(), want)
			}
		}
	}
	code, out = run("cdn", "stats", "-edged", targets)
	if code != 0 || strings.Count(out, "hit ratio") != 2 {
		t.Errorf("stats: %d\n%s", code, out)
	}
	code, out = run("cdn", "distributions", "-edged", edges[0].adm)
	if code != 0 || !strings.Contains(out, "default -> o") {
		t.Errorf("distributions: %d\n%s", code, out)
	}
	if code, out = run("cdn", "invalidate", "-edged", targets); code != 2 {
		t.Errorf("no paths: %d %s", code, out)
	}
	var out2, errb bytes.Buffer
	if code := ctl.Main(context.Background(), ctl.Groups(), []string{"cdn", "invalidate", "-edged", targets, "/a"}, map[string]string{}, &out2, &errb); code != 1 {
		t.Errorf("no token: %d %s", code, errb.String())
	}
}
