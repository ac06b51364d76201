// Command edgectl is the command line for the admin APIs of dnsd, certd,
// edged and lbd.
package main

import (
	"context"
	"os"
	"strings"

	"github.com/edgestack/edgestack/internal/ctl"
)

var version = "dev"

func main() {
	ctl.Version = version
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	os.Exit(ctl.Main(context.Background(), ctl.Groups(), os.Args[1:], env, os.Stdout, os.Stderr))
}
