package h2

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one request and its response. Its fields are guarded by the
// connection's mu.
type stream struct {
	sc          *conn
	id          uint32
	send        int64 // our send window
	recv        int64 // what the client may still send
	unacked     int64 // read by the handler, not yet credited back
	declared    int64 // request content-length, or -1
	received    int64
	body        [][]byte // request body not yet read
	buffered    int64
	bodyCond    sync.Cond // L is the connection's mu; a field, not one more allocation per stream
	bodyClosed  bool
	ended       bool // END_STREAM received
	remoteDone  bool // no more frames expected from the client
	handlerDone bool // the response is complete (or abandoned)
	endSent     bool // END_STREAM sent
	aborted     error
	cancel      context.CancelFunc
	bodyTimer   *time.Timer // BodyTimeout, while the body is arriving
	trailer     http.Header // declared request trailers (the Request's)
	gotTrailer  http.Header // their values, until the body's EOF
	// needsContinue: the client sent Expect: 100-continue and waits for
	// a 100 (Continue) before the body; the handler's first body read
	// sends it, unless the final response went out first (RFC 9110 10.1.1).
	needsContinue bool
}

// abortLocked fails the stream: its context, its body, its writes.
func (st *stream) abortLocked(err error) {
	if st.aborted != nil {
		return
	}
	st.aborted = err
	st.remoteDone = true
	if st.cancel != nil {
		st.cancel()
	}
	st.bodyCond.Broadcast()
	st.sc.windowCond.Broadcast()
}

// trailers records the request trailers the client declared. They reach
// Request.Trailer when the handler reads the body's end, on its own
// goroutine (net/http's contract: valid after EOF), not now.
func (st *stream) trailers(fields []hpack.HeaderField) {
	if st.trailer == nil {
		return
	}
	for _, f := range fields {
		k := textproto.CanonicalMIMEHeaderKey(f.Name)
		if _, ok := st.trailer[k]; ok {
			if st.gotTrailer == nil {
				st.gotTrailer = http.Header{}
			}
			st.gotTrailer[k] = append(st.gotTrailer[k], f.Value)
		}
	}
}

var errMalformed = errors.New("malformed request")

// newRequest builds the request of st from its header block (RFC 9113
// 8.3.1), or says why it is malformed. Called with mu held.
func (sc *conn) newRequest(st *stream, f *http2.MetaHeadersFrame) (*http.Request, error) {
	method := f.PseudoValue("method")
	path := f.PseudoValue("path")
	scheme := f.PseudoValue("scheme")
	authority := f.PseudoValue("authority")
	protocol := f.PseudoValue("protocol")
	switch {
	case protocol == "":
	case !sc.srv.ExtendedConnect:
		return nil, errors.New(":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL")
	case method != "CONNECT":
		return nil, errors.New(":protocol in a request other than CONNECT")
	case path == "" || scheme == "" || authority == "":
		// RFC 8441 4: an extended CONNECT names its target as other
		// requests do.
		return nil, errors.New("extended CONNECT needs :scheme, :path and :authority")
	}
	switch {
	case method == "":
		return nil, errors.New("no :method")
	case !httpguts.ValidHeaderFieldName(method):
		// A method is a token (RFC 9110 9.1). x/net's Framer checks only
		// that there is no CR, LF or NUL, and a proxy writing
		// "GET /admin HTTP/1.1" into its request line would inject one.
		return nil, errors.New(":method is not a token")
	case method == "CONNECT" && protocol == "":
		if path != "" || scheme != "" || authority == "" {
			return nil, errors.New("CONNECT needs :authority and no :scheme or :path")
		}
	case path == "" || scheme == "":
		return nil, errors.New("no :path or :scheme")
	case path[0] != '/' && (path != "*" || method != "OPTIONS"):
		return nil, errors.New(":path must start with / (or be * for OPTIONS)")
	}
	header := make(http.Header, len(f.Fields))
	var cookies []string
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return nil, errors.New("connection-specific field " + hf.Name)
		case "te":
			if hf.Value != "trailers" {
				return nil, errors.New("te other than trailers")
			}
		case "host":
			if authority == "" {
				authority = hf.Value
			}
			continue
		case "cookie":
			cookies = append(cookies, hf.Value)
			continue
		case "content-length":
			n, err := strconv.ParseInt(hf.Value, 10, 64)
			if err != nil || n < 0 || (st.declared >= 0 && st.declared != n) {
				return nil, errors.New("bad content-length")
			}
			st.declared = n
		}
		k := canonicalKey(hf.Name)
		header[k] = append(header[k], hf.Value)
	}
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if !httpguts.ValidHostHeader(authority) {
		// As net/http's servers: a proxy would pass it on as Host.
		return nil, errors.New("bad :authority or host")
	}
	if protocol != "" {
		header[":protocol"] = []string{protocol}
	}
	if (method != "CONNECT" || protocol != "") && strings.IndexByte(path, ' ') >= 0 {
		// No request-target holds a space (RFC 9112 3.2), and a proxy
		// that passed one on would give its target a request line of
		// more than three parts ("GET /?q= HTTP/1.1 HTTP/1.1"): escaped,
		// as lbd's and edged's HTTP/1.1 front ends (httpguard) escape it.
		path = strings.ReplaceAll(path, " ", "%20")
	}
	var u *url.URL
	if method == "CONNECT" && protocol == "" {
		u = &url.URL{Host: authority}
		path = authority
	} else if path == "*" {
		u = &url.URL{Path: "*"}
	} else {
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return nil, errMalformed
		}
	}
	if st.remoteDone && st.declared > 0 {
		return nil, errors.New("content-length without a body")
	}
	// WithContext is the only way to set a Request's context, and it
	// copies: a zero one (which stays on the stack) is copied, not a
	// filled one that would be garbage at once.
	ctx, cancel := context.WithCancel(sc.ctx)
	var zero http.Request
	r := zero.WithContext(ctx)
	r.Method, r.URL, r.RequestURI, r.Host = method, u, path, authority
	r.Proto, r.ProtoMajor = "HTTP/2.0", 2
	r.Header, r.RemoteAddr, r.TLS = header, sc.remote, sc.tls
	// Met here, as net/http's servers do: a handler (or a proxy's target)
	// never sees the expectation.
	expectsContinue := httpguts.HeaderValuesContainsToken(header["Expect"], "100-continue")
	if expectsContinue {
		delete(header, "Expect")
	}
	if st.remoteDone {
		r.Body, r.ContentLength = http.NoBody, 0
		st.ended = true
	} else {
		r.Body, r.ContentLength = &body{st: st}, st.declared
		st.needsContinue = expectsContinue
		for _, k := range declaredTrailers(header["Trailer"], nil) {
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				continue
			}
			if st.trailer == nil {
				st.trailer = http.Header{}
			}
			st.trailer[k] = nil
		}
		r.Trailer = st.trailer
	}
	st.cancel = cancel
	return r, nil
}

