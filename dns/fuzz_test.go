package dnsserver

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// FuzzServeDNS feeds raw packets to the query handler (fast path and slow
// path, UDP and TCP limits): it must never panic, and whatever it answers
// must parse and carry the query's ID.
func FuzzServeDNS(f *testing.F) {
	for _, c := range diffCases {
		if b, err := c.msg().Pack(); err == nil {
			f.Add(b, false)
		}
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}, false)  // compression loop
	f.Add([]byte{0, 1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, true) // absurd counts
	f.Add([]byte{0, 1}, false)
	cfg := testConfig(f)
	cfg.CacheEntries = 1000
	srv := newFuzzService(f, cfg)
	w := newWorker()
	src := netip.MustParseAddrPort("127.0.0.1:5300")
	f.Fuzz(func(t *testing.T, raw []byte, tcp bool) {
		out := srv.serve(w, raw, src, tcp)
		if out == nil {
			return
		}
		var m dns.Msg
		if err := m.Unpack(out); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		if m.Id != uint16(raw[0])<<8|uint16(raw[1]) || !m.Response {
			t.Fatalf("answer ID %d / QR %v for query % x", m.Id, m.Response, raw[:2])
		}
		if !tcp && len(out) > EDNSSize {
			t.Fatalf("UDP answer of %d bytes", len(out))
		}
	})
}

// newFuzzService builds a service without network listeners.
func newFuzzService(tb testing.TB, cfg *Config) *Service {
	ts := start(tb, cfg)
	return ts.Service
}
