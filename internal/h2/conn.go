package h2

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// maxReadFrame is the SETTINGS_MAX_FRAME_SIZE we advertise: larger
	// frames mean fewer of them for request bodies.
	maxReadFrame = 1 << 20
	// connWindow is the connection's receive window for request bodies;
	// bytes are credited back as handlers read them.
	connWindow = 1 << 20
	// maxWindow is the largest flow-control window (RFC 9113 6.9.1).
	maxWindow = 1<<31 - 1
	// maxOut is how many bytes of frames may wait for the socket before
	// a writer waits for them to leave.
	maxOut = 256 << 10
	// recentResets is how many streams we reset are remembered, so frames
	// the client sent before it saw the reset are ignored, not an error.
	recentResets = 32
)

var errStreamClosed = errors.New("h2: stream closed")

// conn is one HTTP/2 connection. Its reading goroutine (serve) owns the
// Framer's read side; everything else is guarded by mu.
type conn struct {
	srv      *Server
	nc       net.Conn
	br       *bufio.Reader
	fr       *http2.Framer
	ctx      context.Context
	cancel   context.CancelFunc
	tls      *tls.ConnectionState
	remote   string
	maxSeen  uint32 // highest stream id the client opened (reader only)
	settled  bool   // our SETTINGS were acknowledged (reader only)
	refused  int    // streams refused after that (reader only)
	idleArmd bool   // a read deadline for IdleTimeout is set

	mu          sync.Mutex
	windowCond  *sync.Cond // broadcast when send windows grow or the conn ends
	flushCond   *sync.Cond // broadcast when a write to the socket ends
	out         []byte     // frames not yet written to the socket
	spare       []byte     // the buffer the last socket write used
	flushing    bool       // a goroutine is writing to the socket
	idleClose   bool       // the reader is to close: GOAWAY sent, no streams left
	flushQueued bool       // the flusher has been asked to write
	flushCh     chan struct{}
	flusherDone sync.WaitGroup
	hbuf        bytes.Buffer
	henc        *hpack.Encoder
	werr        error // sticky: the first write error
	closed      bool
	goingAway   bool
	lastStream  uint32 // with goingAway: the last stream we process
	streams     map[uint32]*stream
	reset       [recentResets]uint32
	resetNext   int
	connSend    int64 // what the client still lets us send
	connRecv    int64 // what we still let the client send
	connUnacked int64 // read by handlers, not yet credited back
	peerWindow  int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame   uint32
	deadline    time.Time // write deadline currently set
}

func (s *Server) newConn(c net.Conn, opts ConnOpts) *conn {
	ctx := opts.Context
	if ctx == nil {
		ctx = context.Background()
	}
	sc := &conn{
		srv:        s,
		nc:         c,
		br:         bufio.NewReaderSize(c, 16<<10),
		tls:        opts.TLS,
		remote:     c.RemoteAddr().String(),
		streams:    map[uint32]*stream{},
		connSend:   65535,
		connRecv:   connWindow,
		peerWindow: 65535,
		peerFrame:  16384,
	}
	if sc.tls == nil {
		if tc, ok := c.(*tls.Conn); ok {
			st := tc.ConnectionState()
			sc.tls = &st
		}
	}
	sc.ctx, sc.cancel = context.WithCancel(ctx)
	sc.windowCond = sync.NewCond(&sc.mu)
	sc.flushCond = sync.NewCond(&sc.mu)
	sc.henc = hpack.NewEncoder(&sc.hbuf)
	sc.fr = http2.NewFramer(outWriter{sc}, sc.br)
	sc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	sc.fr.MaxHeaderListSize = s.maxHeaderBytes()
	sc.fr.SetMaxReadFrameSize(maxReadFrame)
	if !s.track(sc) {
		sc.cancel()
		return nil
	}
	return sc
}

// connError ends the connection with a GOAWAY carrying code.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string { return fmt.Sprintf("h2: %v: %s", e.code, e.reason) }

func (sc *conn) serve() {
	defer sc.flusherDone.Wait()
	defer sc.close()
	sc.flushCh = make(chan struct{}, 1)
	sc.flusherDone.Add(1)
	go sc.flusher()
	if err := sc.handshake(); err != nil {
		sc.srv.logger().Debug("HTTP/2 preface failed", "remote", sc.remote, "err", err)
		return
	}
	for {
		if sc.br.Buffered() == 0 {
			sc.mu.Lock()
			sc.flushLocked()
			sc.mu.Unlock()
		}
		f, err := sc.fr.ReadFrame()
		if err != nil {
			if !sc.readError(err) {
				return
			}
			continue
		}
		if err := sc.process(f); err != nil {
			var ce connError
			if errors.As(err, &ce) {
				sc.srv.logger().Debug("HTTP/2 connection error", "remote", sc.remote, "err", err)
				sc.goAwayNow(ce.code)
			}
			return
		}
	}
}

