package edge

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/edge/cache"
	"github.com/edgestack/edgestack/edge/origin"
	"golang.org/x/net/http/httpguts"
)

// isWebSocket reports whether r asks for a WebSocket: over HTTP/1.1 an
// upgrade (RFC 6455 4.1: a GET with Connection: upgrade and Upgrade:
// websocket), over HTTP/2 an extended CONNECT with :protocol websocket
// (RFC 8441 4). Other upgrades (h2c, TLS) are not forwarded.
func isWebSocket(r *http.Request) bool {
	if r.ProtoMajor == 2 {
		p := r.Header[":protocol"]
		return r.Method == http.MethodConnect && len(p) == 1 && strings.EqualFold(p[0], "websocket")
	}
	return r.Method == http.MethodGet && r.ProtoAtLeast(1, 1) && r.ProtoMajor == 1 &&
		httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") &&
		httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket")
}

// upgrade relays a WebSocket to the behavior's origin, as CloudFront
// does: never cached, as an HTTP/1.1 upgrade on an origin connection of
// its own. On 101 the viewer's side is joined to it: an HTTP/1.1 viewer's
// connection is taken over (101), an HTTP/2 viewer's stream is answered
// 200 and carries the bytes (RFC 8441); then bytes are copied both ways
// until either side closes. Any other answer is relayed as a pass.
func (h *Handler) upgrade(w http.ResponseWriter, st *reqState) {
	r, b := st.r, st.b
	st.status = stPass
	o := b.origin
	if in, ok := o.(*instrumented); ok {
		o = in.Origin
	}
	up, ok := o.(origin.Upgrader)
	if !ok {
		h.refuse(w, st, b.d, http.StatusBadRequest, "this behavior's origin does not take WebSocket upgrades")
		return
	}
	rc := http.NewResponseController(w)
	req := h.originRequest(r.Context(), st, http.MethodGet, true)
	req.Body, req.ContentLength = nil, 0 // an HTTP/2 viewer's request body is its half of the tunnel
	delete(req.Header, ":protocol")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	var key string
	if r.ProtoMajor == 2 {
		// RFC 8441 5: the HTTP/2 hop has no Sec-WebSocket-Key (TLS and
		// SETTINGS already show both ends speak it); the HTTP/1.1 hop
		// needs one, and its answer proves the origin took the upgrade.
		key = webSocketKey()
		req.Header.Set("Sec-WebSocket-Key", key)
	}
	resp := h.sendPass(w, st, req, up.Upgrade)
	if resp == nil {
		return
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		h.stream(w, st, resp, relay(resp))
		return
	}
	back, ok := resp.Body.(io.ReadWriteCloser)
	if !ok || !httpguts.HeaderValuesContainsToken(resp.Header["Upgrade"], "websocket") {
		resp.Body.Close()
		h.log.Warn("origin switched to another protocol", "distribution", b.d.name, "upgrade", resp.Header.Get("Upgrade"))
		h.errorResponse(w, st, http.StatusBadGateway, "origin switched to a protocol other than websocket")
		return
	}
	defer back.Close()
	if key != "" && resp.Header.Get("Sec-WebSocket-Accept") != webSocketAccept(key) {
		h.log.Warn("origin's WebSocket handshake has a wrong Sec-WebSocket-Accept", "distribution", b.d.name)
		h.errorResponse(w, st, http.StatusBadGateway, "origin's WebSocket handshake answer does not match its key")
		return
	}
	// Counted before the viewer hears the answer, which may be at once.
	b.d.counters[stPass].Inc()
	h.m.websocket.Inc()
	defer h.m.websocket.Dec()
	var end viewerEnd
	if r.ProtoMajor == 2 {
		hdr := w.Header()
		for k, vs := range cache.StoredHeader(resp.Header) {
			hdr[k] = vs
		}
		delete(hdr, "Sec-Websocket-Accept")
		hdr["X-Cache"] = xcache[stPass]
		st.code = http.StatusOK
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			return
		}
		end = viewerEnd{from: r.Body, to: flushWriter{w, rc}, close: func() { _ = r.Body.Close() }}
	} else {
		conn, brw, err := rc.Hijack()
		if err != nil {
			h.errorResponse(w, st, http.StatusInternalServerError, "viewer connection cannot be taken over")
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Time{}) // the listener's read and idle timeouts no longer apply
		st.code = http.StatusSwitchingProtocols
		hdr := resp.Header.Clone()
		hdr["X-Cache"] = xcache[stPass]
		if _, err := io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\n"); err != nil {
			return
		}
		if err := hdr.Write(brw); err != nil {
			return
		}
		if _, err := io.WriteString(brw, "\r\n"); err != nil {
			return
		}
		if err := brw.Flush(); err != nil {
			return
		}
		from := io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), conn)
		end = viewerEnd{from: from, to: conn, close: func() { _ = conn.Close() }}
	}
	var idled bool
	st.bytes, idled = tunnel(end, back, st.s.wsIdle)
	if idled {
		h.log.Debug("websocket closed after its idle timeout", "distribution", b.d.name, "idle", st.s.wsIdle)
	}
}

