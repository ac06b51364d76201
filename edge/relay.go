package edge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	"github.com/edgestack/edgestack/edge/origin"
)

// The pass relay serves, in the fast server, a plain GET or HEAD whose
// key holds a hit-for-miss marker (the origin's last answer for it could
// not be cached) and whose behavior's origin is plain HTTP. It is the full
// handler's path for such a request (a GET to the origin without
// coalescing, the entry, delivery through the in-place response writer)
// minus what that request does not need: parsing the head again into an
// http.Request with a context, building the origin request as an
// http.Request with its own timeout context and writing it with
// req.Write, and the handler chain. The origin gets the same bytes, the
// viewer the same response and the access log the same entry
// (TestPassRelayMatchesFullPath compares them). Requests outside that
// shape (a Via from the viewer, custom error pages on the behavior, a path
// with characters that need escaping...) take the in-place path as before.

// relayConn is what a connection keeps for relayed requests (in its
// inlineConn).
type relayConn struct {
	raw  rawHead
	req  http.Request
	url  url.URL
	hdr  []byte // the edge's fields for the origin request
	out  []byte // the origin request head
	host string // the last viewer Host, reused while it repeats
}

// emptyHeader is the viewer header a relayed request carries: the
// handler's path reads only fields a relayed request cannot have
// (conditionals, ranges, Accept-Encoding under compression, key headers),
// or, for a response with Vary, the real fields (built then).
var emptyHeader = http.Header{}

// relayable reports whether a request that found marker can be relayed.
func relayable(s *snapshot, b *behavior, marker *cache.Entry, path []byte, now time.Time) bool {
	if len(b.errors) > 0 || isTooLarge(marker) || marker.Age(now) > marker.Keep/2 {
		return false // the marker's renewal is left to the handler
	}
	if len(path) > len(acmePrefix) && string(path[:len(acmePrefix)]) == acmePrefix {
		return false // certificate challenges are answered before the edge
	}
	for _, ch := range path {
		if !pathSafe[ch] {
			return false
		}
	}
	return true
}

const acmePrefix = "/.well-known/acme-challenge/"

// pathSafe holds the bytes a path may have to be sent as it is (url's
// EscapedPath leaves them alone).
var pathSafe = func() (t [256]bool) {
	for _, c := range "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/" {
		t[c] = true
	}
	return
}()

// relayOrigin returns the plain-HTTP origin behind b's instrumented
// origin, or nil.
func relayOrigin(b *behavior) (*instrumented, *origin.HTTP) {
	ins, ok := b.origin.(*instrumented)
	if !ok {
		return nil, nil
	}
	o, ok := ins.Origin.(*origin.HTTP)
	if !ok || !o.Lean() {
		return nil, nil
	}
	return ins, o
}

// relayPass serves head (a GET or HEAD the hit path parsed: method, host,
// path, key) by the relay and consumes it; closeAfter asks the caller to
// close the connection.
func (f *fastServer) relayPass(c net.Conn, br *bufio.Reader, head []byte, ic *inlineConn, tlsState *tls.ConnectionState,
	s *snapshot, b *behavior, marker *cache.Entry, key, method string, host, path, target, referer, userAgent []byte, closeConn bool, now time.Time) (closeAfter bool) {
	ins, o := relayOrigin(b)
	h, rc := f.h, &ic.relay
	if rc.host != string(host) {
		rc.host = string(host)
	}
	rc.url = url.URL{Path: string(path)}
	if len(target) > len(path) {
		rc.url.RawQuery = string(target[len(path)+1:])
	}
	rc.req = http.Request{Method: method, URL: &rc.url, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: emptyHeader, Host: rc.host, RemoteAddr: ic.remote, RequestURI: string(target), Close: closeConn, TLS: tlsState}
	st := reqState{r: &rc.req, s: s, b: b, now: now, key: key}

	// The fields originRequest sets, in req.Write's (sorted) order.
	hdr := append(rc.hdr[:0], "Via: 1.1 edged\r\nX-Forwarded-For: "...)
	hdr = peerAddr(&rc.req).AppendTo(hdr)
	hdr = append(hdr, "\r\nX-Forwarded-Host: "...)
	hdr = append(hdr, host...)
	if tlsState != nil {
		hdr = append(hdr, "\r\nX-Forwarded-Proto: https\r\n"...)
	} else {
		hdr = append(hdr, "\r\nX-Forwarded-Proto: http\r\n"...)
	}
	rc.hdr = hdr

	h.m.relayed.Inc()
	seq := h.store.Seq()
	reqTime := time.Now()
	var take origin.Taker
	if b.rawRelay {
		rc.raw.limit, rc.raw.compress = min(s.maxObject, rawRelayMax), b.compress
		if rc.raw.takeHead == nil {
			rc.raw.takeHead = rc.raw.take
		}
		take = rc.raw.takeHead
	}
	// Lean (checked by relayOrigin): always sent.
	resp, raw, _, err := o.SendGet(&rc.out, rc.url.Path, "", rc.host, hdr, reqTime.Add(b.readTO), take)
	switch {
	case err != nil:
		ins.errs.Inc()
	case raw.Taken():
		ins.dur.WithLabelValues(ins.dist, ins.Name(), "2xx").Observe(time.Since(reqTime).Seconds())
	default:
		ins.dur.WithLabelValues(ins.dist, ins.Name(), strconv.Itoa(resp.StatusCode/100)+"xx").Observe(time.Since(reqTime).Seconds())
		if _, vary := resp.Header["Vary"]; vary {
			// A response that varies may be stored under the viewer's
			// values of its fields: give the request its real ones.
			rc.req.Header = headerOf(head)
		}
	}
	if raw.Taken() {
		closeAfter = f.relayRaw(c, &st, rc, ic, marker, raw.Body, reqTime, time.Now(), closeConn)
		_, _ = br.Discard(len(head))
	} else {
		res := h.finishFill(&st, key, nil, resp, err, reqTime, seq, func() {}, false)
		res.leader = true

		w := &ic.w
		w.reset(c, &rc.req)
		w.closing = &f.closing
		if f.write > 0 {
			_ = c.SetWriteDeadline(time.Now().Add(f.write))
		}
		ok := f.recovering(st.r.RequestURI, func() { h.serveFill(w, &st, marker, key, res) })
		_, _ = br.Discard(len(head))
		if !ok {
			return true
		}
		closeAfter = w.finish() != nil || w.closeAfter
	}
	if s.log != nil {
		// The handler's entry, with the two fields it takes from the
		// viewer's header (which the relayed request does not carry).
		le := h.logEntry(&st)
		le.Referer, le.UserAgent = string(referer), string(userAgent)
		s.log.Log(&le)
	}
	return closeAfter
}

// headerOf parses the fields of a request head as net/http does (with
// textproto; Host left out).
func headerOf(head []byte) http.Header {
	eol := strings.Index(bstring(head), "\r\n")
	fields, _ := textproto.NewReader(bufio.NewReader(bytes.NewReader(head[eol+2:]))).ReadMIMEHeader()
	delete(fields, "Host")
	return http.Header(fields)
}
