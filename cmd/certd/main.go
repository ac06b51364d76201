// Command certd obtains, renews and hands out TLS certificates (ACME and a
// built-in local CA) for edgestack. See certs/README.md.
package main

import (
	certd "github.com/edgestack/edgestack/certs"
	"github.com/edgestack/edgestack/internal/app"
)

var version, revision = "dev", ""

func main() {
	app.Main(app.Spec[*certd.Config]{
		Info:     app.Info{Name: "certd", Version: version, Revision: revision},
		Defaults: certd.DefaultConfig,
		New:      certd.NewService,
	})
}
