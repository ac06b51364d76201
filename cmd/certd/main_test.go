package main

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
)

const good = `admin:
  listen: {{.Admin}}
  token: {{.Token}}
storage:
  dir: {{.Dir}}/storage
challenges:
  http_listen: 127.0.0.1:{{port "http"}}
  tls_listen: 127.0.0.1:{{port "tls"}}
issuers:
  - name: local
    type: local_ca
    lifetime: 24h
certificates:
  - names: [app.local.test, "*.local.test"]
`

const bad = `admin:
  listen: {{.Admin}}
storage:
  dir: {{.Dir}}/storage
issuers:
  - name: local
    type: nonsense
certificates:
  - names: ["bad_name!"]
    key_type: dsa
`

func TestConformance(t *testing.T) {
	apptest.Conformance(t, apptest.Case{
		Package: "github.com/edgestack/edgestack/cmd/certd",
		Name:    "certd",
		Good:    good,
		Bad:     bad,
		BadWant: []string{"cfg.yaml:7:", "cfg.yaml:9:", "cfg.yaml:10:"},
		Serving: func(t *testing.T, ports map[string]string) {
			base := "http://127.0.0.1:" + ports["admin"]
			deadline := time.Now().Add(15 * time.Second)
			for {
				var rec struct {
					State, Issuer, LastError string `json:"-"`
				}
				var raw map[string]any
				resp, err := http.Get(base + "/v1/certificates/app.local.test")
				if err == nil {
					_ = json.NewDecoder(resp.Body).Decode(&raw)
					resp.Body.Close()
					rec.State, _ = raw["state"].(string)
					rec.Issuer, _ = raw["issuer"].(string)
				}
				if rec.State == "issued" && rec.Issuer == "local" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("certificate not issued by the local CA: %v %v", raw, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			resp, err := http.Get(base + "/v1/localca/root")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if blk, _ := pem.Decode(b); blk == nil || blk.Type != "CERTIFICATE" {
				t.Fatalf("local CA root export: %d %q", resp.StatusCode, b)
			}
			resp, err = http.Get("http://127.0.0.1:" + ports["http"] + "/.well-known/acme-challenge/nothing")
			if err != nil {
				t.Fatal(err)
			}
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 404 || !strings.Contains(string(b), "no pending ACME challenge") {
				t.Fatalf("challenge listener: %d %q", resp.StatusCode, b)
			}
		},
	})
}