// handshake reads the client preface and its SETTINGS and sends ours.
func (sc *conn) handshake() error {
	_ = sc.nc.SetReadDeadline(time.Now().Add(sc.srv.readTimeout()))
	sc.mu.Lock()
	settings := []http2.Setting{
		{ID: http2.SettingMaxFrameSize, Val: maxReadFrame},
		{ID: http2.SettingMaxConcurrentStreams, Val: sc.srv.maxStreams()},
		{ID: http2.SettingMaxHeaderListSize, Val: sc.srv.maxHeaderBytes()},
		{ID: http2.SettingInitialWindowSize, Val: uint32(sc.srv.streamWindow())},
	}
	if sc.srv.ExtendedConnect {
		settings = append(settings, http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1})
	}
	err := sc.fr.WriteSettings(settings...)
	if err == nil {
		err = sc.fr.WriteWindowUpdate(0, connWindow-65535)
	}
	if err == nil {
		err = sc.flushLocked()
	}
	sc.mu.Unlock()
	if err != nil {
		return err
	}
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(sc.br, preface); err != nil {
		return err
	}
	if string(preface) != http2.ClientPreface {
		sc.goAwayNow(http2.ErrCodeProtocol)
		return errors.New("bad client preface")
	}
	f, err := sc.fr.ReadFrame()
	if err != nil {
		return err
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		sc.goAwayNow(http2.ErrCodeProtocol)
		return fmt.Errorf("first frame %v, not SETTINGS", f.Header().Type)
	}
	if err := sc.processSettings(sf); err != nil {
		var ce connError
		if errors.As(err, &ce) {
			sc.goAwayNow(ce.code)
		}
		return err
	}
	_ = sc.nc.SetReadDeadline(time.Time{})
	sc.armIdle()
	return nil
}

// readError handles an error from ReadFrame; it reports whether the
// connection goes on.
func (sc *conn) readError(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		// A malformed header block: the stream id is used up.
		if se.StreamID > sc.maxSeen && se.StreamID%2 == 1 {
			sc.maxSeen = se.StreamID
		}
		sc.resetStream(se.StreamID, se.Code)
		return true
	case errors.As(err, &ce):
		sc.goAwayNow(http2.ErrCode(ce))
	case errors.Is(err, http2.ErrFrameTooLarge):
		sc.goAwayNow(http2.ErrCodeFrameSize)
	case errors.Is(err, os.ErrDeadlineExceeded):
		sc.mu.Lock()
		idle := len(sc.streams) == 0
		sc.mu.Unlock()
		if idle {
			sc.goAwayNow(http2.ErrCodeNo) // no GOAWAY again after a graceful one
		}
	}
	if !errors.Is(err, io.EOF) {
		sc.srv.logger().Debug("HTTP/2 read ended", "remote", sc.remote, "err", err)
	}
	return false
}

func (sc *conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return sc.processHeaders(f)
	case *http2.DataFrame:
		return sc.processData(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			sc.settled = true
			return nil
		}
		return sc.processSettings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if sc.closed {
			return errStreamClosed
		}
		return sc.fr.WritePing(true, f.Data)
	case *http2.WindowUpdateFrame:
		return sc.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		if f.StreamID > sc.maxSeen {
			return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
		}
		sc.mu.Lock()
		if st := sc.streams[f.StreamID]; st != nil {
			st.abortLocked(fmt.Errorf("h2: stream reset by the client (%v)", f.ErrCode))
			sc.maybeRemoveLocked(st)
		}
		sc.mu.Unlock()
		return nil
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	case *http2.GoAwayFrame:
		return nil // the client opens no more streams; ours finish
	default:
		return nil // PRIORITY, PRIORITY_UPDATE and unknown frames
	}
}