// webSocketGUID is RFC 6455's fixed suffix of the handshake's key.
const webSocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// webSocketKey is a fresh Sec-WebSocket-Key: 16 random bytes, base64.
func webSocketKey() string {
	var k [16]byte
	_, _ = rand.Read(k[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.StdEncoding.EncodeToString(k[:])
}

// webSocketAccept is the Sec-WebSocket-Accept that answers key.
func webSocketAccept(key string) string {
	sum := sha1.Sum([]byte(key + webSocketGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// viewerEnd is the viewer's side of a tunnel: what it sends, where its
// bytes go, and how to end it.
type viewerEnd struct {
	from  io.Reader
	to    io.Writer
	close func()
}

// flushWriter sends every write at once: an HTTP/2 response buffers
// otherwise, and a WebSocket message must not wait for the next one.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// tunnel copies viewer → origin and origin → viewer until one side ends,
// or until no byte has moved either way for idle (if > 0); then it closes
// both so the other copy ends too. It returns the bytes sent to the viewer
// and whether the idle timeout ended the tunnel.
func tunnel(viewer viewerEnd, back io.ReadWriteCloser, idle time.Duration) (toViewer int64, idled bool) {
	var once sync.Once
	stop := func() {
		once.Do(func() {
			viewer.close()
			_ = back.Close()
		})
	}
	start := time.Now()
	var last atomic.Int64 // when a byte last moved, as time since start
	var timedOut atomic.Bool
	ended := make(chan struct{})
	defer close(ended)
	if idle > 0 {
		go func() {
			t := time.NewTimer(idle)
			defer t.Stop()
			for {
				select {
				case <-ended:
					return
				case <-t.C:
					quiet := time.Since(start) - time.Duration(last.Load())
					if quiet >= idle {
						timedOut.Store(true)
						stop()
						return
					}
					t.Reset(idle - quiet)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := io.Copy(activity{back, start, &last}, viewer.from)
		// The viewer is done sending: let the origin see it and finish.
		// A viewer that failed or aborted (a reset connection or stream)
		// is not coming back: the origin need not be heard out.
		if cw, ok := back.(interface{ CloseWrite() error }); ok && err == nil {
			_ = cw.CloseWrite()
		} else {
			stop()
		}
	}()
	toViewer, _ = io.Copy(activity{viewer.to, start, &last}, back)
	stop() // the origin is done (or failed): so is the viewer
	<-done
	return toViewer, timedOut.Load()
}

// activity notes in last when bytes were last written through it.
type activity struct {
	w     io.Writer
	start time.Time
	last  *atomic.Int64
}

func (a activity) Write(p []byte) (int, error) {
	a.last.Store(int64(time.Since(a.start)))
	return a.w.Write(p)
}
