// Package app is the runtime every edgestack daemon shares: subcommands,
// flags, environment overrides, config loading, logging, the admin server,
// signals, reload and graceful stop. A daemon's main is one call to Main.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgestack/edgestack/internal/admin"
	"github.com/edgestack/edgestack/internal/config"
	"github.com/edgestack/edgestack/internal/obs"
	"github.com/prometheus/client_golang/prometheus"
)

// Exit codes shared by every binary.
const (
	ExitOK      = 0
	ExitRuntime = 1
	ExitUsage   = 2 // bad usage or invalid config
)

// Info names and versions a binary. Version and Revision are set at link
// time (-ldflags "-X main.version=...").
type Info struct {
	Name     string
	Version  string
	Revision string
}

// Config is what a daemon's configuration struct must provide: the shared
// Base (embed app.Base inline) and a Validate that reports every problem,
// joined with errors.Join, using config.Errorf / config.Nest so problems
// carry field paths.
type Config interface {
	AppBase() *Base
	Validate() error
}

// Deps is what the runtime hands a daemon.
type Deps struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry
	Admin    *admin.Server
	Info     Info
	// Fail reports a fatal runtime error (a listener died): the daemon
	// stops gracefully and exits 1. Safe to call from any goroutine.
	Fail func(error)
}

// Service is a running daemon.
type Service[C Config] interface {
	// Start binds listeners and starts serving; it returns once serving
	// has begun. Work it starts is owned by the service and ends in
	// Shutdown.
	Start(ctx context.Context) error
	// Reload applies a new, already validated config without closing
	// listeners. On error the service must keep serving the old config.
	Reload(ctx context.Context, cfg C) error
	// Shutdown stops accepting, lets in-flight work finish until ctx ends,
	// then closes what is left.
	Shutdown(ctx context.Context) error
}

// Spec describes one binary to the runtime.
type Spec[C Config] struct {
	Info Info
	// Defaults returns a config holding every default: the one place
	// defaults come from.
	Defaults func() C
	// New builds the service from a valid config; it must not start work.
	New func(deps Deps, cfg C) (Service[C], error)
}

