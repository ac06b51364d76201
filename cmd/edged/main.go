// Command edged is edgestack's caching CDN edge.
package main

import (
	"github.com/edgestack/edgestack/edge"
	"github.com/edgestack/edgestack/internal/app"
)

var version, revision = "dev", ""

func main() {
	app.Main(app.Spec[*edge.Config]{
		Info:     app.Info{Name: "edged", Version: version, Revision: revision},
		Defaults: edge.DefaultConfig,
		New:      edge.NewService,
	})
}
