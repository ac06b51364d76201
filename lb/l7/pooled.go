package l7

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/edgestack/edgestack/lb/targetgroup"
)

// forwardPooled forwards a request that arrived over HTTP/2 on the fast
// engine's pooled HTTP/1.1 upstream connections, without
// httputil.ReverseProxy and http.Transport (whose per-connection read and
// write goroutines cost more than the forwarding itself). HTTP/1.x
// requests on the net/http engine keep ReverseProxy (upgrades). Trailers
// are relayed both ways (see trailer.go).
func (h *Handler) forwardPooled(w http.ResponseWriter, r *http.Request, ref *GroupRef, st *reqState, timeout time.Duration) {
	replayable := (r.Body == nil || r.Body == http.NoBody) && isIdempotent([]byte(r.Method))
	var tried []*targetgroup.Target
	for {
		release := st.target.Acquire()
		code, out := h.pooledRoundTrip(w, r, ref, st, timeout)
		release()
		st.code = code
		switch out {
		case outDone:
			st.target.Report(code < 500)
			return
		case outClientGone:
			return
		case outTimeout:
			st.target.Report(false)
			st.code = http.StatusGatewayTimeout
			http.Error(w, "504 Gateway Timeout: target did not answer in time", http.StatusGatewayTimeout)
			return
		}
		st.target.Report(false)
		if replayable && st.retries < maxRetries {
			tried = append(tried, st.target)
			if next := ref.Group.Pick(tried); next != nil {
				st.retries++
				h.Proxy.metrics.Retries.WithLabelValues(ref.Group.Name).Inc()
				st.target = next
				st.setCookie = st.setCookie || ref.Group.Sticky().Enabled
				continue
			}
		}
		st.code = http.StatusBadGateway
		http.Error(w, "502 Bad Gateway: target connection failed", http.StatusBadGateway)
		return
	}
}

// hopHeaders are not forwarded (canonical form).
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "X-Forwarded-For": true, "X-Forwarded-Proto": true, "X-Forwarded-Port": true,
	"X-Forwarded-Host": true,
}

func (h *Handler) pooledRoundTrip(w http.ResponseWriter, r *http.Request, ref *GroupRef, st *reqState, timeout time.Duration) (int, outcome) {
	t := st.target
	pool := h.Proxy.pool(t, ref)
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	for attempt := 0; ; attempt++ {
		uc, reused, err := pool.Acquire(ref.up.dialFn, attempt, !hasBody)
		if err != nil {
			return 0, outConnFailed
		}
		start := time.Now()
		_ = uc.SetDeadlineWithin(start.Add(timeout), deadlineSlack)
		if err := h.writePooledRequest(uc, r, st); err != nil {
			uc.Close()
			if errors.Is(err, errClient) {
				return 0, outClientGone
			}
			if reused && attempt == 0 && !hasBody {
				continue
			}
			return 0, outConnFailed
		}
		var resp respHead
		for {
			uc.Head, err = readHead(uc.R, uc.Head, 64<<10)
			if err != nil {
				break
			}
			var ok bool
			resp, ok = parseResponseHead(uc.Head, uc.Lines[:0])
			uc.Lines = resp.lines
			if !ok || resp.code == 101 {
				err = errors.New("malformed or unexpected response head")
				break
			}
			if resp.code >= 200 {
				break
			}
		}
		if err != nil {
			uc.Close()
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				return 0, outTimeout
			case reused && attempt == 0 && !hasBody:
				continue
			}
			return 0, outConnFailed
		}
		st.upDur = time.Since(start)
		ref.latency.Observe(st.upDur.Seconds())
		hdr := w.Header()
		noBody := r.Method == http.MethodHead || resp.code == 204 || resp.code == 304
		var announced []string // the target's Trailer header
		for _, l := range resp.lines {
			hl := uc.Head[l[0]:l[1]]
			colon := strings.IndexByte(bstr(hl), ':')
			k := canonicalKey(hl[:colon])
			if k == "Trailer" && resp.chunked && !noBody {
				announced = append(announced, string(hl[colon+1:]))
				continue
			}
			if hopHeaders[k] && k != "Content-Length" {
				continue
			}
			if k == "Content-Length" && resp.contentLength < 0 {
				continue
			}
			hdr[k] = append(hdr[k], strings.TrimSpace(string(hl[colon+1:])))
		}
		if names := trailerNames(announced); len(names) > 0 {
			// Announced before the body, as the target did; HTTP/2
			// clients may see it (the values follow the body).
			hdr["Trailer"] = []string{strings.Join(names, ", ")}
		}
		if st.setCookie {
			s := t.Group().Sticky()
			hdr.Add("Set-Cookie", (&http.Cookie{Name: s.Cookie, Value: t.ID, Path: "/", MaxAge: int(s.Duration.D() / time.Second), HttpOnly: true}).String())
		}
		w.WriteHeader(resp.code)
		reusable := !resp.connClose
		if !noBody {
			if resp.chunked || resp.contentLength < 0 || resp.contentLength > int64(uc.R.Buffered()) {
				// A body still to arrive: it may stream for a while. One
				// already read with the head needs no new deadline, and
				// the next request keeps the one it has (as fast.go).
				_ = uc.SetDeadline(time.Now().Add(5 * time.Minute))
			}
			bw := writerPool.Get().(*bufio.Writer)
			bw.Reset(w)
			var cerr error
			var trailers *trailerSink // only chunked bodies carry them
			switch {
			case resp.chunked:
				trailers = &trailerSink{}
				cerr = copyChunkedTrailer(nil, uc.R, bw, trailers.add)
			case resp.contentLength > 0:
				_, cerr = copyN(bw, uc.R, resp.contentLength)
			case resp.contentLength < 0:
				reusable = false
				_, cerr = io.Copy(bw, uc.R)
			}
			if ferr := bw.Flush(); cerr == nil && ferr != nil {
				cerr = errWrite
			}
			bw.Reset(nil)
			writerPool.Put(bw)
			if cerr != nil {
				uc.Close()
				return resp.code, outClientGone
			}
			if trailers != nil {
				trailers.setOn(hdr)
			}
		}
		if reusable {
			uc.Release()
		} else {
			uc.Close()
		}
		return resp.code, outDone
	}
}

