// Command lbd is edgestack's L4/L7 load balancer.
package main

import (
	"github.com/edgestack/edgestack/internal/app"
	"github.com/edgestack/edgestack/lb"
)

var version, revision = "dev", ""

func main() {
	app.Main(app.Spec[*lb.Config]{
		Info:     app.Info{Name: "lbd", Version: version, Revision: revision},
		Defaults: lb.DefaultConfig,
		New:      lb.NewService,
	})
}