func (sc *conn) processSettings(f *http2.SettingsFrame) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return connError{http2.ErrCode(ce), fmt.Sprintf("bad setting %v", s)}
			}
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			sc.henc.SetMaxDynamicTableSizeLimit(s.Val)
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - sc.peerWindow
			sc.peerWindow = int64(s.Val)
			for _, st := range sc.streams {
				st.send += delta
				if st.send > maxWindow {
					return connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window"}
				}
			}
			sc.windowCond.Broadcast()
		case http2.SettingMaxFrameSize:
			sc.peerFrame = s.Val
		}
		return nil
	})
	if err != nil {
		return err
	}
	if sc.closed {
		return errStreamClosed
	}
	return sc.fr.WriteSettingsAck()
}

func (sc *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if f.StreamID == 0 {
		sc.connSend += int64(f.Increment)
		if sc.connSend > maxWindow {
			return connError{http2.ErrCodeFlowControl, "connection window above 2^31-1"}
		}
		sc.windowCond.Broadcast()
		return nil
	}
	if f.StreamID > sc.maxSeen {
		return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
	}
	st := sc.streams[f.StreamID]
	if st == nil || st.aborted != nil {
		return nil
	}
	st.send += int64(f.Increment)
	if st.send > maxWindow {
		sc.resetLocked(st, http2.ErrCodeFlowControl)
		return nil
	}
	sc.windowCond.Broadcast()
	return nil
}