func (h *Handler) writePooledRequest(uc *upConn, r *http.Request, st *reqState) error {
	w := uc.W
	w.WriteString(r.Method)
	w.WriteByte(' ')
	if uri := r.URL.RequestURI(); strings.IndexByte(uri, ' ') < 0 {
		w.WriteString(uri)
	} else {
		// A raw query with a space (net/http's HTTP/2 server lets one
		// through) would make a request line of more than three parts.
		w.WriteString(strings.ReplaceAll(uri, " ", "%20"))
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(r.Host)
	w.WriteString("\r\n")
	for k, vs := range r.Header {
		if hopHeaders[k] || k == "Host" {
			continue
		}
		for _, v := range vs {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	clientIP, _, _ := net.SplitHostPort(r.RemoteAddr)
	w.WriteString("X-Forwarded-For: ")
	if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
		w.WriteString(strings.Join(prior, ", "))
		w.WriteString(", ")
	}
	w.WriteString(clientIP)
	w.WriteString("\r\nX-Forwarded-Proto: ")
	w.WriteString(st.scheme)
	w.WriteString("\r\nX-Forwarded-Port: ")
	w.WriteString(st.port)
	w.WriteString("\r\nX-Forwarded-Host: ")
	w.WriteString(r.Host)
	w.WriteString("\r\n")
	trailers := requestTrailerNames(r)
	switch {
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
		w.WriteString("\r\n")
		return sendRequest(uc, w, true, time.Now())
	case r.ContentLength > 0 && len(trailers) == 0:
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(r.ContentLength, 10))
		w.WriteString("\r\n\r\n")
		if _, err := io.CopyN(w, r.Body, r.ContentLength); err != nil {
			if w.Flush() != nil {
				return err // the target side failed
			}
			return errClient
		}
	default:
		// Unknown length, or trailers announced: only chunked carries
		// trailers in HTTP/1.1.
		w.WriteString("Transfer-Encoding: chunked\r\n")
		if len(trailers) > 0 {
			w.WriteString("Trailer: ")
			w.WriteString(strings.Join(trailers, ", "))
			w.WriteString("\r\n")
		}
		w.WriteString("\r\n")
		cw := httputil.NewChunkedWriter(w)
		if _, err := io.Copy(cw, r.Body); err != nil {
			return errClient
		}
		_ = cw.Close() // the last chunk, "0\r\n"
		writeTrailerFields(w, r, trailers)
		w.WriteString("\r\n")
	}
	return w.Flush()
}
