package lb

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestL4AccessLog drives real TCP, TLS and UDP clients through lbd and
// checks the one JSON access-log record each connection or flow leaves.
func TestL4AccessLog(t *testing.T) {
	dir := t.TempDir()
	echo := echoTCP(t, "e1", false)
	// A target that answers one line, then resets when told to.
	resetter := rawServer(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := br.ReadString('\n'); err != nil {
			return
		}
		_, _ = io.WriteString(c, "bye\n")
		if _, err := br.ReadString('\n'); err != nil {
			return
		}
		_ = c.(*net.TCPConn).SetLinger(0)
	})
	closedPort := refusingAddr(t)
	udpTarget := udpEcho(t)
	termC, termK, termX := writeCert(t, dir, "term", "term.test")
	logFile := filepath.Join(dir, "access.log")
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
access_log:
  format: json
  file: `+logFile+`
target_groups:
  - name: echo
    protocol: tcp
    targets: [{address: "`+echo+`"}]
    health_check: {disabled: true}
  - name: resetter
    protocol: tcp
    targets: [{address: "`+resetter+`"}]
    health_check: {disabled: true}
  - name: down
    protocol: tcp
    targets: [{address: "`+closedPort+`"}]
    health_check: {disabled: true}
    connect_timeout: 1s
  - name: dns
    protocol: udp
    targets: [{address: "`+udpTarget+`"}]
    health_check: {disabled: true}
listeners:
  - {name: tcp, protocol: tcp, listen: "127.0.0.1:0", target_group: echo}
  - {name: idle, protocol: tcp, listen: "127.0.0.1:0", target_group: echo, idle_timeout: 300ms}
  - {name: resetting, protocol: tcp, listen: "127.0.0.1:0", target_group: resetter}
  - {name: down, protocol: tcp, listen: "127.0.0.1:0", target_group: down}
  - name: passthrough
    protocol: tls
    tls_mode: passthrough
    listen: 127.0.0.1:0
    sni: [{host: "known.test", target_group: echo}]
  - name: terminate
    protocol: tls
    listen: 127.0.0.1:0
    target_group: echo
    tls:
      certificates: [{cert_file: `+termC+`, key_file: `+termK+`}]
  - {name: udp, protocol: udp, listen: "127.0.0.1:0", target_group: dns, idle_timeout: 1s}
