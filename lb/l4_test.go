package lb

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgestack/edgestack/lb/l4"
)

// echoTCP echoes lines prefixed with name; with proxy set it first reads a
// PROXY v2 header and answers with the source address it names.
func echoTCP(t *testing.T, name string, proxy bool) string {
	return rawServer(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if proxy {
			hdr := make([]byte, 16)
			if _, err := io.ReadFull(br, hdr); err != nil {
				return
			}
			rest := make([]byte, int(hdr[14])<<8|int(hdr[15]))
			if _, err := io.ReadFull(br, rest); err != nil {
				return
			}
			src, _, _, err := l4.ParseProxyV2(append(hdr, rest...))
			if err != nil {
				fmt.Fprintf(c, "bad proxy header: %v\n", err)
				return
			}
			fmt.Fprintf(c, "proxy from %s\n", src.Addr())
		}
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s:%s", name, line)
		}
	})
}

// tlsServer accepts TLS with a certificate for name and echoes lines
// prefixed with name.
func tlsServer(t *testing.T, dir, name string) (string, *x509.Certificate) {
	cp, kp, x := writeCert(t, dir, name, name)
	cert, err := tls.LoadX509KeyPair(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	addr := rawServer(t, func(c net.Conn) {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		defer tc.Close()
		br := bufio.NewReader(tc)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(tc, "%s:%s", name, line)
		}
	})
	return addr, x
}

func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, msg string) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatal(err)
	}
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSpace(line)
}

