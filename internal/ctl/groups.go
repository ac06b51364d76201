package ctl

// Groups lists every command group edgectl knows. Each component adds its
// group here (its commands live in the component's own file in this package).
func Groups() []Group {
	return []Group{
		Daemons(),
		DNS(),
		Certs(),
		CDN(),
		LB(),
	}
}