func (sc *conn) processData(f *http2.DataFrame) error {
	id, n := f.StreamID, int64(f.Length)
	if id > sc.maxSeen {
		return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.connRecv -= n
	if sc.connRecv < 0 {
		return connError{http2.ErrCodeFlowControl, "DATA beyond the connection window"}
	}
	st := sc.streams[id]
	if st == nil || st.remoteDone {
		// Closed, or reset by us: credit the bytes back at once.
		sc.creditLocked(nil, n)
		if st != nil && st.aborted == nil {
			sc.resetLocked(st, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	st.recv -= n
	if st.recv < 0 {
		sc.creditLocked(nil, n)
		sc.resetLocked(st, http2.ErrCodeFlowControl)
		return nil
	}
	data := f.Data()
	if pad := n - int64(len(data)); pad > 0 {
		sc.creditLocked(st, pad)
	}
	if len(data) > 0 {
		st.received += int64(len(data))
		switch {
		case st.declared >= 0 && st.received > st.declared:
			sc.creditLocked(nil, int64(len(data)))
			sc.resetLocked(st, http2.ErrCodeProtocol)
			return nil
		case st.bodyClosed:
			sc.creditLocked(st, int64(len(data))) // the handler wants no more
		default:
			st.body = append(st.body, append([]byte(nil), data...))
			st.buffered += int64(len(data))
			st.bodyCond.Signal()
		}
	}
	if f.StreamEnded() {
		if st.declared >= 0 && st.received != st.declared {
			sc.resetLocked(st, http2.ErrCodeProtocol)
			return nil
		}
		st.ended, st.remoteDone = true, true
		st.bodyCond.Signal()
		sc.maybeRemoveLocked(st)
	}
	return nil
}

func (sc *conn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	sc.mu.Lock()
	st := sc.streams[id]
	if st != nil {
		defer sc.mu.Unlock()
		// Trailers: they must end the stream and carry no pseudo-fields.
		if st.remoteDone {
			if st.aborted == nil {
				sc.resetLocked(st, http2.ErrCodeStreamClosed)
			}
			return nil
		}
		if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
			sc.resetLocked(st, http2.ErrCodeProtocol)
			return nil
		}
		if st.declared >= 0 && st.received != st.declared {
			sc.resetLocked(st, http2.ErrCodeProtocol)
			return nil
		}
		st.trailers(f.RegularFields())
		st.ended, st.remoteDone = true, true
		st.bodyCond.Signal()
		sc.maybeRemoveLocked(st)
		return nil
	}
	if id%2 == 0 {
		sc.mu.Unlock()
		return connError{http2.ErrCodeProtocol, "client stream with an even id"}
	}
	if id <= sc.maxSeen {
		recent := sc.recentlyResetLocked(id)
		sc.mu.Unlock()
		if recent {
			return nil
		}
		return connError{http2.ErrCodeProtocol, "HEADERS on a closed stream"}
	}
	sc.maxSeen = id
	if sc.goingAway && id > sc.lastStream {
		sc.mu.Unlock()
		return nil // after our GOAWAY: the client retries elsewhere
	}
	if uint32(len(sc.streams)) >= sc.srv.maxStreams() {
		sc.mu.Unlock()
		if sc.settled {
			sc.refused++
			if sc.refused > 2*int(sc.srv.maxStreams()) {
				return connError{http2.ErrCodeEnhanceYourCalm, "too many streams beyond SETTINGS_MAX_CONCURRENT_STREAMS"}
			}
		}
		sc.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	st = &stream{sc: sc, id: id, send: sc.peerWindow, recv: int64(sc.srv.streamWindow()), declared: -1}
	st.bodyCond.L = &sc.mu
	if f.StreamEnded() {
		st.remoteDone = true
	}
	if f.Truncated {
		// Over MaxHeaderBytes: 431 without running the handler.
		sc.streams[id] = st
		sc.disarmIdleLocked()
		st.handlerDone = true
		err := sc.writeHeadersLocked(st, 431, nil, nil, true)
		sc.endLocked(st)
		sc.mu.Unlock()
		return err
	}
	req, err := sc.newRequest(st, f)
	if err != nil {
		sc.mu.Unlock()
		sc.srv.logger().Debug("HTTP/2 malformed request", "remote", sc.remote, "stream", id, "err", err)
		sc.resetStream(id, http2.ErrCodeProtocol)
		return nil
	}
	sc.streams[id] = st
	sc.disarmIdleLocked()
	if d := sc.srv.BodyTimeout; d > 0 && !st.remoteDone && req.Method != http.MethodConnect {
		// A tunnel's "body" is one direction of it, open as long as it is.
		st.bodyTimer = time.AfterFunc(d, func() { sc.bodyTimedOut(st) })
	}
	sc.mu.Unlock()
	sc.run(st, req, f.StreamEnded())
	return nil
}

// run answers req: inline when it has no body and Inline takes it, else
// on a goroutine of its own.
func (sc *conn) run(st *stream, req *http.Request, noBody bool) {
	if sc.srv.Inline != nil && noBody {
		w := st.newWriter(req, true)
		taken, panicked := sc.tryInline(w, req)
		switch {
		case panicked:
			sc.abandon(st)
			return
		case taken:
			w.finish()
			return
		}
		w.release()
	}
	go sc.runHandler(st, req)
}

// tryInline calls Inline; a panic in it costs the stream, as one in a
// handler does, not the process.
func (sc *conn) tryInline(w *responseWriter, req *http.Request) (taken, panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			panicked = true
			if p != errAbortHandler {
				sc.srv.logger().Error("HTTP/2 inline handler panicked", "remote", sc.remote, "url", req.URL.String(), "panic", p)
			}
		}
	}()
	return sc.srv.Inline(w, req), false
}

func (sc *conn) runHandler(st *stream, req *http.Request) {
	w := st.newWriter(req, false)
	defer func() {
		if p := recover(); p != nil {
			if p != errAbortHandler {
				sc.srv.logger().Error("HTTP/2 handler panicked", "remote", sc.remote, "url", req.URL.String(), "panic", p)
			}
			sc.abandon(st)
			return
		}
		w.finish()
	}()
	sc.srv.Handler.ServeHTTP(w, req)
}

// abandon ends a stream whose handler panicked: RST_STREAM INTERNAL_ERROR.
func (sc *conn) abandon(st *stream) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.resetLocked(st, http2.ErrCodeInternal)
	st.handlerDone = true
	sc.maybeRemoveLocked(st)
	sc.flushSoonLocked()
}

// bodyTimedOut resets a stream whose body did not arrive within
// BodyTimeout.
func (sc *conn) bodyTimedOut(st *stream) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st.ended || st.aborted != nil || sc.closed {
		return
	}
	sc.srv.logger().Debug("HTTP/2 request body timed out", "remote", sc.remote, "stream", st.id)
	sc.resetLocked(st, http2.ErrCodeCancel)
	sc.flushSoonLocked()
}

// resetStream sends RST_STREAM for id, whether or not it is open.
func (sc *conn) resetStream(id uint32, code http2.ErrCode) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st := sc.streams[id]; st != nil {
		sc.resetLocked(st, code)
		return
	}
	sc.rememberResetLocked(id)
	if !sc.closed {
		_ = sc.fr.WriteRSTStream(id, code)
	}
}

// resetLocked resets an open stream: RST_STREAM, its context canceled,
// its body failed, its buffered bytes credited back.
func (sc *conn) resetLocked(st *stream, code http2.ErrCode) {
	if st.aborted == nil {
		st.abortLocked(fmt.Errorf("h2: stream reset (%v)", code))
		if !sc.closed {
			_ = sc.fr.WriteRSTStream(st.id, code)
		}
		sc.rememberResetLocked(st.id)
	}
	sc.maybeRemoveLocked(st)
}

