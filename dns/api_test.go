package dnsserver

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/edgestack/edgestack/internal/health"
	"github.com/miekg/dns"
)

// call sends a JSON request to the admin API and decodes the answer.
func call(t testing.TB, base, method, path string, in, out any) (int, string) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, body)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return resp.StatusCode, string(data)
}

func a(name string, ttl uint32, ips ...string) RRSet {
	return RRSet{Name: name, Type: "A", TTL: ttl, Records: ips}
}

func query(t testing.TB, addr, name string, qt uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qt)
	return exchange(t, "udp", addr, m)
}

func answers(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
	}
	return out
}

func TestChangeAPI(t *testing.T) {
	srv := start(t, testConfig(t))
	base := srv.adminURL
	var z zoneList
	if code, body := call(t, base, "POST", "/v1/zones", CreateZone{Name: "api.test", Nameservers: []string{"ns1.api.test."}}, &z); code != 201 {
		t.Fatalf("create zone: %d %s", code, body)
	}
	if code, _ := call(t, base, "POST", "/v1/zones", CreateZone{Name: "api.test."}, nil); code != 409 {
		t.Fatalf("create twice: %d, want 409", code)
	}
	serial0 := z.Serial

	type step struct {
		name    string
		batch   ChangeBatch
		code    int
		errWant string
	}
	w := 10
	steps := []step{
		{name: "create", batch: ChangeBatch{Changes: []Change{{"CREATE", a("www.api.test.", 60, "192.0.2.1")}, {"CREATE", a("ns1.api.test.", 60, "192.0.2.53")}}}, code: 200},
		{name: "create existing", batch: ChangeBatch{Changes: []Change{{"CREATE", a("mail.api.test.", 60, "192.0.2.9")}, {"CREATE", a("www.api.test.", 60, "192.0.2.2")}}}, code: 409, errWant: "changes[1]: CREATE www.api.test. A: the record set already exists"},
		{name: "replace if unchanged (DELETE then CREATE)", batch: ChangeBatch{Changes: []Change{{"DELETE", a("www.api.test.", 60, "192.0.2.1")}, {"CREATE", a("www.api.test.", 120, "192.0.2.5", "192.0.2.6")}}}, code: 200},
		{name: "replace after a concurrent change", batch: ChangeBatch{Changes: []Change{{"DELETE", a("www.api.test.", 60, "192.0.2.1")}, {"CREATE", a("www.api.test.", 60, "192.0.2.9")}}}, code: 409, errWant: "changes[0]: DELETE www.api.test. A: the values do not match"},
		{name: "CREATE then DELETE of one set", batch: ChangeBatch{Changes: []Change{{"CREATE", a("z.api.test.", 60, "192.0.2.1")}, {"DELETE", a("z.api.test.", 60, "192.0.2.1")}}}, code: 400, errWant: "changes[1]"},
		{name: "delete mismatch", batch: ChangeBatch{Changes: []Change{{"DELETE", a("www.api.test.", 60, "192.0.2.7")}}}, code: 409, errWant: "changes[0]: DELETE www.api.test. A: the values do not match"},
		{name: "delete missing", batch: ChangeBatch{Changes: []Change{{"DELETE", a("nope.api.test.", 60, "192.0.2.7")}}}, code: 409, errWant: "no such record set"},
		{name: "bad rdata", batch: ChangeBatch{Changes: []Change{{"UPSERT", a("x.api.test.", 60, "192.0.2.300")}}}, code: 400, errWant: "changes[0]: records[0]"},
		{name: "outside zone", batch: ChangeBatch{Changes: []Change{{"UPSERT", a("x.other.test.", 60, "192.0.2.3")}}}, code: 400, errWant: "outside the zone"},
		{name: "bad action", batch: ChangeBatch{Changes: []Change{{"MERGE", a("x.api.test.", 60, "192.0.2.3")}}}, code: 400, errWant: `MERGE`},
		{name: "cname conflict", batch: ChangeBatch{Changes: []Change{{"CREATE", RRSet{Name: "www.api.test.", Type: "CNAME", TTL: 60, Records: []string{"x.api.test."}}}}}, code: 400, errWant: "CNAME and other data"},
		{name: "policy without set id", batch: ChangeBatch{Changes: []Change{{"CREATE", RRSet{Name: "w.api.test.", Type: "A", TTL: 60, Records: []string{"192.0.2.1"}, Weight: &w}}}}, code: 400, errWant: "set_identifier is required"},
		{name: "same set twice", batch: ChangeBatch{Changes: []Change{{"UPSERT", a("y.api.test.", 60, "192.0.2.3")}, {"UPSERT", a("y.api.test.", 60, "192.0.2.4")}}}, code: 400, errWant: "changes[1]"},
		{name: "empty", batch: ChangeBatch{}, code: 400, errWant: "at least one change"},
		{name: "unknown health check", batch: ChangeBatch{Changes: []Change{{"CREATE", RRSet{Name: "h.api.test.", Type: "A", TTL: 60, Records: []string{"192.0.2.1"}, HealthCheckID: "nope"}}}}, code: 400, errWant: `health check \"nope\" does not exist`},
		{name: "unknown CIDR collection", batch: ChangeBatch{Changes: []Change{{"CREATE", RRSet{Name: "h.api.test.", Type: "A", TTL: 60, Records: []string{"192.0.2.1"}, SetIdentifier: "x", CIDR: CIDRJSON{"nope", "a"}}}}}, code: 400, errWant: "CIDR collection"},
		{name: "upsert and delete", batch: ChangeBatch{Changes: []Change{{"UPSERT", a("www.api.test.", 120, "192.0.2.5", "192.0.2.6")}, {"CREATE", RRSet{Name: "txt.api.test.", Type: "TXT", TTL: 60, Records: []string{`"hello world"`}}}}}, code: 200},
		{name: "delete exact", batch: ChangeBatch{Changes: []Change{{"DELETE", a("ns1.api.test.", 60, "192.0.2.53")}}}, code: 200},
	}
	applied := 0
	for _, st := range steps {
		var info ChangeInfo
		code, body := call(t, base, "POST", "/v1/zones/api.test/changes", st.batch, &info)
		if code != st.code {
			t.Fatalf("%s: %d %s, want %d", st.name, code, body, st.code)
		}
		if st.errWant != "" && !strings.Contains(body, st.errWant) {
			t.Errorf("%s: error %s lacks %q", st.name, body, st.errWant)
		}
		if code == 200 {
			applied++
			if info.Serial != serial0+uint32(applied) || !strings.HasPrefix(info.ID, "C") || info.Status != "INSYNC" {
				t.Errorf("%s: change info %+v (serial0 %d)", st.name, info, serial0)
			}
		}
		// Nothing of a rejected batch appears.
		if r := query(t, srv.Addr(), "mail.api.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s: mail.api.test. answered %s: half of a bad batch applied", st.name, dns.RcodeToString[r.Rcode])
		}
	}
	r := query(t, srv.Addr(), "www.api.test.", dns.TypeA)
	if got := strings.Join(answers(r), ","); got != "192.0.2.5,192.0.2.6" || !r.Authoritative || r.Answer[0].Header().Ttl != 120 {
		t.Fatalf("www.api.test. A: %v", r)
	}
	if r := query(t, srv.Addr(), "api.test.", dns.TypeSOA); r.Answer[0].(*dns.SOA).Serial != serial0+uint32(applied) {
		t.Fatalf("SOA serial %v, want %d", r.Answer[0], serial0+uint32(applied))
	}
	var sets []RRSet
	call(t, base, "GET", "/v1/zones/api.test./rrsets", nil, &sets)
	found := false
	for _, s := range sets {
		if s.Name == "txt.api.test." && s.Records[0] == `"hello world"` {
			found = true
		}
	}
	if !found {
		t.Errorf("rrsets lack the TXT: %+v", sets)
	}
	code, export := call(t, base, "GET", "/v1/zones/api.test/export", nil, nil)
	if code != 200 || !strings.Contains(export, "www.api.test.\t120\tIN\tA\t192.0.2.5") {
		t.Errorf("export: %d\n%s", code, export)
	}
	// Changes to a file zone work as well.
	if code, body := call(t, base, "POST", "/v1/zones/example.test/changes", ChangeBatch{Changes: []Change{{"CREATE", RRSet{Name: "_acme-challenge.example.test.", Type: "TXT", TTL: 60, Records: []string{`"token"`}}}}}, nil); code != 200 {
		t.Fatalf("file zone change: %d %s", code, body)
	}
	if r := query(t, srv.Addr(), "_acme-challenge.example.test.", dns.TypeTXT); len(r.Answer) != 1 {
		t.Fatalf("file zone change not served: %v", r)
	}
	if code, _ := call(t, base, "DELETE", "/v1/zones/example.test.", nil, nil); code != 409 {
		t.Errorf("deleting a file zone: %d, want 409", code)
	}
	// Unauthenticated changes are refused.
	req, _ := http.NewRequest("POST", base+"/v1/zones/api.test/changes", strings.NewReader("{}"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("change without token: %v %v", resp, err)
	}
	if code, _ := call(t, base, "DELETE", "/v1/zones/api.test", nil, nil); code != 204 {
		t.Fatalf("delete zone: %d", code)
	}
	if r := query(t, srv.Addr(), "www.api.test.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Fatalf("deleted zone still served: %v", r)
	}
}

