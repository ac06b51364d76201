package l4

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/netip"
	"testing"
	"time"
)

// clientHello captures the first flight of a real TLS client.
func clientHello(t testing.TB, sni string) []byte {
	c, s := net.Pipe()
	go func() {
		tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
		_ = tc.Handshake()
		c.Close()
	}()
	_ = s.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64<<10)
	var out []byte
	for {
		n, err := s.Read(buf)
		out = append(out, buf[:n]...)
		if _, _, perr := PeekClientHello(bytes.NewReader(out)); perr == nil || err != nil {
			break
		}
	}
	s.Close()
	return out
}

func TestPeekClientHello(t *testing.T) {
	type tc struct {
		name string
		in   []byte
		sni  string
		ok   bool
	}
	hello := clientHello(t, "www.example.test")
	for _, x := range []tc{
		{"real hello", hello, "www.example.test", true},
		{"no sni", clientHello(t, ""), "", true},
		{"plain http", []byte("GET / HTTP/1.1\r\n\r\n"), "", false},
		{"truncated", hello[:40], "", false},
		{"empty", nil, "", false},
	} {
		t.Run(x.name, func(t *testing.T) {
			sni, raw, err := PeekClientHello(bytes.NewReader(x.in))
			if (err == nil) != x.ok || sni != x.sni {
				t.Fatalf("sni %q err %v; want %q ok=%v", sni, err, x.sni, x.ok)
			}
			if x.ok && !bytes.Equal(raw, x.in[:len(raw)]) {
				t.Errorf("raw bytes are not the input's prefix")
			}
		})
	}
}

func TestProxyV2(t *testing.T) {
	type tc struct{ src, dst string }
	for _, x := range []tc{
		{"192.0.2.1:5555", "198.51.100.2:443"},
		{"[2001:db8::1]:5555", "[2001:db8::2]:443"},
		{"192.0.2.1:5555", "[2001:db8::2]:443"},
	} {
		src, dst := netip.MustParseAddrPort(x.src), netip.MustParseAddrPort(x.dst)
		b := AppendProxyV2(nil, src, dst, false)
		s, d, n, err := ParseProxyV2(b)
		if err != nil || n != len(b) || s.Port() != src.Port() || d.Port() != dst.Port() || s.Addr().Unmap() != src.Addr() && s.Addr() != netip.AddrFrom16(src.Addr().As16()) {
			t.Errorf("%v: got %v %v %d %v", x, s, d, n, err)
		}
	}
}

// FuzzPeekClientHello: any client bytes; no panic, and what is returned
// for replay is exactly a prefix of the input.
func FuzzPeekClientHello(f *testing.F) {
	f.Add(clientHello(f, "a.example"))
	f.Add([]byte{22, 3, 1, 0, 5, 1, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		_, raw, _ := PeekClientHello(bytes.NewReader(in))
		if len(raw) > len(in) || !bytes.Equal(raw, in[:len(raw)]) {
			t.Fatalf("raw is not a prefix of the input")
		}
	})
}

// FuzzProxyV2: the writer's output parses back to the same addresses, and
// the parser survives any input.
func FuzzProxyV2(f *testing.F) {
	f.Add([]byte{192, 0, 2, 1}, []byte{10, 0, 0, 1}, uint16(1), uint16(2), false, []byte{})
	f.Add(bytes.Repeat([]byte{0x20}, 16), []byte{10, 0, 0, 1}, uint16(1), uint16(2), true, proxyV2Sig[:])
	f.Fuzz(func(t *testing.T, a, b []byte, pa, pb uint16, udp bool, junk []byte) {
		_, _, _, _ = ParseProxyV2(junk)
		sa, ok1 := netip.AddrFromSlice(a)
		da, ok2 := netip.AddrFromSlice(b)
		if !ok1 || !ok2 {
			return
		}
		src, dst := netip.AddrPortFrom(sa, pa), netip.AddrPortFrom(da, pb)
		out := AppendProxyV2(nil, src, dst, udp)
		s, d, n, err := ParseProxyV2(out)
		if err != nil || n != len(out) {
			t.Fatalf("parse own header: %v", err)
		}
		if s.Port() != pa || d.Port() != pb || s.Addr().Unmap() != sa.Unmap() || d.Addr().Unmap() != da.Unmap() {
			t.Fatalf("round trip %v %v -> %v %v", src, dst, s, d)
		}
	})
}
