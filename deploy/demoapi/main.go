// Command demoapi is the tiny API behind lbd in the demo stack: it answers
// every request with its instance name, so a client can see the balancer
// spread requests over the target group.
//
//	demoapi -listen :8080 -name api-1
//
// GET /healthz answers 200 "ok" (the target group's health check), and
// 503 from SIGTERM on, during the -lame-duck period before the server closes;
// GET /api/hello answers {"instance": NAME, "path": ..., "client": ...}.
// `demoapi healthcheck [-listen :8080]` probes its own /healthz (exit 0/1),
// for the scratch image's container health check.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println("demoapi", version)
		return
	}
	check := len(os.Args) > 1 && os.Args[1] == "healthcheck"
	if check {
		os.Args = append(os.Args[:1], os.Args[2:]...)
	}
	listen := flag.String("listen", ":8080", "listen `address`")
	name := flag.String("name", hostname(), "instance `name` to answer with")
	lameDuck := flag.Duration("lame-duck", 3*time.Second, "on SIGTERM, fail /healthz and keep serving this `long` before closing, so the balancer drains the instance first")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "demoapi: unexpected argument %q (commands: version, healthcheck)\n", flag.Arg(0))
		os.Exit(2)
	}
	if check {
		os.Exit(healthcheck(*listen))
	}
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil)).With("instance", *name)

	mux := http.NewServeMux()
	var draining atomic.Bool
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"instance": *name,
			"path":     r.URL.Path,
			"client":   r.Header.Get("X-Forwarded-For"),
		})
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		// Health checks fail first; requests keep being answered until the
		// balancer has stopped sending them, then the server closes.
		draining.Store(true)
		log.Info("draining", "lame_duck", lameDuck.String())
		time.Sleep(*lameDuck)
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("listening", "addr", *listen)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

func healthcheck(listen string) int {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return 1
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + port + "/healthz")
	if err != nil {
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
