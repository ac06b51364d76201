package main

import (
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
	"github.com/miekg/dns"
)

const zoneFile = `$ORIGIN example.test.
$TTL 300
@	IN SOA ns1 hostmaster 1 7200 900 1209600 60
	IN NS ns1
ns1	IN A 192.0.2.53
www	IN A 192.0.2.1
`

func TestConformance(t *testing.T) {
	apptest.Conformance(t, apptest.Case{
		Package: "github.com/edgestack/edgestack/cmd/dnsd",
		Name:    "dnsd",
		Files: map[string]string{"example.test.zone": zoneFile, "broken.zone": `$ORIGIN broken.test.
@	IN SOA ns1 hostmaster 1 7200 900 1209600 60
	IN NS ns1
www	IN A 192.0.2.300
`},
		Good: `listen: 127.0.0.1:{{port "dns"}}
storage: {{.Dir}}/dnsd.db
admin:
  listen: {{.Admin}}
  token: {{.Token}}
zones:
  - name: example.test.
    file: {{.Dir}}/example.test.zone
`,
		Bad: `listen: 127.0.0.1:{{port "dns"}}
admin:
  listen: {{.Admin}}
  token: {{.Token}}
zones:
  - name: example.test.
    file: {{.Dir}}/missing.zone
  - name: broken.test.
    file: {{.Dir}}/broken.zone
tcp:
  max_connections: -1
`,
		BadWant: []string{"cfg.yaml:7:", "missing.zone", "cfg.yaml:9:", "broken.zone:4:", "cfg.yaml:11:", "max_connections"},
		Serving: func(t *testing.T, ports map[string]string) {
			m := new(dns.Msg)
			m.SetQuestion("www.example.test.", dns.TypeA)
			for _, proto := range []string{"udp", "tcp"} {
				c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
				var r *dns.Msg
				var err error
				for attempt := range 10 { // sendto can fail with EPERM when the shared conntrack table is full
					if r, _, err = c.Exchange(m, "127.0.0.1:"+ports["dns"]); err == nil {
						break
					}
					time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
				}
				if err != nil {
					t.Fatalf("%s query: %v", proto, err)
				}
				if !r.Authoritative || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
					t.Fatalf("%s answer: %v", proto, r)
				}
			}
		},
	})
}
