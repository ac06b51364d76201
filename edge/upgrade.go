package edge

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgestack/edgestack/edge/origin"
	"golang.org/x/net/http/httpguts"
)

// isWebSocket reports whether r asks to upgrade to WebSocket (RFC 6455
// §4.1): a GET over HTTP/1.1 with Connection: upgrade and Upgrade:
// websocket. Other upgrades (h2c, TLS) are not forwarded.
func isWebSocket(r *http.Request) bool {
	return r.Method == http.MethodGet && r.ProtoAtLeast(1, 1) && r.ProtoMajor == 1 &&
		httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") &&
		httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket")
}

// upgrade relays a WebSocket upgrade to the behavior's origin, as
// CloudFront does: never cached, on an origin connection of its own. On
// 101 the viewer's connection is taken over and bytes are copied both ways
// until either side closes; any other answer is relayed as a pass.
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
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
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
	conn, brw, err := rc.Hijack()
	if err != nil { // an HTTP/2 viewer: isWebSocket lets none through
		h.errorResponse(w, st, http.StatusInternalServerError, "viewer connection cannot be taken over")
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{}) // the listener's read and idle timeouts no longer apply
	st.code = http.StatusSwitchingProtocols
	b.d.counters[stPass].Inc()
	h.m.websocket.Inc()
	defer h.m.websocket.Dec()
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
	var idled bool
	st.bytes, idled = tunnel(conn, brw.Reader, back, st.s.wsIdle)
	if idled {
		h.log.Debug("websocket closed after its idle timeout", "distribution", b.d.name, "idle", st.s.wsIdle)
	}
}

// tunnel copies viewer → origin (starting with what the viewer's reader
// already buffered) and origin → viewer until one side ends, or until no
// byte has moved either way for idle (if > 0); then it closes both so the
// other copy ends too. It returns the bytes sent to the viewer and whether
// the idle timeout ended the tunnel.
func tunnel(viewer net.Conn, buffered *bufio.Reader, back io.ReadWriteCloser, idle time.Duration) (toViewer int64, idled bool) {
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = viewer.Close()
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
		_, _ = io.Copy(activity{back, start, &last}, io.MultiReader(io.LimitReader(buffered, int64(buffered.Buffered())), viewer))
		// The viewer is done sending: let the origin see it and finish.
		if cw, ok := back.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			stop()
		}
	}()
	toViewer, _ = io.Copy(activity{viewer, start, &last}, back)
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
