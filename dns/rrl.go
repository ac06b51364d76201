package dnsserver

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// RRLConfig is response rate limiting (off by default): identical answers
// to one client prefix beyond responses_per_second are dropped, except
// that every slip-th is sent truncated (TC=1, no data) so real clients
// retry over TCP, which is never limited.
type RRLConfig struct {
	// ResponsesPerSecond per (client prefix, answer); 0 turns RRL off.
	// Default 0.
	ResponsesPerSecond int `yaml:"responses_per_second"`
	// Slip sends every slip-th limited answer truncated instead of
	// dropping it; 0 drops them all. Default 2.
	Slip int `yaml:"slip"`
	// IPv4Prefix and IPv6Prefix group clients. Defaults 24 and 56.
	IPv4Prefix int `yaml:"ipv4_prefix"`
	IPv6Prefix int `yaml:"ipv6_prefix"`
}

const (
	rrlShards   = 16
	rrlMaxShard = 1 << 16 // buckets per shard before the shard is cleared
)

// rrl keeps one token bucket per (client prefix, qtype, rcode, qname);
// NXDOMAIN answers share one bucket per prefix (random names must not
// escape the limit).
type rrl struct {
	cfg    RRLConfig
	shards [rrlShards]rrlShard
}

type rrlShard struct {
	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	tokens  float64
	last    time.Time
	limited int
}

func newRRL(c RRLConfig) *rrl {
	if c.ResponsesPerSecond <= 0 {
		return nil
	}
	r := &rrl{cfg: c}
	for i := range r.shards {
		r.shards[i].m = map[string]*bucket{}
	}
	return r
}

// verdict is what to do with an answer.
type verdict uint8

const (
	rrlSend verdict = iota
	rrlDrop
	rrlSlip
)

// check decides for the UDP answer out to src; key is scratch space.
func (r *rrl) check(key []byte, src netip.Addr, out []byte, now time.Time) ([]byte, verdict) {
	src = src.Unmap()
	bits := r.cfg.IPv6Prefix
	if src.Is4() {
		bits = r.cfg.IPv4Prefix
	}
	p, _ := src.Prefix(bits)
	key = p.Addr().AppendTo(key[:0])
	qend := questionEnd(out)
	if qend < 0 {
		return key, rrlSend
	}
	rcode := out[3] & 0x0F
	key = append(key, rcode, out[qend-4], out[qend-3])
	if rcode != 3 { // NXDOMAIN: one bucket per prefix
		for _, b := range out[12 : qend-4] {
			if 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			key = append(key, b)
		}
	}
	sh := &r.shards[shardOf(key)%rrlShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.m[string(key)]
	rate := float64(r.cfg.ResponsesPerSecond)
	if b == nil {
		if len(sh.m) >= rrlMaxShard {
			clear(sh.m)
		}
		b = &bucket{tokens: rate, last: now}
		sh.m[string(key)] = b
	}
	b.tokens = min(rate, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return key, rrlSend
	}
	b.limited++
	if r.cfg.Slip > 0 && b.limited%r.cfg.Slip == 0 {
		return key, rrlSlip
	}
	return key, rrlDrop
}

// questionEnd returns the offset after the question of a message with one
// uncompressed question, or -1.
func questionEnd(m []byte) int {
	if len(m) < 12 || binary.BigEndian.Uint16(m[4:]) != 1 {
		return -1
	}
	off := 12
	for off < len(m) && m[off] != 0 {
		if m[off] >= 0x40 {
			return -1
		}
		off += int(m[off]) + 1
	}
	off += 5
	if off > len(m) {
		return -1
	}
	return off
}

// truncated turns an answer into its truncated form: header and question,
// TC=1, no records.
func truncated(out []byte) []byte {
	q := questionEnd(out)
	if q < 0 {
		return nil
	}
	out = out[:q]
	out[2] |= 0x02
	clear(out[6:12])
	return out
}