// Main runs the binary described by spec and exits with its exit code.
func Main[C Config](spec Spec[C]) {
	os.Exit(Run(context.Background(), spec, os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

const usage = `Usage: %[1]s [command] [flags]

Commands:
  run           run the daemon (default)
  validate      check the config, list every problem, exit 0 (ok) or 2
  print-config  print the effective config (defaults < file < env < flags), secrets redacted
  healthcheck   probe the running daemon's /readyz; exit 0 if ready, 1 if not
  version       print the version

Environment: EDGESTACK_CONFIG names the config file; EDGESTACK_<FIELD> overrides
one field, nested fields joined by "__" (EDGESTACK_ADMIN__LISTEN=127.0.0.1:9000).

Flags:
`

// Run is Main without the exit, for tests.
func Run[C Config](ctx context.Context, spec Spec[C], args, environ []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	env := envMap(environ)
	fs := flag.NewFlagSet(spec.Info.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, usage, spec.Info.Name)
		fs.PrintDefaults()
	}
	var fl flags
	fs.StringVar(&fl.config, "config", env["EDGESTACK_CONFIG"], "config `file` (YAML); default $EDGESTACK_CONFIG, else built-in defaults only")
	fs.StringVar(&fl.logLevel, "log-level", "", "log `level`: debug, info, warn, error (overrides config and env)")
	fs.StringVar(&fl.logFormat, "log-format", "", "log `format`: json or text (overrides config and env)")
	hcURL := fs.String("url", "", "healthcheck: readiness `URL` to probe (default: http://<admin.listen>/readyz)")
	hcTimeout := fs.Duration("timeout", 3*time.Second, "healthcheck: how long to wait for an answer")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", spec.Info.Name, fs.Arg(0))
		return ExitUsage
	}
	ld := loader[C]{spec: spec, flags: fl, environ: environ}

	switch cmd {
	case "version":
		fmt.Fprintf(stdout, "%s %s (revision %s, %s %s/%s)\n", spec.Info.Name, orUnknown(spec.Info.Version), orUnknown(spec.Info.Revision), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return ExitOK
	case "validate":
		if _, err := ld.load(); err != nil {
			printProblems(stderr, err)
			return ExitUsage
		}
		fmt.Fprintf(stdout, "%s: config ok\n", describe(fl.config))
		return ExitOK
	case "print-config":
		cfg, err := ld.load()
		if err != nil {
			printProblems(stderr, err)
			return ExitUsage
		}
		out, err := config.MarshalRedacted(cfg)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return ExitRuntime
		}
		_, _ = stdout.Write(out)
		return ExitOK
	case "healthcheck":
		return healthcheck(ld, *hcURL, *hcTimeout, stdout, stderr)
	case "run":
		cfg, err := ld.load()
		if err != nil {
			printProblems(stderr, err)
			return ExitUsage
		}
		return runDaemon(ctx, spec, ld, cfg, stdout)
	default:
		fmt.Fprintf(stderr, "%s: unknown command %q\n", spec.Info.Name, cmd)
		fs.Usage()
		return ExitUsage
	}
}

type flags struct {
	config, logLevel, logFormat string
}

// loader builds the effective config: defaults < file < env < flags.
type loader[C Config] struct {
	spec    Spec[C]
	flags   flags
	environ []string
}

// loadError carries every problem found while loading.
type loadError struct{ problems []string }

func (e *loadError) Error() string { return strings.Join(e.problems, "\n") }

func (l loader[C]) load() (C, error) {
	cfg := l.spec.Defaults()
	var src *config.Source
	if l.flags.config != "" {
		var err error
		if src, err = config.LoadFile(l.flags.config, cfg); err != nil {
			return cfg, &loadError{config.Problems(err, nil)}
		}
	}
	if _, err := config.ApplyEnv(cfg, l.environ); err != nil {
		return cfg, &loadError{config.Problems(err, nil)}
	}
	b := cfg.AppBase()
	if l.flags.logLevel != "" {
		b.Log.Level = l.flags.logLevel
	}
	if l.flags.logFormat != "" {
		b.Log.Format = l.flags.logFormat
	}
	if err := cfg.Validate(); err != nil {
		return cfg, &loadError{config.Problems(err, src)}
	}
	return cfg, nil
}

func printProblems(w io.Writer, err error) {
	var le *loadError
	if errors.As(err, &le) {
		fmt.Fprintf(w, "invalid config (%d problem%s):\n", len(le.problems), plural(len(le.problems)))
		for _, p := range le.problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
		return
	}
	fmt.Fprintln(w, err)
}

func healthcheck[C Config](ld loader[C], url string, timeout time.Duration, stdout, stderr io.Writer) int {
	if url == "" {
		cfg, err := ld.load()
		if err != nil {
			printProblems(stderr, err)
			return ExitRuntime
		}
		url = "http://" + dialable(cfg.AppBase().Admin.Listen) + "/readyz"
	}
	client := &http.Client{Timeout: timeout}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return ExitRuntime
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "unhealthy: %s: %s", resp.Status, body)
		return ExitRuntime
	}
	fmt.Fprintf(stdout, "%s", body)
	return ExitOK
}

// dialable turns a listen address into one a local client can dial.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

