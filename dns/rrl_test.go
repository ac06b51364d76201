package dnsserver

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestRRL(t *testing.T) {
	cfg := testConfig(t)
	cfg.RRL.ResponsesPerSecond = 5
	srv := start(t, cfg)
	c, err := dns.Dial("udp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	const sent = 40
	for range sent {
		if err := c.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	full, tc := 0, 0
	for {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		r, err := c.ReadMsg()
		if err != nil {
			break
		}
		if r.Truncated {
			tc++
		} else {
			full++
		}
	}
	if full < 5 || full > 8 || tc == 0 || full+tc >= sent {
		t.Fatalf("RRL 5/s, slip 2, %d queries: %d full answers, %d truncated", sent, full, tc)
	}
	t.Logf("%d queries: %d answered, %d truncated (slip), %d dropped", sent, full, tc, sent-full-tc)
	// TCP is never limited.
	for range 10 {
		if r := exchange(t, "tcp", srv.Addr(), m); len(r.Answer) != 2 {
			t.Fatalf("TCP answer limited: %v", r)
		}
	}
}
