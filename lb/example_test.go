package lb

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEExample validates the config example of README.md (minus the
// parts that need files on this machine).
func TestREADMEExample(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Config\n\n```yaml\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("no yaml example")
	}
	y := string(m[1])
	y = strings.Replace(y, "token_file: /run/secrets/lbd-token", "token: x", 1)
	y = strings.Replace(y, "dir: /var/lib/certd", "dir: "+t.TempDir(), 1)
	y = regexp.MustCompile(`(?s)      certificates:         # and/or.*?key_file: /etc/lbd/example.key}\n`).ReplaceAllString(y, "")
	if _, err := parseConfig(t, y); err != nil {
		t.Fatalf("README example: %v", err)
	}
}