// body is a request body: the DATA frames of its stream.
type body struct {
	st *stream
}

func (b *body) Read(p []byte) (int, error) {
	st := b.st
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st.needsContinue {
		st.needsContinue = false
		if len(st.body) == 0 && !st.ended && st.aborted == nil && !st.bodyClosed {
			_ = sc.writeHeadersLocked(st, http.StatusContinue, nil, nil, false)
			sc.flushLocked()
		}
	}
	for len(st.body) == 0 {
		switch {
		case st.bodyClosed:
			return 0, errors.New("h2: read on closed body")
		case st.ended:
			for k, vv := range st.gotTrailer {
				st.trailer[k] = vv
			}
			st.gotTrailer = nil
			return 0, io.EOF
		case st.aborted != nil:
			return 0, st.aborted
		}
		st.bodyCond.Wait()
	}
	n := copy(p, st.body[0])
	if n == len(st.body[0]) {
		st.body[0] = nil
		st.body = st.body[1:]
	} else {
		st.body[0] = st.body[0][n:]
	}
	st.buffered -= int64(n)
	sc.creditLocked(st, int64(n))
	if len(sc.out) > 0 {
		sc.flushLocked() // the WINDOW_UPDATE: the reader may be waiting in a read
	}
	return n, nil
}

// Close discards what is left; the client is asked to stop sending when
// the handler ends (RST_STREAM NO_ERROR).
func (b *body) Close() error {
	st := b.st
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !st.bodyClosed {
		st.bodyClosed = true
		sc.creditLocked(nil, st.buffered)
		st.body, st.buffered = nil, 0
		st.bodyCond.Broadcast()
	}
	return nil
}

// declaredTrailers appends to keys the canonical field names a Trailer
// field's values list.
func declaredTrailers(values, keys []string) []string {
	for _, v := range values {
		for _, k := range strings.Split(v, ",") {
			if k = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k)); k != "" {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// canonicalKey is textproto's canonical form of a lower-case field name,
// without an allocation for the common ones.
func canonicalKey(name string) string {
	if k, ok := commonCanonical[name]; ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// lowerKey is the wire form of a header key.
func lowerKey(k string) string {
	if l, ok := commonLower[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

var commonCanonical, commonLower = func() (map[string]string, map[string]string) {
	canon, lower := map[string]string{}, map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Access-Control-Allow-Origin", "Age", "Allow", "Authorization", "Cache-Control",
		"Cdn-Loop", "Content-Disposition", "Content-Encoding", "Content-Language",
		"Content-Length", "Content-Location", "Content-Range", "Content-Type", "Cookie",
		"Date", "Etag", "Expect", "Expires", "Forwarded", "From", "Host", "If-Match",
		"If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since",
		"Last-Modified", "Link", "Location", "Max-Forwards", "Origin", "Pragma",
		"Priority", "Proxy-Authenticate", "Proxy-Authorization", "Range", "Referer",
		"Refresh", "Retry-After", "Server", "Set-Cookie", "Strict-Transport-Security",
		"Te", "Trailer", "User-Agent", "Vary", "Via", "Www-Authenticate", "X-Cache",
		"X-Content-Type-Options", "X-Forwarded-For", "X-Forwarded-Host",
		"X-Forwarded-Port", "X-Forwarded-Proto", "X-Frame-Options", "X-Request-Id",
		"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User",
		"Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform", "Upgrade-Insecure-Requests",
		"Dnt", "Grpc-Status", "Grpc-Message", "Grpc-Encoding", "Grpc-Accept-Encoding",
	} {
		l := strings.ToLower(k)
		canon[l], lower[k] = k, l
	}
	return canon, lower
}()