func TestHealthCheckAPI(t *testing.T) {
	srv := start(t, testConfig(t))
	base := srv.adminURL
	hc := HealthCheck{ID: "web1", Config: json.RawMessage(`{"kind":"tcp","address":"127.0.0.1:1","interval":"1s","unhealthy_threshold":1}`)}
	if code, body := call(t, base, "POST", "/v1/healthchecks", hc, nil); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	goJSON := HealthCheck{ID: "gojson", Config: json.RawMessage(`{"Kind":"tcp","Address":"127.0.0.1:1","Interval":"2s"}`)}
	if code, body := call(t, base, "POST", "/v1/healthchecks", goJSON, nil); code != 201 {
		t.Fatalf("Go-style JSON config: %d %s", code, body)
	}
	call(t, base, "DELETE", "/v1/healthchecks/gojson", nil, nil)
	bad := HealthCheck{ID: "bad", Config: json.RawMessage(`{"kind":"tcp","adress":"127.0.0.1:1"}`)}
	if code, body := call(t, base, "POST", "/v1/healthchecks", bad, nil); code != 400 || !strings.Contains(body, "adress") {
		t.Fatalf("unknown key: %d %s", code, body)
	}
	var list []HealthCheck
	call(t, base, "GET", "/v1/healthchecks", nil, &list)
	var cfg map[string]any
	if len(list) == 1 {
		_ = json.Unmarshal(list[0].Config, &cfg)
	}
	if len(list) != 1 || list[0].ID != "web1" || cfg["unhealthy_threshold"] != 1.0 {
		t.Fatalf("list: %+v", list)
	}
	if code, _ := call(t, base, "DELETE", "/v1/healthchecks/web1", nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := call(t, base, "DELETE", "/v1/healthchecks/web1", nil, nil); code != 404 {
		t.Fatalf("delete again: %d", code)
	}
}

func TestConfigHealthChecks(t *testing.T) {
	cfg := testConfig(t)
	cfg.HealthChecks = map[string]health.CheckConfig{"cfg1": {Kind: health.KindTCP, Address: "127.0.0.1:1"}}
	srv := start(t, cfg)
	var list []HealthCheck
	call(t, srv.adminURL, "GET", "/v1/healthchecks", nil, &list)
	if len(list) != 1 || list[0].ID != "cfg1" || list[0].Source != "config" {
		t.Fatalf("list: %+v", list)
	}
	if code, _ := call(t, srv.adminURL, "DELETE", "/v1/healthchecks/cfg1", nil, nil); code != 409 {
		t.Fatalf("deleting a config check: %d, want 409", code)
	}
	if code, _ := call(t, srv.adminURL, "POST", "/v1/healthchecks", HealthCheck{ID: "cfg1", Config: json.RawMessage(`{"kind":"tcp","address":"127.0.0.1:2"}`)}, nil); code != 409 {
		t.Fatalf("overriding a config check: %d, want 409", code)
	}
}