func TestL4(t *testing.T) {
	dir := t.TempDir()
	e1, e2 := echoTCP(t, "e1", false), echoTCP(t, "e2", false)
	pp := echoTCP(t, "pp", true)
	aAddr, aCert := tlsServer(t, dir, "a.test")
	bAddr, bCert := tlsServer(t, dir, "b.test")
	termC, termK, termX := writeCert(t, dir, "term", "term.test")
	udpAddr := udpEcho(t)
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: echo
    protocol: tcp
    targets: [{address: "`+e1+`"}, {address: "`+e2+`"}]
    health_check: {interval: 200ms, timeout: 150ms, healthy_threshold: 1, unhealthy_threshold: 3}
  - name: pp
    protocol: tcp
    targets: [{address: "`+pp+`"}]
    health_check: {disabled: true}
  - name: tls-a
    protocol: tcp
    targets: [{address: "`+aAddr+`"}]
    health_check: {disabled: true}
  - name: tls-b
    protocol: tcp
    targets: [{address: "`+bAddr+`"}]
    health_check: {disabled: true}
  - name: dns
    protocol: udp
    targets: [{address: "`+udpAddr+`"}]
listeners:
  - name: tcp
    protocol: tcp
    listen: 127.0.0.1:0
    target_group: echo
  - name: proxied
    protocol: tcp
    listen: 127.0.0.1:0
    target_group: pp
    proxy_protocol: true
  - name: passthrough
    protocol: tls
    tls_mode: passthrough
    listen: 127.0.0.1:0
    sni:
      - {host: "a.test", target_group: tls-a}
      - {host: "*.test", target_group: tls-b}
  - name: terminate
    protocol: tls
    listen: 127.0.0.1:0
    target_group: echo
    tls:
      certificates: [{cert_file: `+termC+`, key_file: `+termK+`}]
  - name: udp
    protocol: udp
    listen: 127.0.0.1:0
    target_group: dns
    idle_timeout: 1s
`)
	addr := func(n string) string { return h.svc.Addr(n).String() }

	t.Run("tcp", func(t *testing.T) {
		waitUntil(t, 5*time.Second, "both echo targets healthy", func() bool {
			m := h.metrics()
			return strings.Contains(m, `state="healthy",target="`+e1+`",target_group="echo"} 1`) && strings.Contains(m, `state="healthy",target="`+e2+`",target_group="echo"} 1`)
		})
		seen := map[string]bool{}
		for i := range 6 {
			c, err := net.Dial("tcp", addr("tcp"))
			if err != nil {
				t.Fatal(err)
			}
			got := roundTrip(t, c, bufio.NewReader(c), fmt.Sprint("hello ", i))
			c.Close()
			seen[strings.SplitN(got, ":", 2)[0]] = true
			if !strings.HasSuffix(got, fmt.Sprint("hello ", i)) {
				t.Fatalf("echo %q", got)
			}
		}
		if !seen["e1"] || !seen["e2"] {
			t.Errorf("connections went to %v, want both targets", seen)
		}
	})
	t.Run("proxy protocol v2", func(t *testing.T) {
		c, err := net.Dial("tcp", addr("proxied"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if got := roundTrip(t, c, br, "x"); got != "proxy from 127.0.0.1" {
			t.Errorf("target saw %q", got)
		}
	})
	t.Run("passthrough by SNI", func(t *testing.T) {
		for _, x := range []struct {
			sni  string
			cert *x509.Certificate
			name string
		}{{"a.test", aCert, "a.test"}, {"b.test", bCert, "b.test"}} {
			pool := x509.NewCertPool()
			pool.AddCert(x.cert)
			c, err := tls.Dial("tcp", addr("passthrough"), &tls.Config{RootCAs: pool, ServerName: x.sni})
			if err != nil {
				t.Fatalf("%s: %v", x.sni, err)
			}
			got := roundTrip(t, c, bufio.NewReader(c), "hi")
			c.Close()
			if got != x.name+":hi" {
				t.Errorf("%s: %q", x.sni, got)
			}
		}
		// Not TLS at all: closed without forwarding.
		c, _ := net.Dial("tcp", addr("passthrough"))
		defer c.Close()
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("plain text got %d bytes back", n)
		}
	})
	t.Run("terminate", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(termX)
		c, err := tls.Dial("tcp", addr("terminate"), &tls.Config{RootCAs: pool, ServerName: "term.test"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := roundTrip(t, c, bufio.NewReader(c), "secret"); !strings.HasSuffix(got, ":secret") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("udp flows", func(t *testing.T) {
		c := pingUDP(t, addr("udp"), 3)
		defer c.Close()
		if m := h.metrics(); !strings.Contains(m, `edgestack_lbd_active_connections{listener="udp"} 1`) {
			t.Errorf("one flow expected in metrics")
		}
		waitUntil(t, 5*time.Second, "flow to expire", func() bool {
			return strings.Contains(h.metrics(), `edgestack_lbd_active_connections{listener="udp"} 0`)
		})
	})
	if m := h.metrics(); !strings.Contains(m, `edgestack_lbd_l4_bytes_total{direction="in",listener="tcp"}`) {
		t.Errorf("l4 byte metrics missing")
	}
}

func udpEcho(t *testing.T) string { return udpEchoNamed(t, "echo") }

func udpEchoNamed(t *testing.T, name string) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte(name+" "), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestUDPAffinity: every datagram of a flow goes to the same target.
func TestUDPAffinity(t *testing.T) {
	a, b := udpEchoNamed(t, "a"), udpEchoNamed(t, "b")
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: u
    protocol: udp
    targets: [{address: "`+a+`"}, {address: "`+b+`"}]
listeners:
  - name: udp
    protocol: udp
    listen: 127.0.0.1:0
    target_group: u
`)
	seen := map[string]bool{}
	for flow := range 6 {
		c, err := net.Dial("udp", h.svc.Addr("udp").String())
		if err != nil {
			t.Fatal(err)
		}
		first := ""
		buf := make([]byte, 100)
		for i := range 4 {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprintf(c, "f%d-%d", flow, i)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			who := strings.SplitN(string(buf[:n]), " ", 2)[0]
			if first == "" {
				first = who
			} else if who != first {
				t.Fatalf("flow %d moved from %s to %s", flow, first, who)
			}
		}
		seen[first] = true
		c.Close()
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("flows went to %v, want both targets", seen)
	}
}

// pingUDP sends n "ping i" datagrams from one socket to addr and checks
// each "echo ping i" answer; the socket (one flow) is returned open.
func pingUDP(t *testing.T, addr string, n int) net.Conn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	for i := range n {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "ping %d", i)
		if m, err := c.Read(buf); err != nil || string(buf[:m]) != fmt.Sprintf("echo ping %d", i) {
			c.Close()
			t.Fatalf("udp %d: %q %v", i, buf[:m], err)
		}
	}
	return c
}
