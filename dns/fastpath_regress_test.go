package dnsserver

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// TestFastPathStoresOnlyEchoedQuestions: an answer without the question
// (FORMERR to a query of type OPT) must not be stored, since a hit patches
// the query's question over the stored bytes. Found by FuzzServeDNS.
func TestFastPathStoresOnlyEchoedQuestions(t *testing.T) {
	cfg := testConfig(t)
	cfg.CacheEntries = 1000
	srv := newFuzzService(t, cfg)
	w := newWorker()
	raw := []byte("00\x000\x00\x01\x00\x00\x00\x00\x00\x01\aeXAmple\x04test\x00\x00)\x00\x01\x00\x00)00\x00\x0000\x00\x00")
	for i := 0; i < 3; i++ {
		out := srv.serve(w, raw, netip.MustParseAddrPort("127.0.0.1:5300"), false)
		var m dns.Msg
		if err := m.Unpack(out); err != nil {
			t.Fatalf("answer %d does not parse: %v (% x)", i, err, out)
		}
		if m.Rcode != dns.RcodeFormatError {
			t.Fatalf("answer %d: rcode %s, want FORMERR", i, dns.RcodeToString[m.Rcode])
		}
	}
}
