package app

import (
	// Images are FROM scratch: CA roots and time zones are compiled in.
	_ "golang.org/x/crypto/x509roots/fallback"
	_ "time/tzdata"
)
