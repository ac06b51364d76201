package dnsserver

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestUDPAnswersWithoutAllocating: once an answer is in the answer cache,
// a UDP query costs the server no allocation (on Linux, where the batch
// I/O is dnsd's own): with a large zone in the heap, garbage set off
// collections that showed in p99 latency.
func TestUDPAnswersWithoutAllocating(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the allocation-free batch I/O is Linux only")
	}
	srv := start(t, testConfig(t))
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	exchange(t, "udp", srv.Addr(), m) // fills the answer cache
	query, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4096)
	ask := func() {
		if _, err := c.Write(query); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.Read(buf)
		if err != nil || n < 12 || buf[0] != query[0] || buf[1] != query[1] {
			t.Fatalf("answer: %d bytes, %v", n, err)
		}
	}
	for range 100 {
		ask() // warm: pooled buffers, timers, metrics children
	}
	// The whole process is counted (client included, which allocates
	// nothing here either), so a little slack for the runtime and other
	// goroutines: x/net's batch reads took two allocations per query.
	const queries = 2000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range queries {
		ask()
	}
	runtime.ReadMemStats(&after)
	n := after.Mallocs - before.Mallocs
	t.Logf("%d allocations for %d queries", n, queries)
	if n > queries/10 {
		t.Errorf("%d allocations for %d queries", n, queries)
	}
}

// TestUDPOverIPv6: answers over an IPv6 socket go back to the querier
// (the batch I/O keeps the source's sockaddr as the kernel gave it).
func TestUDPOverIPv6(t *testing.T) {
	ln, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback here")
	}
	ln.Close()
	cfg := testConfig(t)
	cfg.Listen = "[::1]:0"
	srv := start(t, cfg)
	for _, name := range []string{"www.example.test.", "nothing.example.test."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		if r := exchange(t, "udp", srv.Addr(), m); r.Id != m.Id || !r.Response {
			t.Errorf("%s: %v", name, r)
		}
	}
}