func (sc *conn) rememberResetLocked(id uint32) {
	sc.reset[sc.resetNext] = id
	sc.resetNext = (sc.resetNext + 1) % recentResets
}

func (sc *conn) recentlyResetLocked(id uint32) bool {
	for _, r := range sc.reset {
		if r == id {
			return true
		}
	}
	return false
}

// maybeRemoveLocked forgets a stream once both sides are done with it.
func (sc *conn) maybeRemoveLocked(st *stream) {
	if !st.handlerDone || !st.remoteDone || sc.streams[st.id] != st {
		return
	}
	delete(sc.streams, st.id)
	if st.bodyTimer != nil {
		st.bodyTimer.Stop()
	}
	if st.cancel != nil {
		st.cancel() // the request's context ends with its stream
	}
	if st.buffered > 0 {
		sc.creditLocked(nil, st.buffered)
		st.buffered, st.body = 0, nil
	}
	if len(sc.streams) == 0 {
		if sc.goingAway {
			// The reader closes (flushing first): wake it with a deadline.
			sc.idleClose = true
			_ = sc.nc.SetReadDeadline(time.Now())
			return
		}
		sc.armIdleLocked()
	}
}

// endLocked marks a stream's response complete. A client still sending
// its request is asked to stop (RST_STREAM NO_ERROR, RFC 9113 8.1).
//
// The response leaves in a write of its own first: curl 7.88 (Debian 12's)
// fails a stream (error 92) whose RST_STREAM comes in the same TLS record
// as its END_STREAM, and net/http's server, which writes them apart, never
// shows it that. flushAllLocked releases mu; the client may have finished
// meanwhile.
func (sc *conn) endLocked(st *stream) {
	if !st.remoteDone {
		sc.flushAllLocked()
		if !st.remoteDone {
			sc.resetLocked(st, http2.ErrCodeNo)
			return
		}
	}
	sc.maybeRemoveLocked(st)
}

// creditLocked gives n received bytes back to the client's windows: the
// connection's always, st's when given. WINDOW_UPDATEs go out once half a
// window has gathered.
func (sc *conn) creditLocked(st *stream, n int64) {
	sc.connUnacked += n
	if sc.connUnacked >= connWindow/2 && !sc.closed {
		_ = sc.fr.WriteWindowUpdate(0, uint32(sc.connUnacked))
		sc.connRecv += sc.connUnacked
		sc.connUnacked = 0
	}
	if st == nil || st.remoteDone || st.aborted != nil {
		return
	}
	st.unacked += n
	if st.unacked >= int64(sc.srv.streamWindow())/2 && !sc.closed {
		_ = sc.fr.WriteWindowUpdate(st.id, uint32(st.unacked))
		st.recv += st.unacked
		st.unacked = 0
	}
}

func (sc *conn) armIdle() {
	sc.mu.Lock()
	if len(sc.streams) == 0 {
		sc.armIdleLocked()
	}
	sc.mu.Unlock()
}

func (sc *conn) armIdleLocked() {
	if d := sc.srv.IdleTimeout; d > 0 && !sc.closed {
		_ = sc.nc.SetReadDeadline(time.Now().Add(d))
		sc.idleArmd = true
	}
}

func (sc *conn) disarmIdleLocked() {
	if sc.idleArmd {
		_ = sc.nc.SetReadDeadline(time.Time{})
		sc.idleArmd = false
	}
}

// goAway starts a graceful shutdown: GOAWAY with the last stream we
// process; the connection closes when those are done.
func (sc *conn) goAway() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed || sc.goingAway {
		return
	}
	sc.goingAway = true
	sc.lastStream = sc.maxSeenLocked()
	_ = sc.fr.WriteGoAway(sc.lastStream, http2.ErrCodeNo, nil)
	sc.flushLocked()
	if len(sc.streams) == 0 {
		sc.idleClose = true
		_ = sc.nc.SetReadDeadline(time.Now())
	}
}

// maxSeenLocked reads the reader's maxSeen from another goroutine: the
// streams map holds the open ones, and any id above them the reader saw
// is either in the map or done, so the largest key is a safe bound.
func (sc *conn) maxSeenLocked() uint32 {
	m := uint32(0)
	for id := range sc.streams {
		m = max(m, id)
	}
	return m
}

