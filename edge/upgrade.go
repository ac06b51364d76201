package edge

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
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
	st.bytes = tunnel(conn, brw.Reader, back)
}

// tunnel copies viewer → origin (starting with what the viewer's reader
// already buffered) and origin → viewer until one side ends, then closes
// both so the other copy ends too. It returns the bytes sent to the viewer.
func tunnel(viewer net.Conn, buffered *bufio.Reader, back io.ReadWriteCloser) int64 {
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = viewer.Close()
			_ = back.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(back, io.MultiReader(io.LimitReader(buffered, int64(buffered.Buffered())), viewer))
		// The viewer is done sending: let the origin see it and finish.
		if cw, ok := back.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			stop()
		}
	}()
	toViewer, _ := io.Copy(viewer, back)
	stop() // the origin is done (or failed): so is the viewer
	<-done
	return toViewer
}
