package dnsserver

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
)

// The fast path: answers precomputed in wire format, keyed by the shape of
// the query (lower-case name, type, EDNS presence, DO, payload limit, view),
// built by the slow path on first use and thrown away with the snapshot
// when a zone or a health state changes. A hit copies the answer, patches
// the ID, the RD bit and the question's letter case (answer owners are
// compression pointers to the question, so they follow).

const cacheShards = 32

// wireCache is a bounded map of precomputed answers. Entries are never
// modified once stored.
type wireCache struct {
	max    int64
	n      atomic.Int64
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[string]*cached
}

type cached struct {
	wire  []byte
	rcode int
}

func newWireCache(max int) *wireCache {
	if max <= 0 {
		return nil
	}
	c := &wireCache{max: int64(max)}
	for i := range c.shards {
		c.shards[i].m = map[string]*cached{}
	}
	return c
}

func shardOf(key []byte) int {
	// FNV-1a over the key.
	h := uint32(2166136261)
	for _, b := range key {
		h ^= uint32(b)
		h *= 16777619
	}
	return int(h % cacheShards)
}

func (c *wireCache) get(key []byte) *cached {
	sh := &c.shards[shardOf(key)]
	sh.mu.RLock()
	e := sh.m[string(key)]
	sh.mu.RUnlock()
	return e
}

func (c *wireCache) put(key []byte, wire []byte, rcode int) {
	if c.n.Load() >= c.max {
		return
	}
	e := &cached{wire: append([]byte(nil), wire...), rcode: rcode}
	sh := &c.shards[shardOf(key)]
	sh.mu.Lock()
	if _, ok := sh.m[string(key)]; !ok {
		sh.m[string(key)] = e
		c.n.Add(1)
	}
	sh.mu.Unlock()
}

func (c *wireCache) len() int {
	if c == nil {
		return 0
	}
	return int(c.n.Load())
}

// fastKey parses a plain query (one question, no answer or authority, at
// most an OPT record without options) and appends its cache key to key.
// It returns the end offset of the question name, or ok=false when the
// query must take the slow path.
func fastKey(key, raw []byte, tcp bool, viewIdx int) (_ []byte, qend int, ok bool) {
	if len(raw) < 17 {
		return key, 0, false
	}
	// QR=0, opcode=0; TC=0; counts qd=1 an=0 ns=0 ar<=1.
	if raw[2]&0xFA != 0 || raw[4] != 0 || raw[5] != 1 || raw[6]|raw[7]|raw[8]|raw[9]|raw[10] != 0 || raw[11] > 1 {
		return key, 0, false
	}
	arcount := raw[11]
	hdr := len(key)
	key = append(key, 0, 0, 0, 0, 0, 0) // type, limit, flags, view
	off := 12
	for {
		if off >= len(raw) {
			return key, 0, false
		}
		l := int(raw[off])
		if l == 0 {
			off++
			break
		}
		if l > 63 || off+1+l > len(raw) || off+1+l-12 > 254 {
			return key, 0, false
		}
		key = append(key, byte(l))
		for _, b := range raw[off+1 : off+1+l] {
			if 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			key = append(key, b)
		}
		off += 1 + l
	}
	qend = off
	if off+4 > len(raw) {
		return key, 0, false
	}
	qtype := binary.BigEndian.Uint16(raw[off:])
	if binary.BigEndian.Uint16(raw[off+2:]) != 1 { // class IN
		return key, 0, false
	}
	off += 4
	limit, flags := minUDP, byte(0)
	if arcount == 1 {
		// Root name, type OPT, class = payload, ext-rcode, version, flags, rdlen 0.
		if off+11 != len(raw) || raw[off] != 0 || binary.BigEndian.Uint16(raw[off+1:]) != 41 || raw[off+6] != 0 || binary.BigEndian.Uint16(raw[off+9:]) != 0 {
			return key, 0, false
		}
		if raw[off+5] != 0 { // extended rcode must be zero in a query
			return key, 0, false
		}
		limit = min(max(int(binary.BigEndian.Uint16(raw[off+3:])), minUDP), EDNSSize)
		flags = 1
		if raw[off+7]&0x80 != 0 {
			flags |= 2
		}
	} else if off != len(raw) {
		return key, 0, false
	}
	if tcp {
		limit = maxTCP
	}
	binary.BigEndian.PutUint16(key[hdr:], qtype)
	binary.BigEndian.PutUint16(key[hdr+2:], uint16(limit))
	key[hdr+4] = flags
	key[hdr+5] = byte(viewIdx)
	return key, qend, true
}

// patch turns a cached answer into the answer to raw: ID, RD and the
// question name's letter case.
func patch(out, raw []byte, qend int) {
	out[0], out[1] = raw[0], raw[1]
	out[2] = out[2]&^0x01 | raw[2]&0x01
	copy(out[12:qend], raw[12:qend])
}
