// Package obs sets up what every edgestack binary observes itself with: a
// slog logger and a Prometheus registry carrying build information and the
// config reload gauges.
package obs

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// LogConfig selects the level and format of a daemon's log.
type LogConfig struct {
	// Level is one of debug, info, warn, error. Default: info.
	Level string `yaml:"level"`
	// Format is json or text. Default: json.
	Format string `yaml:"format"`
}

// DefaultLogConfig returns the defaults documented on LogConfig.
func DefaultLogConfig() LogConfig { return LogConfig{Level: "info", Format: "json"} }

// ParseLevel turns a level name into a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToLower(s))); err != nil {
		return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
	}
	return l, nil
}

// Validate reports an unknown level or format.
func (c LogConfig) Validate() error {
	if _, err := ParseLevel(c.Level); err != nil {
		return err
	}
	if c.Format != "json" && c.Format != "text" {
		return fmt.Errorf("unknown log format %q (want json or text)", c.Format)
	}
	return nil
}

// NewLogger returns a logger writing to w as cfg says, with a daemon
// attribute, and the LevelVar that lets a reload change the level.
func NewLogger(w io.Writer, cfg LogConfig, daemon string) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	if l, err := ParseLevel(cfg.Level); err == nil {
		lv.Set(l)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	if cfg.Format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h).With("daemon", daemon), lv
}

// BuildInfo describes the running binary.
type BuildInfo struct {
	Daemon   string
	Version  string
	Revision string
}

// Namespace is the prefix of every edgestack metric.
const Namespace = "edgestack"

// NewRegistry returns a fresh registry (never the global one) holding the Go
// and process collectors and edgestack_build_info.
func NewRegistry(info BuildInfo) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "build_info",
		Help:      "Always 1; labels describe the running binary.",
		ConstLabels: prometheus.Labels{
			"daemon":    info.Daemon,
			"version":   info.Version,
			"revision":  info.Revision,
			"goversion": runtime.Version(),
		},
	})
	bi.Set(1)
	reg.MustRegister(bi)
	return reg
}

// ReloadMetrics are the gauges every daemon keeps about its config.
type ReloadMetrics struct {
	Successful       prometheus.Gauge
	SuccessTimestamp prometheus.Gauge
	Reloads          *prometheus.CounterVec
}

// NewReloadMetrics registers edgestack_config_last_reload_successful,
// edgestack_config_last_reload_success_timestamp_seconds and
// edgestack_config_reloads_total{result}.
func NewReloadMetrics(reg prometheus.Registerer) *ReloadMetrics {
	m := &ReloadMetrics{
		Successful: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "config_last_reload_successful",
			Help: "1 if the last config load or reload succeeded, 0 if it was rejected.",
		}),
		SuccessTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful config load or reload.",
		}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "config_reloads_total",
			Help: "Config reloads by result (success, failure).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.Successful, m.SuccessTimestamp, m.Reloads)
	m.Reloads.WithLabelValues("success")
	m.Reloads.WithLabelValues("failure")
	return m
}
