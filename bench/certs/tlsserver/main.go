// Command tlsserver serves HTTPS with certificates from certd's storage
// through certs/certsource, the way edged and lbd do; BenchmarkHandshake
// runs it as a separate process to compare with nginx.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgestack/edgestack/certs/certsource"
)

func main() {
	dir := flag.String("dir", "", "certd storage folder")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	tickets := flag.Bool("tickets", true, "send TLS session tickets (nginx in the benchmark has them off)")
	flag.Parse()
	src, err := certsource.New(certsource.Options{Dir: *dir})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	src.Start(ctx)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	tlsCfg := src.TLSConfig()
	tlsCfg.SessionTicketsDisabled = !*tickets
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") }),
		TLSConfig: tlsCfg,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	srv.SetKeepAlivesEnabled(false)
	fmt.Fprintln(os.Stdout, ln.Addr().String())
	go func() { <-ctx.Done(); _ = srv.Close() }()
	_ = srv.ServeTLS(ln, "", "")
}
