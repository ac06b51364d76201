package apptest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/admin"
	"github.com/edgestack/edgestack/internal/app"
	"github.com/prometheus/client_golang/prometheus"
)

// Startable is what a daemon's service offers (app.Service without Reload,
// so constructors returning their concrete type fit too).
type Startable interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// Daemon is a service running in the test's process with its admin server
// on a loopback port, as app.Run would wire it.
type Daemon[S Startable] struct {
	Service  S
	Admin    *admin.Server
	AdminURL string // http://127.0.0.1:port
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

// Options tune StartInProcess.
type Options struct {
	// Logger for the service. Default: discarded, or text on stderr at
	// debug level when EDGESTACK_TEST_LOG is set.
	Logger *slog.Logger
	// Fail receives the service's fatal errors (app.Deps.Fail). Default:
	// t.Errorf.
	Fail func(error)
}

// StartInProcess builds a service from an already validated cfg with
// newService, starts it with its admin server (cfg's admin settings, on a
// free loopback port), and stops both when the test ends.
func StartInProcess[C app.Config, S Startable](t testing.TB, name string, cfg C, newService func(app.Deps, C) (S, error), opts Options) *Daemon[S] {
	t.Helper()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
		if os.Getenv("EDGESTACK_TEST_LOG") != "" {
			logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	fail := opts.Fail
	if fail == nil {
		fail = func(err error) { t.Errorf("%s: fatal: %v", name, err) }
	}
	reg := prometheus.NewRegistry()
	adm, err := admin.New(cfg.AppBase().Admin, admin.Options{Logger: logger, Gatherer: reg})
	if err != nil {
		t.Fatalf("%s admin: %v", name, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = adm.Serve(ln) }()
	svc, err := newService(app.Deps{Logger: logger, Registry: reg, Admin: adm, Info: app.Info{Name: name}, Fail: fail}, cfg)
	if err != nil {
		_ = adm.Shutdown(context.Background())
		t.Fatalf("%s: %v", name, err)
	}
	if err := svc.Start(context.Background()); err != nil {
		_ = adm.Shutdown(context.Background())
		t.Fatalf("%s start: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
		_ = adm.Shutdown(ctx)
	})
	return &Daemon[S]{Service: svc, Admin: adm, AdminURL: "http://" + ln.Addr().String(), Registry: reg, Logger: logger}
}
