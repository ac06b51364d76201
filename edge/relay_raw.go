package edge

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	"github.com/edgestack/edgestack/internal/httpguard"
	"github.com/edgestack/edgestack/internal/sockio"
)

// The raw relay: most relayed requests get, again, an answer the edge
// must not store (no-store or private). For those the handler's path
// parses the head into an http.Response, builds an entry that is never
// stored, copies its header into the response writer's map and writes
// that map out sorted. The raw relay takes such an answer as bytes
// instead (origin.Taker): it checks the head, then writes the viewer the
// same response the handler's path would (same fields, sorted the same
// way, same Age, X-Cache, Date and framing) from the head's bytes. Any
// head it is not sure about (another status, a field it would have to
// interpret, a malformed line, an answer that may be stored...) is left
// to the handler's path, read from the same bytes:
// TestRawRelayMatchesHandlerPath and FuzzRawRelayHead compare the two.

// rawRelayMax caps the bodies the raw relay holds to send in one write.
const rawRelayMax = 64 << 10

// rawRelayKeep is the largest response buffer a connection keeps for
// its next relayed request.
const rawRelayKeep = 16 << 10

// maxRawFields caps the fields of a head the raw relay takes (net/http
// refuses heads with very many).
const maxRawFields = 100

// rawField is one field line of a taken head: its canonical name (in
// rawHead.names) and its value (in the head).
type rawField struct {
	name, value []byte
	drop        bool // not sent on (hop-by-hop, listed in Connection, ...)
}

// rawHead is what the raw relay keeps of the head it took (in the
// connection's relayConn, reused).
type rawHead struct {
	limit    int64 // bodies longer than this are not taken
	compress bool  // the behavior compresses: compressible answers vary
	vary     bool  // add Vary: Accept-Encoding (as newEntry does)
	length   int64
	fields   []rawField
	names    []byte                          // canonical names, back to back
	date     []byte                          // the first Date value (nil: none)
	age      []byte                          // the first Age value (nil: none)
	cc       [4]string                       // the Cache-Control values (a head with more is not taken)
	out      []byte                          // the response to the viewer
	sorted   []outField                      // scratch for its fields
	listed   [][]byte                        // the names listed in Connection
	takeHead func(head []byte) (int64, bool) // take, bound once: no closure per request
}

// take is the relay's origin.Taker: it parses head and takes it when the
// answer is a 200 that cannot be stored, with a body of a known length
// no longer than limit, and nothing the handler's path would interpret
// differently from a copy.
func (r *rawHead) take(head []byte) (int64, bool) {
	line, rest, ok := cutLine(head)
	if !ok || len(line) < 12 || string(line[:12]) != "HTTP/1.1 200" || len(line) > 12 && line[12] != ' ' {
		return 0, false
	}
	r.fields, r.names, r.listed = r.fields[:0], r.names[:0], r.listed[:0]
	r.date, r.age, r.length = nil, nil, -1
	ncc, hasCT := 0, false
	var firstCT []byte
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return 0, false
		}
		if len(line) == 0 {
			break
		}
		if len(r.fields) == maxRawFields {
			return 0, false
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validValue(line[colon+1:]) {
			return 0, false // obs-fold (a leading space is no token), no name, control bytes
		}
		if !httpguard.IsToken(line[:colon]) {
			return 0, false
		}
		start := len(r.names)
		r.names = httpguard.AppendCanonicalKey(r.names, line[:colon])
		name := r.names[start:]
		value := httpguard.TrimOWS(line[colon+1:])
		f := rawField{name: name, value: value}
		switch string(name) {
		case "Content-Length":
			if r.length >= 0 || len(value) == 0 || len(value) > 18 || !allDigits(bstring(value)) {
				return 0, false
			}
			r.length, _ = strconv.ParseInt(bstring(value), 10, 64)
			f.drop = true
		case "Transfer-Encoding", "Vary", "Content-Encoding":
			// Framing to interpret; a response that varies; one whose
			// encoding the entry would record.
			return 0, false
		case "Connection":
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				if bytes.EqualFold(tok, []byte("close")) {
					return 0, false // not a connection the origin keeps
				}
				if len(tok) > 0 {
					r.listed = append(r.listed, tok)
				}
			}
			f.drop = true
		case "Cache-Control":
			if ncc == len(r.cc) {
				return 0, false
			}
			r.cc[ncc] = bstring(value)
			ncc++
		case "Content-Type":
			if !hasCT {
				firstCT, hasCT = value, true
			}
		case "Date":
			if r.date == nil {
				r.date = value[:len(value):len(value)]
			}
		case "Age":
			if r.age == nil {
				r.age = value[:len(value):len(value)]
			}
		}
		f.drop = f.drop || isDropped(name)
		r.fields = append(r.fields, f)
	}
	if r.length < 0 || r.length > r.limit || (!hasCT && r.length > 0) {
		return 0, false // unknown length, too long to hold, or a type to sniff
	}
	cc := cache.ParseCacheControl(r.cc[:ncc])
	firstCC := r.cc[0]
	clear(r.cc[:ncc]) // no strings into the head once it is read past
	if !cc.NoStore && !cc.Private {
		return 0, false // it may be stored: the handler's path decides
	}
	// Compression: relayed viewers accept no encoding, so nothing is
	// compressed, but a compressible answer gets Vary: Accept-Encoding.
	r.vary = r.compress && compressibleFields(http.StatusOK, "", firstCC, bstring(firstCT))
	for i := range r.fields {
		for _, l := range r.listed {
			if canonicalEqual(r.fields[i].name, l) {
				r.fields[i].drop = true
			}
		}
	}
	return r.length, true
}