`)
	addr := func(n string) string { return h.svc.Addr(n).String() }
	// Records are found by listener and client port (JSON numbers).
	localPort := func(c net.Conn) float64 {
		_, p, _ := net.SplitHostPort(c.LocalAddr().String())
		n, _ := strconv.Atoi(p)
		return float64(n)
	}
	dialTCP := func(t *testing.T, listener string) *net.TCPConn {
		c, err := net.Dial("tcp", addr(listener))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c.(*net.TCPConn)
	}
	// readToEnd waits until lbd closes its side.
	readToEnd := func(r io.Reader) { _, _ = io.Copy(io.Discard, r) }
	pool := x509.NewCertPool()
	pool.AddCert(termX)

	type tc struct {
		name     string
		listener string
		run      func(t *testing.T) (clientPort float64) // drives a client until lbd ends the connection
		want     map[string]any
	}
	for _, c := range []tc{
		{"clean close both ways", "tcp", func(t *testing.T) float64 {
			c := dialTCP(t, "tcp")
			if got := roundTrip(t, c, bufio.NewReader(c), "hello"); got != "e1:hello" {
				t.Fatalf("echo %q", got)
			}
			_ = c.CloseWrite()
			readToEnd(c)
			return localPort(c)
		}, map[string]any{"proto": "tcp", "target_group": "echo", "upstream_addr": echo, "status": 200.0, "result": "ok", "bytes_in": 6.0, "bytes_out": 9.0}},
		{"client resets", "tcp", func(t *testing.T) float64 {
			c := dialTCP(t, "tcp")
			roundTrip(t, c, bufio.NewReader(c), "hello")
			_ = c.SetLinger(0)
			_ = c.Close()
			return localPort(c)
		}, map[string]any{"result": "client_reset", "status": 200.0, "bytes_in": 6.0, "bytes_out": 9.0}},
		{"target resets", "resetting", func(t *testing.T) float64 {
			c := dialTCP(t, "resetting")
			br := bufio.NewReader(c)
			if got := roundTrip(t, c, br, "hi"); got != "bye" {
				t.Fatalf("got %q", got)
			}
			_, _ = io.WriteString(c, "reset\n")
			readToEnd(br)
			return localPort(c)
		}, map[string]any{"target_group": "resetter", "upstream_addr": resetter, "result": "target_reset", "bytes_in": 9.0, "bytes_out": 4.0}},
		{"idle timeout", "idle", func(t *testing.T) float64 {
			c := dialTCP(t, "idle")
			roundTrip(t, c, bufio.NewReader(c), "x")
			readToEnd(c) // lbd closes after 300ms without traffic
			return localPort(c)
		}, map[string]any{"result": "idle_timeout", "bytes_in": 2.0, "bytes_out": 5.0}},
		{"target refuses", "down", func(t *testing.T) float64 {
			c := dialTCP(t, "down")
			readToEnd(c)
			return localPort(c)
		}, map[string]any{"target_group": "down", "status": 502.0, "result": "connect_failed", "bytes_in": 0.0, "bytes_out": 0.0}},
		{"no SNI route", "passthrough", func(t *testing.T) float64 {
			c := dialTCP(t, "passthrough")
			tc := tls.Client(c, &tls.Config{ServerName: "unknown.test", InsecureSkipVerify: true})
			if err := tc.Handshake(); err == nil {
				t.Fatal("handshake succeeded without a target")
			}
			return localPort(c)
		}, map[string]any{"proto": "tls", "sni": "unknown.test", "status": 503.0, "result": "no_target"}},
		{"not TLS", "passthrough", func(t *testing.T) float64 {
			c := dialTCP(t, "passthrough")
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
			readToEnd(c)
			return localPort(c)
		}, map[string]any{"status": 400.0, "result": "bad_client_hello"}},
		{"terminated TLS", "terminate", func(t *testing.T) float64 {
			c := dialTCP(t, "terminate")
			tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "term.test"})
			if got := roundTrip(t, tc, bufio.NewReader(tc), "secret"); got != "e1:secret" {
				t.Fatalf("got %q", got)
			}
			_ = tc.CloseWrite()
			readToEnd(tc)
			return localPort(c)
		}, map[string]any{"proto": "tls", "sni": "term.test", "target_group": "echo", "result": "ok", "bytes_in": 7.0, "bytes_out": 10.0}},
		{"udp flow expires", "udp", func(t *testing.T) float64 {
			c := pingUDP(t, addr("udp"), 3)
			defer c.Close()
			return localPort(c)
		}, map[string]any{"proto": "udp", "target_group": "dns", "upstream_addr": udpTarget, "status": 200.0, "result": "idle_timeout",
			"packets_in": 3.0, "packets_out": 3.0, "bytes_in": 18.0, "bytes_out": 33.0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			clientPort := c.run(t)
			var rec map[string]any
			waitUntil(t, 5*time.Second, "the access-log record", func() bool {
				rec = findRecord(t, logFile, c.listener, clientPort)
				return rec != nil
			})
			want := map[string]any{"listener": c.listener, "remote": "127.0.0.1", "remote_port": clientPort}
			for k, v := range c.want {
				want[k] = v
			}
			for k, v := range want {
				if rec[k] != v {
					t.Errorf("%s = %v (%T), want %v; record %v", k, rec[k], rec[k], v, rec)
				}
			}
			if _, ok := rec["method"]; ok {
				t.Errorf("L4 record has an HTTP method: %v", rec)
			}
			d, _ := rec["duration_ms"].(float64)
			if elapsed := float64(time.Since(start).Microseconds()) / 1e3; d < 0 || d > elapsed {
				t.Errorf("duration_ms %v, want 0..%v", d, elapsed)
			}
			if c.listener == "udp" && d >= 1000 {
				t.Errorf("udp flow duration %vms includes the idle wait", d)
			}
		})
	}
}

// findRecord returns the L4 record of listener for the client port.
func findRecord(t *testing.T, file, listener string, port float64) map[string]any {
	t.Helper()
	data, _ := os.ReadFile(file)
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if m["listener"] == listener && m["remote_port"] == port {
			return m
		}
	}
	return nil
}

// refusingAddr returns a loopback address that refuses connections: a
// socket bound but not listening keeps the port from being handed to
// anyone else (a closed listener's port may come back as lbd's own, and
// a listener forwarding to itself loops).
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
}
