package app_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/apptest"
)

// TestConformance runs the shared-runtime checks against toyd, the smallest
// daemon on this runtime, built and started as a real process.
func TestConformance(t *testing.T) {
	apptest.Conformance(t, apptest.Case{
		Package: "github.com/edgestack/edgestack/internal/app/testdata/toyd",
		Name:    "toyd",
		Good: `listen: 127.0.0.1:{{port "greet"}}
greeting: hello
admin:
  listen: {{.Admin}}
  token: {{.Token}}
shutdown:
  grace: 2s
`,
		Bad: `listen: 127.0.0.1:{{port "greet"}}
greeting: ""
admin:
  listen: {{.Admin}}
  token: {{.Token}}
shutdown:
  grace: -1s
`,
		BadWant: []string{"cfg.yaml:2: greeting: must not be empty", "cfg.yaml:7: shutdown.grace: must be positive", "2 problems"},
		Serving: func(t *testing.T, ports map[string]string) {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+ports["greet"], 2*time.Second)
			if err != nil {
				t.Fatalf("greeting listener: %v", err)
			}
			defer c.Close()
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || strings.TrimSpace(line) != "hello" {
				t.Fatalf("greeting %q, %v", line, err)
			}
		},
	})
}