// cutLine cuts the CRLF-terminated line at the start of b; false for a
// bare LF or no line end.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

// validValue reports whether a field value has only the bytes net/http
// accepts there (no control bytes but HT).
func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// canonicalEqual reports whether the canonical name equals token (a
// Connection-listed name) once canonicalised as the stored header's
// filter does (a token with other bytes matches no field).
func canonicalEqual(name, token []byte) bool {
	return len(name) == len(token) && httpguard.IsToken(token) && bytes.EqualFold(name, token) // ASCII only: a token
}

// isDropped reports whether a field of the origin's answer is left out of
// the viewer's: hop-by-hop and per-response fields (cache.StoredHeader),
// the surrogate fields (the entry's), and the length (set again).
func isDropped(name []byte) bool {
	switch string(name) {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Age", "X-Cache",
		"Surrogate-Key", "Surrogate-Control", "Content-Length":
		return true
	}
	return false
}

// outField is one field of the viewer's response.
type outField struct{ name, value string }

// appendResponse appends to dst the viewer's response head for the taken
// answer: what deliver puts in the response writer's map (the kept
// fields, the behavior's added headers, Age, X-Cache) and the inline
// writer writes (sorted by name, Date if missing, Content-Length,
// Connection: close when closing).
func (r *rawHead) appendResponse(dst []byte, b *behavior, age time.Duration, closing bool, now time.Time) []byte {
	fields := r.sorted[:0]
	for _, f := range r.fields {
		if !f.drop && !b.addsHeader(f.name) {
			fields = append(fields, outField{bstring(f.name), bstring(f.value)})
		}
	}
	for _, h := range b.headers {
		for _, v := range h.value {
			fields = append(fields, outField{h.key, v})
		}
	}
	fields = append(fields, outField{"Age", ageValue(age)[0]}, outField{"X-Cache", xcache[stMiss][0]})
	if r.vary {
		fields = append(fields, outField{"Vary", "Accept-Encoding"})
	}
	slices.SortStableFunc(fields, func(a, b outField) int { return strings.Compare(a.name, b.name) })
	dst = append(dst, "HTTP/1.1 200 OK\r\n"...)
	hasDate := false
	for _, f := range fields {
		hasDate = hasDate || f.name == "Date"
		dst = appendField(dst, f.name, f.value)
	}
	clear(fields) // no strings into a head that is about to change
	r.sorted = fields[:0]
	if !hasDate {
		dst = appendDate(dst, now)
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, r.length, 10)
	if closing {
		dst = append(dst, "\r\nConnection: close"...)
	}
	return append(dst, "\r\n\r\n"...)
}

// initialAge is the Age the handler's path gives the answer when it is
// sent at once: its corrected initial age (RFC 9111 4.2.3).
func (r *rawHead) initialAge(reqTime, respTime time.Time) time.Duration {
	return cache.CorrectedInitialAgeOf(bstring(r.date), bstring(r.age), reqTime, respTime)
}

// relayRaw sends the viewer a taken answer (the head was taken by
// rc.raw.take; body reads the rest) and does the handler's bookkeeping
// for it: the marker's renewal, the counters, the access log's fields.
// On an error reading the body it answers as the handler's path does.
func (f *fastServer) relayRaw(c net.Conn, st *reqState, rc *relayConn, ic *inlineConn, marker *cache.Entry, body io.ReadCloser,
	reqTime, respTime time.Time, closeConn bool) (closeAfter bool) {
	h, b, r := f.h, st.b, &rc.raw
	closing := closeConn || f.closing.Load()
	out := r.appendResponse(r.out[:0], b, r.initialAge(reqTime, respTime), closing, respTime)
	headLen := len(out)
	out = slices.Grow(out, int(r.length))[:headLen+int(r.length)]
	_, err := io.ReadFull(body, out[headLen:])
	st.upAddr, st.upStatus, st.upDur = b.origin.Name(), http.StatusOK, respTime.Sub(reqTime)
	if err != nil {
		_ = body.Close()
		r.out = out[:0]
		w := &ic.w
		w.reset(c, st.r)
		w.closing = &f.closing
		ok := f.recovering(st.r.RequestURI, func() {
			h.serveFill(w, st, marker, st.key, fillResult{err: err, upAddr: st.upAddr, upStatus: st.upStatus})
		})
		return !ok || w.finish() != nil || w.closeAfter
	}
	h.m.rawRelay.Inc()
	h.renewHitForMiss(st, respTime)
	st.status, st.code, st.upBytes = stMiss, http.StatusOK, r.length
	b.d.counters[stMiss].Inc()
	if st.r.Method == http.MethodHead {
		out = out[:headLen]
	} else {
		st.bytes = r.length
		b.d.bytes.Add(float64(r.length))
	}
	if f.write > 0 {
		_ = c.SetWriteDeadline(time.Now().Add(f.write))
	}
	_, err = sockio.WriteBuffers(c, net.Buffers{out})
	if cap(out) <= rawRelayKeep {
		r.out = out[:0]
	} else {
		r.out = nil // an idle connection keeps no large buffer
	}
	return err != nil || closing
}
