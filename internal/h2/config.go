package h2

import "github.com/edgestack/edgestack/internal/config"

// Config is the http2 section of edged's and lbd's configuration.
type Config struct {
	// Server picks the HTTP/2 server of the TLS listeners: "edgestack"
	// (this package) or "net/http" (Go's own, as before). Default:
	// edgestack.
	Server string `yaml:"server"`
	// MaxConcurrentStreams per connection, advertised to clients.
	// Default: 250.
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
}

// Server names.
const (
	ServerEdgestack = "edgestack"
	ServerNetHTTP   = "net/http"
)

// Own says whether this package's server is chosen.
func (c Config) Own() bool { return c.Server != ServerNetHTTP }

// Validate checks the section; prefix is its path in the file ("http2").
func (c Config) Validate(prefix string) error {
	switch c.Server {
	case "", ServerEdgestack, ServerNetHTTP:
	default:
		return config.Errorf(prefix+".server", "must be %s or %s, not %q", ServerEdgestack, ServerNetHTTP, c.Server)
	}
	if c.MaxConcurrentStreams > 1<<20 {
		return config.Errorf(prefix+".max_concurrent_streams", "%d is more than %d", c.MaxConcurrentStreams, 1<<20)
	}
	return nil
}
