// Package certsbench measures certd: time from request to issued
// certificate against an in-process pebble per challenge type, and full TLS
// handshakes per second served through certs/certsource against nginx with
// the same certificate. Run (bounded):
//
//	go test -run XXX -bench . -benchtime 5x ./bench/certs            # issuance
//	go test -run XXX -bench Handshake -benchtime 3s ./bench/certs    # handshakes
//
// See README.md for figures.
package certsbench

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/edgestack/edgestack/certs/certsource"
	"github.com/edgestack/edgestack/certs/manager"
	"github.com/edgestack/edgestack/certs/pebbletest"
	"github.com/edgestack/edgestack/certs/testdns"
)

// world is a storage folder, an edge-like reader answering challenges on
// its own listeners, a DNS server with dnsd's change API, pebble and a
// manager.
type world struct {
	dir string
	src *certsource.Source
	mgr *manager.Manager
}

func newWorld(b *testing.B) *world {
	b.Helper()
	w := &world{dir: b.TempDir()}
	dns := testdns.Start(b, "tok", "bench.test")
	var err error
	if w.src, err = certsource.New(certsource.Options{Dir: w.dir, Poll: 50 * time.Millisecond}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.src.Start(ctx)
	b.Cleanup(func() { cancel(); w.src.Close() })
	httpLn, _ := net.Listen("tcp", "127.0.0.1:0")
	hs := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !w.src.HTTPChallenge(rw, r) {
			http.NotFound(rw, r)
		}
	})}
	go func() { _ = hs.Serve(httpLn) }()
	b.Cleanup(func() { hs.Close() })
	tlsRaw, _ := net.Listen("tcp", "127.0.0.1:0")
	tlsLn := tls.NewListener(tlsRaw, w.src.TLSConfig())
	go func() {
		for {
			c, err := tlsLn.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	b.Cleanup(func() { tlsLn.Close() })
	peb := pebbletest.Start(b, pebbletest.Options{
		HTTPPort: httpLn.Addr().(*net.TCPAddr).Port, TLSPort: tlsRaw.Addr().(*net.TCPAddr).Port, DNSServer: dns.DNSAddr,
	})
	if w.mgr, err = manager.New(manager.Options{Dir: w.dir, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		b.Fatal(err)
	}
	settings := manager.Settings{
		Issuers: []manager.Issuer{
			{Name: "pebble", Type: "acme", Directory: peb.URL, Roots: peb.Roots, Profile: "shortlived"},
			{Name: "local", Type: "local_ca"},
		},
		DefaultIssuers: []string{"pebble"},
		DNS01:          manager.DNS01{URL: dns.APIURL, Token: "tok", DNSServer: dns.DNSAddr, Timeout: 5 * time.Second},
		RetryMin:       time.Hour, RetryMax: time.Hour,
	}
	if err := w.mgr.Start(context.Background(), settings, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.mgr.Stop(ctx)
	})
	return w
}

func (w *world) issue(b *testing.B, sp manager.Spec) manager.Record {
	if _, err := w.mgr.Request([]manager.Spec{sp}); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, _ := w.mgr.Record(sp.Name)
		switch {
		case r.State == manager.StateIssued:
			return r
		case r.State == manager.StateFailed:
			b.Fatalf("%s failed: %s", sp.Name, r.LastError)
		case time.Now().After(deadline):
			b.Fatalf("%s: not issued after 30s", sp.Name)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// BenchmarkIssue is the time from request to issued certificate (stored and
// readable by edged/lbd) against pebble, per challenge type, and from the
// local CA.
func BenchmarkIssue(b *testing.B) {
	type issueCase struct{ challenge, issuer string }
	for _, tc := range []issueCase{
		{manager.ChallengeHTTP01, "pebble"},
		{manager.ChallengeTLSALPN01, "pebble"},
		{manager.ChallengeDNS01, "pebble"},
		{manager.ChallengeHTTP01, "local"},
	} {
		b.Run(tc.issuer+"/"+tc.challenge, func(b *testing.B) {
			w := newWorld(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				w.issue(b, manager.Spec{Name: fmt.Sprintf("n%d.bench.test", i), Challenge: tc.challenge, Issuers: []string{tc.issuer}})
			}
		})
	}
}

// BenchmarkHandshake compares full TLS handshakes (each followed by one
// HTTP/1.1 request on the new connection, then close) served through
// certsource with Go's TLS stack against nginx with the same certificate
// and key, on the same machine, with the same Go client.
func BenchmarkHandshake(b *testing.B) {
	w := newWorld(b)
	rec := w.issue(b, manager.Spec{Name: "www.bench.test", Issuers: []string{"local"}})
	w.src.Reload()
	if w.src.Lookup(rec.Name) == nil {
		b.Fatal("certsource does not serve the new certificate")
	}
	st := &certmagic.FileStorage{Path: w.dir}
	crtFile := st.Filename(certmagic.StorageKeys.SiteCert("local", "www.bench.test"))
	keyFile := st.Filename(certmagic.StorageKeys.SitePrivateKey("local", "www.bench.test"))

	// certsource in its own process, like edged/lbd.
	addr := startTLSServer(b, w.dir)
	nginx, err := exec.LookPath("nginx")
	naddr := ""
	if err != nil {
		b.Log("nginx not installed; no comparison")
	} else {
		naddr = startNginx(b, nginx, crtFile, keyFile)
	}
	// Interleaved rounds, so load from other work on the machine hits both.
	for round := 1; round <= 3; round++ {
		b.Run(fmt.Sprintf("certsource/round%d", round), func(b *testing.B) { handshakes(b, addr, tlsServerPID, false) })
		if naddr != "" {
			b.Run(fmt.Sprintf("nginx/round%d", round), func(b *testing.B) { handshakes(b, naddr, nginxPID, false) })
		}
	}
	b.Run("certsource-mlkem", func(b *testing.B) { handshakes(b, addr, tlsServerPID, true) })
}

// handshakes runs full handshakes (no session resumption) from 8 per
// CPU goroutines and reports handshakes/s and the server's CPU time per
// handshake (from /proc, the server process and its children), which is
// the steadier figure on a shared machine. Key exchange is X25519 (what
// nginx with OpenSSL 3.0 offers) unless mlkem, which lets Go pick its
// default hybrid X25519MLKEM768.
func handshakes(b *testing.B, addr string, pid int, mlkem bool) {
	cfg := &tls.Config{ServerName: "www.bench.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
	if !mlkem {
		cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	cpu0 := procCPU(pid)
	req := []byte("GET / HTTP/1.1\r\nHost: www.bench.test\r\nConnection: close\r\n\r\n")
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		for pb.Next() {
			c, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := c.Write(req); err != nil {
				b.Error(err)
			}
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			c.Close()
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
	if cpu := procCPU(pid) - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "server-cpu-µs/handshake")
	}
}

// procCPU is the user+system CPU time of pid and its direct children.
func procCPU(pid int) time.Duration {
	const tick = 10 * time.Millisecond // CLK_TCK 100
	var total time.Duration
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+2:])
		if len(f) < 13 {
			continue
		}
		p, _ := strconv.Atoi(e.Name())
		ppid, _ := strconv.Atoi(f[1])
		if p != pid && ppid != pid {
			continue
		}
		ut, _ := strconv.Atoi(f[11])
		st, _ := strconv.Atoi(f[12])
		total += time.Duration(ut+st) * tick
	}
	return total
}

func startNginx(b *testing.B, bin, crt, key string) string {
	b.Helper()
	dir := b.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	conf := fmt.Sprintf(`worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s;
  proxy_temp_path %[1]s;
  fastcgi_temp_path %[1]s;
  uwsgi_temp_path %[1]s;
  scgi_temp_path %[1]s;
  server {
    listen %[2]s ssl;
    ssl_certificate %[3]s;
    ssl_certificate_key %[4]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    keepalive_timeout 0;
    location / { return 200 "ok\n"; }
  }
}
`, dir, addr, crt, key)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", cf)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	// nginx's workers outlive a killed master and keep the output pipe
	// open: stop the whole process group, and never wait on the pipe long.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	nginxPID = cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			b.Fatalf("nginx did not start: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var tlsServerPID, nginxPID int

// startTLSServer builds and runs ./tlsserver on the storage folder.
func startTLSServer(b *testing.B, dir string) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "tlsserver")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/edgestack/edgestack/bench/certs/tlsserver").CombinedOutput(); err != nil {
		b.Fatalf("build tlsserver: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-dir", dir, "-tickets=false")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	tlsServerPID = cmd.Process.Pid
	line := make([]byte, 64)
	n, err := stdout.Read(line)
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(string(line[:n]))
}