// goAwayNow ends the connection at once with a GOAWAY carrying code.
func (sc *conn) goAwayNow(code http2.ErrCode) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed {
		return
	}
	if !sc.goingAway || code != http2.ErrCodeNo {
		_ = sc.fr.WriteGoAway(sc.maxSeen, code, nil)
	}
	sc.flushAllLocked()
	sc.closeLocked()
}

func (sc *conn) close() {
	sc.mu.Lock()
	sc.flushAllLocked()
	sc.closeLocked()
	sc.mu.Unlock()
}

// closeLocked closes the socket and wakes every goroutine waiting on the
// connection; handlers still running see errors from then on.
func (sc *conn) closeLocked() {
	if sc.closed {
		return
	}
	sc.closed = true
	_ = sc.nc.Close()
	sc.cancel()
	for _, st := range sc.streams {
		st.abortLocked(errStreamClosed)
	}
	sc.windowCond.Broadcast()
}

// flushLocked writes the buffered frames to the socket, unless another
// goroutine is doing so: that one writes them next, with whatever else
// gathers meanwhile, so responses that end together leave in one write
// (one TLS record, one system call). mu is released during the write.
// The write deadline is renewed at most every half WriteTimeout (each
// renewal is a timer update).
func (sc *conn) flushLocked() error {
	for len(sc.out) > 0 && sc.werr == nil && !sc.closed && !sc.flushing {
		sc.flushing = true
		buf := sc.out
		sc.out = sc.spare[:0]
		wt := sc.srv.writeTimeout()
		if now := time.Now(); sc.deadline.Sub(now) < wt/2 {
			sc.deadline = now.Add(wt)
			_ = sc.nc.SetWriteDeadline(sc.deadline)
		}
		sc.mu.Unlock()
		_, err := sc.nc.Write(buf)
		sc.mu.Lock()
		if cap(buf) <= 64<<10 {
			sc.spare = buf[:0]
		} else {
			sc.spare = nil // a burst's buffer is not kept while idle
		}
		sc.flushing = false
		sc.flushCond.Broadcast()
		if err != nil {
			sc.werr = err
			sc.closeLocked()
		}
	}
	if sc.closed && sc.werr == nil {
		return errStreamClosed
	}
	return sc.werr
}

// flushSoonLocked has the flusher write the buffered frames once the
// goroutines runnable now have had their turn: handlers whose targets
// answered in the same poll then send their responses in one write, as an
// event loop answers what one epoll_wait returned. (Measured through lbd,
// HTTP/2 with 10 streams per connection: HAProxy made ~0 writes to the
// client per response, lbd 1.2 with a flush per response.)
func (sc *conn) flushSoonLocked() {
	if sc.flushQueued || len(sc.out) == 0 {
		return
	}
	sc.flushQueued = true
	select {
	case sc.flushCh <- struct{}{}:
	default:
	}
}

// flusher is the connection's deferred writer; it ends with the
// connection's context.
func (sc *conn) flusher() {
	defer sc.flusherDone.Done()
	for {
		select {
		case <-sc.flushCh:
		case <-sc.ctx.Done():
			return
		}
		runtime.Gosched() // to the back of the run queue: let others add theirs
		sc.mu.Lock()
		sc.flushQueued = false
		sc.flushLocked()
		sc.mu.Unlock()
	}
}

// flushAllLocked returns once every buffered frame has been written (or
// writing failed).
func (sc *conn) flushAllLocked() {
	for len(sc.out) > 0 || sc.flushing {
		if sc.werr != nil || sc.closed {
			return
		}
		if sc.flushing {
			sc.flushCond.Wait()
			continue
		}
		sc.flushLocked()
	}
}

// roomLocked waits, before more frames are added, while maxOut bytes are
// already waiting for the socket.
func (sc *conn) roomLocked() error {
	for len(sc.out) >= maxOut {
		if sc.werr != nil || sc.closed {
			return errStreamClosed
		}
		if sc.flushing {
			sc.flushCond.Wait()
			continue
		}
		if err := sc.flushLocked(); err != nil {
			return err
		}
	}
	return nil
}

// outWriter is where the Framer writes: the connection's buffer (mu held).
type outWriter struct{ sc *conn }

func (w outWriter) Write(p []byte) (int, error) {
	w.sc.out = append(w.sc.out, p...)
	return len(p), nil
}
