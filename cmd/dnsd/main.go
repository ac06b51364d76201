// Command dnsd is edgestack's authoritative DNS server. See dns/README.md.
package main

import (
	dnsserver "github.com/edgestack/edgestack/dns"
	"github.com/edgestack/edgestack/internal/app"
)

var version, revision = "dev", ""

func main() {
	app.Main(app.Spec[*dnsserver.Config]{
		Info:     app.Info{Name: "dnsd", Version: version, Revision: revision},
		Defaults: dnsserver.DefaultConfig,
		New:      dnsserver.NewService,
	})
}