func runDaemon[C Config](ctx context.Context, spec Spec[C], ld loader[C], cfg C, stdout io.Writer) int {
	base := cfg.AppBase()
	logger, level := obs.NewLogger(stdout, base.Log, spec.Info.Name)
	reg := obs.NewRegistry(obs.BuildInfo{Daemon: spec.Info.Name, Version: spec.Info.Version, Revision: spec.Info.Revision})
	reloads := obs.NewReloadMetrics(reg)

	adm, err := admin.New(base.Admin, admin.Options{Logger: logger.With("component", "admin"), Gatherer: reg})
	if err != nil {
		logger.Error("start failed", "err", err)
		return ExitRuntime
	}
	adminLn, err := net.Listen("tcp", base.Admin.Listen)
	if err != nil {
		logger.Error("start failed", "err", fmt.Errorf("admin listener: %w", err))
		return ExitRuntime
	}
	adminAddr := base.Admin.Listen
	adminDone := make(chan error, 1)
	go func() { adminDone <- adm.Serve(adminLn) }()

	failures := make(chan error, 1)
	deps := Deps{
		Logger: logger, Registry: reg, Admin: adm, Info: spec.Info,
		Fail: func(err error) {
			select {
			case failures <- err:
			default:
			}
		},
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	reloadReqs := make(chan chan error)
	adm.HandleAuth("POST /v1/reload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res := make(chan error, 1)
		select {
		case reloadReqs <- res:
		case <-r.Context().Done():
			return
		}
		if err := <-res; err != nil {
			admin.WriteError(w, http.StatusUnprocessableEntity, err)
			return
		}
		admin.WriteJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
	}))

	stopAdmin := func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		_ = adm.Shutdown(sctx)
	}
	// Not ready until Start has returned, whatever the service registers.
	var started atomic.Bool
	adm.AddReadiness("start", func() error {
		if !started.Load() {
			return errors.New("starting")
		}
		return nil
	})
	svc, err := spec.New(deps, cfg)
	if err != nil {
		logger.Error("start failed", "err", err)
		stopAdmin()
		return ExitRuntime
	}
	if err := svc.Start(ctx); err != nil {
		logger.Error("start failed", "err", err)
		sctx, scancel := context.WithTimeout(context.Background(), base.Shutdown.Grace.D())
		_ = svc.Shutdown(sctx)
		scancel()
		stopAdmin()
		return ExitRuntime
	}
	started.Store(true)
	reloads.Successful.Set(1)
	reloads.SuccessTimestamp.SetToCurrentTime()
	logger.Info("started", "version", spec.Info.Version, "config", describe(ld.flags.config), "admin", adminAddr)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	reload := func() error {
		next, err := ld.load()
		if err == nil {
			if nb := next.AppBase(); nb.Admin.Listen != adminAddr {
				logger.Warn("admin.listen changes need a restart; keeping the running address", "running", adminAddr, "configured", nb.Admin.Listen)
			}
			if err = adm.SetConfig(next.AppBase().Admin); err == nil {
				err = svc.Reload(ctx, next)
			}
		}
		if err != nil {
			reloads.Successful.Set(0)
			reloads.Reloads.WithLabelValues("failure").Inc()
			logger.Error("reload rejected; the last good config keeps serving", "err", err)
			return err
		}
		if l, perr := obs.ParseLevel(next.AppBase().Log.Level); perr == nil {
			level.Set(l)
		}
		reloads.Successful.Set(1)
		reloads.SuccessTimestamp.SetToCurrentTime()
		reloads.Reloads.WithLabelValues("success").Inc()
		logger.Info("config reloaded")
		return nil
	}

	code := ExitOK
loop:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				_ = reload()
				continue
			}
			logger.Info("stopping", "signal", sig.String())
			break loop
		case res := <-reloadReqs:
			res <- reload()
		case err := <-failures:
			logger.Error("fatal error; stopping", "err", err)
			code = ExitRuntime
			break loop
		case err := <-adminDone:
			logger.Error("admin server stopped; stopping", "err", err)
			code = ExitRuntime
			break loop
		case <-ctx.Done():
			logger.Info("stopping", "reason", context.Cause(ctx))
			break loop
		}
	}

	adm.SetDraining()
	if d := base.Shutdown.LameDuck.D(); d > 0 {
		select {
		case <-time.After(d):
		case <-sigs:
		}
	}
	stopped := make(chan error, 1)
	sctx, scancel := context.WithTimeout(context.Background(), base.Shutdown.Grace.D())
	defer scancel()
	go func() { stopped <- svc.Shutdown(sctx) }()
	select {
	case err := <-stopped:
		if err != nil {
			logger.Warn("graceful stop incomplete", "err", err)
		}
	case sig := <-sigs:
		logger.Warn("second signal; stopping now", "signal", sig.String())
		scancel()
		<-stopped
		code = ExitRuntime
	}
	cancel()
	stopAdmin()
	logger.Info("stopped")
	return code
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func describe(path string) string {
	if path == "" {
		return "(defaults)"
	}
	return path
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
