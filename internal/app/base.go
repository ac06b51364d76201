package app

import (
	"errors"

	"github.com/edgestack/edgestack/internal/admin"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/edgestack/edgestack/internal/obs"
)

// Base is the part of the configuration every daemon shares. Daemon configs
// embed it inline:
//
//	type Config struct {
//		app.Base `yaml:",inline"`
//		Listen string `yaml:"listen"`
//	}
type Base struct {
	// Log sets the level and format of the daemon's log (stdout).
	Log obs.LogConfig `yaml:"log"`
	// Admin is the admin HTTP listener (/livez, /readyz, /metrics, API).
	Admin admin.Config `yaml:"admin"`
	// Shutdown tunes the graceful stop on SIGTERM/SIGINT.
	Shutdown ShutdownConfig `yaml:"shutdown"`
}

// ShutdownConfig tunes the graceful stop.
type ShutdownConfig struct {
	// LameDuck is how long /readyz answers 503 before the daemon stops
	// accepting new work, so load balancers and health checks move away
	// first. Default: 0s.
	LameDuck config.Duration `yaml:"lame_duck"`
	// Grace is how long in-flight work may take to finish before what is
	// left is closed. Default: 15s.
	Grace config.Duration `yaml:"grace"`
}

// DefaultBase returns the shared defaults with the daemon's own admin
// address.
func DefaultBase(adminListen string) Base {
	return Base{
		Log:      obs.DefaultLogConfig(),
		Admin:    admin.Config{Listen: adminListen},
		Shutdown: ShutdownConfig{Grace: config.Duration(15e9)},
	}
}

// AppBase gives the runtime access to the shared part of a daemon config.
func (b *Base) AppBase() *Base { return b }

// Validate checks the shared part; daemons call it from their own Validate.
func (b *Base) Validate() error {
	var errs []error
	if err := b.Log.Validate(); err != nil {
		errs = append(errs, config.Nest("log", err))
	}
	errs = append(errs, config.Nest("admin", b.Admin.Validate()))
	if b.Shutdown.LameDuck < 0 {
		errs = append(errs, config.Errorf("shutdown.lame_duck", "must not be negative"))
	}
	if b.Shutdown.Grace <= 0 {
		errs = append(errs, config.Errorf("shutdown.grace", "must be positive"))
	}
	return errors.Join(errs...)
}
