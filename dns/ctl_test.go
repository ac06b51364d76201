package dnsserver

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgestack/edgestack/internal/ctl"
)

// TestEdgectlDNS drives a real dnsd with edgectl dns commands.
func TestEdgectlDNS(t *testing.T) {
	srv := start(t, testConfig(t))
	dir := t.TempDir()
	env := map[string]string{"EDGECTL_DNSD": srv.adminURL, "EDGECTL_TOKEN": testToken}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := ctl.Main(context.Background(), []ctl.Group{ctl.DNS()}, append([]string{"dns"}, args...), env, &out, &errb)
		return code, out.String(), errb.String()
	}
	batch := filepath.Join(dir, "batch.yaml")
	os.WriteFile(batch, []byte(`comment: first
changes:
  - action: CREATE
    rrset: {name: www.ctl.test., type: A, ttl: 60, records: [192.0.2.1]}
`), 0o644)
	badBatch := filepath.Join(dir, "bad.json")
	os.WriteFile(badBatch, []byte(`{"changes":[{"action":"CREATE","rrset":{"name":"www.ctl.test.","type":"A","ttl":60,"records":["192.0.2.1"]}}]}`), 0o644)
	check := filepath.Join(dir, "check.yaml")
	os.WriteFile(check, []byte("kind: tcp\naddress: 127.0.0.1:1\ninterval: 1s\n"), 0o644)
	type step struct {
		args    []string
		code    int
		outWant string
	}
	for _, st := range []step{
		{[]string{"zones", "create", "ctl.test", "-ns", "ns1.ctl.test."}, 0, "created ctl.test"},
		{[]string{"zones", "list"}, 0, "ctl.test."},
		{[]string{"change", "ctl.test", "-file", batch}, 0, "INSYNC"},
		{[]string{"change", "ctl.test", "-file", badBatch}, 1, ""},
		{[]string{"records", "ctl.test."}, 0, "192.0.2.1"},
		{[]string{"export", "ctl.test"}, 0, "www.ctl.test.\t60\tIN\tA\t192.0.2.1"},
		{[]string{"healthchecks", "create", "web", "-file", check}, 0, "created web"},
		{[]string{"healthchecks"}, 0, "web"},
		{[]string{"healthchecks", "delete", "web"}, 0, "deleted web"},
		{[]string{"change", "ctl.test"}, 2, ""},
		{[]string{"zones", "delete", "ctl.test"}, 0, "deleted"},
		{[]string{"zones", "delete", "ctl.test"}, 1, ""},
	} {
		code, out, errOut := run(st.args...)
		if code != st.code || !strings.Contains(out, st.outWant) {
			t.Errorf("edgectl dns %v: code %d (want %d), out %q, err %q", st.args, code, st.code, out, errOut)
		}
		if code == 1 && !strings.Contains(errOut, "edgectl dns") {
			t.Errorf("edgectl dns %v: failure without a message: %q", st.args, errOut)
		}
	}
}
