package l4

import (
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
)

// proxyV2Sig is the PROXY protocol v2 signature.
var proxyV2Sig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// AppendProxyV2 appends a PROXY protocol v2 header (command PROXY,
// transport STREAM or DGRAM) telling a target that a connection came from
// src to dst. Mixed address families are sent as IPv6 (v4-mapped); an
// invalid address makes a LOCAL header (no addresses).
func AppendProxyV2(b []byte, src, dst netip.AddrPort, udp bool) []byte {
	b = append(b, proxyV2Sig[:]...)
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if !s.IsValid() || !d.IsValid() {
		return append(b, 0x20, 0x00, 0x00, 0x00) // v2 LOCAL, UNSPEC
	}
	b = append(b, 0x21) // v2, PROXY
	transport := byte(0x1)
	if udp {
		transport = 0x2
	}
	if s.Is4() && d.Is4() {
		b = append(b, 0x10|transport, 0, 12)
		a4, b4 := s.As4(), d.As4()
		b = append(b, a4[:]...)
		b = append(b, b4[:]...)
	} else {
		b = append(b, 0x20|transport, 0, 36)
		a16, b16 := s.As16(), d.As16()
		b = append(b, a16[:]...)
		b = append(b, b16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// ParseProxyV2 parses a PROXY v2 header at the start of b (targets and
// tests use it); it returns the addresses and the header's length.
func ParseProxyV2(b []byte) (src, dst netip.AddrPort, n int, err error) {
	if len(b) < 16 || [12]byte(b[:12]) != proxyV2Sig {
		return src, dst, 0, errors.New("proxy v2: no signature")
	}
	if b[12]>>4 != 2 {
		return src, dst, 0, errors.New("proxy v2: bad version")
	}
	l := int(binary.BigEndian.Uint16(b[14:16]))
	if len(b) < 16+l {
		return src, dst, 0, errors.New("proxy v2: short header")
	}
	body := b[16 : 16+l]
	if b[12]&0xF == 0 { // LOCAL
		return src, dst, 16 + l, nil
	}
	switch b[13] >> 4 {
	case 1:
		if len(body) < 12 {
			return src, dst, 0, errors.New("proxy v2: short IPv4 addresses")
		}
		src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:10]))
		dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:12]))
	case 2:
		if len(body) < 36 {
			return src, dst, 0, errors.New("proxy v2: short IPv6 addresses")
		}
		src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[0:16])), binary.BigEndian.Uint16(body[32:34]))
		dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[16:32])), binary.BigEndian.Uint16(body[34:36]))
	default:
		return src, dst, 0, errors.New("proxy v2: unsupported family")
	}
	return src, dst, 16 + l, nil
}

// maxHello bounds the bytes read while looking for a ClientHello.
const maxHello = 64 << 10

// errNotTLS means the client did not start with a TLS handshake.
var errNotTLS = errors.New("not a TLS ClientHello")

// PeekClientHello reads a TLS ClientHello from r and returns its SNI
// server name ("" when absent) and every byte read, to be replayed to the
// target.
func PeekClientHello(r io.Reader) (sni string, raw []byte, err error) {
	raw = make([]byte, 0, 2048)
	var hs []byte // handshake bytes gathered from records
	for {
		var hdr [5]byte
		if n, err := io.ReadFull(r, hdr[:]); err != nil {
			return "", append(raw, hdr[:n]...), err
		}
		raw = append(raw, hdr[:]...)
		if hdr[0] != 22 || hdr[1] != 3 {
			return "", raw, errNotTLS
		}
		n := int(binary.BigEndian.Uint16(hdr[3:5]))
		if n == 0 || n > 16384+2048 || len(raw)+n > maxHello {
			return "", raw, errNotTLS
		}
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		if m, err := io.ReadFull(r, raw[start:]); err != nil {
			return "", raw[:start+m], err
		}
		hs = append(hs, raw[start:]...)
		if len(hs) >= 4 {
			if hs[0] != 1 {
				return "", raw, errNotTLS
			}
			l := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
			if l > maxHello {
				return "", raw, errNotTLS
			}
			if len(hs) >= 4+l {
				sni, err := parseClientHello(hs[4 : 4+l])
				return sni, raw, err
			}
		}
	}
}

// parseClientHello returns the server name of a ClientHello body.
func parseClientHello(b []byte) (string, error) {
	c := cursor{b: b}
	c.skip(2 + 32)       // version, random
	c.skip(int(c.u8()))  // session id
	c.skip(int(c.u16())) // cipher suites
	c.skip(int(c.u8()))  // compression methods
	if c.bad {
		return "", errNotTLS
	}
	if len(c.b) == 0 {
		return "", nil // no extensions
	}
	ext := cursor{b: c.bytes(int(c.u16()))}
	for !ext.bad && len(ext.b) >= 4 {
		typ := ext.u16()
		data := ext.bytes(int(ext.u16()))
		if typ != 0 || ext.bad {
			continue
		}
		list := cursor{b: data}
		list = cursor{b: list.bytes(int(list.u16()))}
		for !list.bad && len(list.b) >= 3 {
			nameType := list.u8()
			name := list.bytes(int(list.u16()))
			if nameType == 0 && !list.bad {
				for _, ch := range name {
					if ch <= ' ' || ch >= 0x7f {
						return "", errNotTLS
					}
				}
				return string(name), nil
			}
		}
		return "", errNotTLS
	}
	if ext.bad {
		return "", errNotTLS
	}
	return "", nil
}

type cursor struct {
	b   []byte
	bad bool
}

func (c *cursor) skip(n int) { c.bytes(n) }

func (c *cursor) bytes(n int) []byte {
	if c.bad || n < 0 || n > len(c.b) {
		c.bad = true
		return nil
	}
	out := c.b[:n]
	c.b = c.b[n:]
	return out
}

func (c *cursor) u8() byte {
	b := c.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (c *cursor) u16() uint16 {
	b := c.bytes(2)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}
