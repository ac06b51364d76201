package lb

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTargetsRestart restarts every target on its address while lbd holds
// many idle keep-alive connections to them, all now closed by the old
// processes. Requests right after must be answered by the restarted
// targets (a stale pooled connection is retried on a fresh one, and its
// stale siblings dropped), and no target may be passively ejected for
// connections that died while idle. Clients on HTTP/1.1, and on HTTP/2
// over TLS (which the fast engine forwards on the same pools).
func TestTargetsRestart(t *testing.T) {
	engines(t, func(t *testing.T) { testTargetsRestart(t, false) })
	t.Run("http2 clients", func(t *testing.T) { testTargetsRestart(t, true) })
}

func testTargetsRestart(t *testing.T, h2 bool) {
	a := newBackend(t, "a", nil)
	b := newBackend(t, "b", nil)
	certFile, keyFile, cert := writeCert(t, t.TempDir(), "lb", "lb.test")
	h := startLB(t, `
admin:
  listen: 127.0.0.1:0
target_groups:
  - name: t
    targets: [{address: "`+a.addr+`"}, {address: "`+b.addr+`"}]
    health_check: {disabled: true}
    passive_health: {consecutive_failures: 1, eject_for: 1h}
listeners:
  - name: front
    listen: 127.0.0.1:0
    default_action: {forward: {target_group: t}}
  - name: tls
    protocol: https
    listen: 127.0.0.1:0
    tls:
      certificates: [{cert_file: `+certFile+`, key_file: `+keyFile+`}]
    default_action: {forward: {target_group: t}}
`)
	url := h.url("front") + "/x"
	newClient := func() *http.Client {
		return &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	}
	if h2 {
		url = "https://" + h.svc.Addr("tls").String() + "/x"
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		newClient = func() *http.Client {
			return &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true,
				TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "lb.test"}}, Timeout: 5 * time.Second}
		}
	}

	// Fill the pools: 24 clients at once leave ~12 idle connections to each.
	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient()
			defer c.CloseIdleConnections()
			for range 20 {
				if resp, err := c.Get(url); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Wait()

	restart := func(old *backend) {
		_ = old.srv.Close() // closes its idle connections: lbd's pooled ones see FIN
		var ln net.Listener
		var err error
		for i := 0; i < 50; i++ {
			if ln, err = net.Listen("tcp", old.addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("relisten on %s: %v", old.addr, err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "new-"+old.name)
		})}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	restart(a)
	restart(b)
	time.Sleep(50 * time.Millisecond) // the FINs reach lbd's sockets

	client := newClient()
	defer client.CloseIdleConnections()
	seen := map[string]int{}
	for i := range 40 {
		code, body, _ := get(t, client, url)
		if code != 200 || !strings.HasPrefix(body, "new-") {
			t.Fatalf("request %d after the restart: %d %q", i, code, body)
		}
		seen[body]++
	}
	if h2 {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("client spoke %s, want HTTP/2", resp.Proto)
		}
	}
	if seen["new-a"] == 0 || seen["new-b"] == 0 {
		t.Errorf("answers %v: a restarted target left rotation", seen)
	}
	if m := h.metrics(); strings.Contains(m, `state="unhealthy",target="`+a.addr+`",target_group="t"} 1`) ||
		strings.Contains(m, `state="unhealthy",target="`+b.addr+`",target_group="t"} 1`) {
		t.Errorf("a target was ejected for connections that died while idle")
	}
}
