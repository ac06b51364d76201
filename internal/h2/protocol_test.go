package h2

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The tests in this file talk to the server frame by frame and check what
// RFC 9113 requires of it; a section number names the requirement.

// hf makes header fields of name, value pairs.
func hf(pairs ...string) []hpack.HeaderField {
	fs := make([]hpack.HeaderField, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		fs = append(fs, hpack.HeaderField{Name: pairs[i], Value: pairs[i+1]})
	}
	return fs
}

// reqFields is a request's pseudo-header fields followed by extra.
func reqFields(method, path string, extra ...string) []hpack.HeaderField {
	return hf(append([]string{":method", method, ":scheme", "http", ":authority", "example.com", ":path", path}, extra...)...)
}

func getReq(path string, extra ...string) []hpack.HeaderField {
	return reqFields("GET", path, extra...)
}

func postReq(path string, extra ...string) []hpack.HeaderField {
	return reqFields("POST", path, extra...)
}

// encodeBlock HPACK-encodes fields without touching the dynamic table
// (every field is a never-indexed literal), so that blocks encoded apart
// from each other can be sent in any order on one connection.
func encodeBlock(fields []hpack.HeaderField) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range fields {
		f.Sensitive = true
		if err := enc.WriteField(f); err != nil {
			panic(err)
		}
	}
	return buf.Bytes()
}

// writeBlock writes a header block as HEADERS and as many CONTINUATION
// frames as frames of maxFrame bytes need.
func writeBlock(fr *http2.Framer, id uint32, endStream bool, block []byte, maxFrame int) error {
	first, rest := block, []byte(nil)
	if len(first) > maxFrame {
		first, rest = block[:maxFrame], block[maxFrame:]
	}
	err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(rest) == 0})
	for err == nil && len(rest) > 0 {
		n := min(len(rest), maxFrame)
		err = fr.WriteContinuation(id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	return err
}

// frameTimeout bounds the wait for the server's next frame: far longer
// than any frame takes on loopback, even with -race.
const frameTimeout = 5 * time.Second

// rawClient is an HTTP/2 client made of a Framer, for saying exactly what
// a test means to say.
type rawClient struct {
	tb       testing.TB
	c        net.Conn
	fr       *http2.Framer
	dec      *hpack.Decoder
	settings []http2.Setting // the server's first SETTINGS
	log      []string        // the last frames read, for failure messages
	aside    []rawFrame      // frames of other streams read by await
	// What the server's WINDOW_UPDATEs granted: the connection's send
	// window (65535 to start, 6.9.2) and the increments per stream.
	connWindow int64
	granted    map[uint32]int64
	// quiet keeps await from writing (WINDOW_UPDATE, ACKs) while another
	// goroutine writes to c.
	quiet bool
}

// rawFrame is a frame the server sent, with its content copied out of the
// Framer's buffers; a HEADERS frame comes with its CONTINUATIONs decoded.
type rawFrame struct {
	http2.FrameHeader
	fields   []hpack.HeaderField // HEADERS
	data     []byte              // DATA, PING, GOAWAY debug data
	code     http2.ErrCode       // RST_STREAM, GOAWAY
	last     uint32              // GOAWAY
	incr     uint32              // WINDOW_UPDATE
	settings []http2.Setting     // SETTINGS
}

func (f rawFrame) endStream() bool {
	return (f.Type == http2.FrameData || f.Type == http2.FrameHeaders) && f.Flags.Has(http2.FlagDataEndStream)
}

func (f rawFrame) String() string {
	s := fmt.Sprintf("%v stream=%d len=%d", f.Type, f.StreamID, f.Length)
	if f.endStream() {
		s += " END_STREAM"
	}
	switch f.Type {
	case http2.FrameHeaders:
		for _, h := range f.fields {
			s += fmt.Sprintf(" %s=%q", h.Name, h.Value)
		}
	case http2.FrameData:
		s += fmt.Sprintf(" %.40q", f.data)
	case http2.FrameRSTStream:
		s += " " + f.code.String()
	case http2.FrameGoAway:
		s += fmt.Sprintf(" last=%d %v %q", f.last, f.code, f.data)
	case http2.FrameWindowUpdate:
		s += fmt.Sprintf(" incr=%d", f.incr)
	case http2.FramePing:
		s += fmt.Sprintf(" ack=%v %x", f.Flags.Has(http2.FlagPingAck), f.data)
	case http2.FrameSettings:
		s += fmt.Sprintf(" ack=%v %v", f.Flags.Has(http2.FlagSettingsAck), f.settings)
	}
	return s
}

// connectRaw dials addr; nothing is sent yet.
func connectRaw(tb testing.TB, addr string) *rawClient {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	fr := http2.NewFramer(c, c)
	fr.AllowIllegalWrites = true // the tests send frames the Framer would refuse
	// What the client advertises by not setting SETTINGS_MAX_FRAME_SIZE
	// (4.2): a larger frame from the server fails the read.
	fr.SetMaxReadFrameSize(16384)
	return &rawClient{tb: tb, c: c, fr: fr, dec: hpack.NewDecoder(4096, nil), connWindow: 65535, granted: map[uint32]int64{}}
}

// dialRaw connects and exchanges prefaces: the client's preface and
// SETTINGS, the server's SETTINGS (which must come first, 3.4) and the
// client's ack of them.
func dialRaw(tb testing.TB, addr string, settings ...http2.Setting) *rawClient {
	tb.Helper()
	rc := connectRaw(tb, addr)
	for _, s := range settings {
		if s.ID == http2.SettingHeaderTableSize {
			rc.dec.SetAllowedMaxDynamicTableSize(s.Val)
			rc.dec.SetMaxDynamicTableSize(s.Val)
		}
	}
	rc.write([]byte(http2.ClientPreface))
	rc.must(rc.fr.WriteSettings(settings...))
	f := rc.next()
	if f.Type != http2.FrameSettings || f.Flags.Has(http2.FlagSettingsAck) {
		tb.Fatalf("server preface: first frame %v, want SETTINGS (RFC 9113 3.4)", f)
	}
	rc.settings = f.settings
	rc.must(rc.fr.WriteSettingsAck())
	return rc
}

func (rc *rawClient) must(err error) {
	rc.tb.Helper()
	if err != nil {
		rc.tb.Fatalf("write: %v\n%s", err, rc.transcript())
	}
}

func (rc *rawClient) write(b []byte) {
	rc.tb.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(testTimeout))
	_, err := rc.c.Write(b)
	rc.must(err)
}

func (rc *rawClient) headers(id uint32, endStream bool, fields ...hpack.HeaderField) {
	rc.tb.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(testTimeout))
	rc.must(writeBlock(rc.fr, id, endStream, encodeBlock(fields), 16384))
}

func (rc *rawClient) data(id uint32, endStream bool, b []byte) {
	rc.tb.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(testTimeout))
	rc.must(rc.fr.WriteData(id, endStream, b))
}

func (rc *rawClient) windowUpdate(id, incr uint32) {
	rc.tb.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(testTimeout))
	rc.must(rc.fr.WriteWindowUpdate(id, incr))
}

func (rc *rawClient) setting(id http2.SettingID) (uint32, bool) {
	for _, s := range rc.settings {
		if s.ID == id {
			return s.Val, true
		}
	}
	return 0, false
}

// transcript is the frames read last, for failure messages.
func (rc *rawClient) transcript() string {
	return "frames from the server:\n\t" + strings.Join(rc.log, "\n\t")
}

// next reads a frame, failing the test on error or after testTimeout.
func (rc *rawClient) next() rawFrame {
	rc.tb.Helper()
	f, err := rc.tryNext()
	if err != nil {
		rc.tb.Fatalf("read: %v\n%s", err, rc.transcript())
	}
	return f
}

func (rc *rawClient) tryNext() (rawFrame, error) {
	rc.c.SetReadDeadline(time.Now().Add(frameTimeout))
	return rc.nextNoDeadline()
}

// nextNoDeadline reads a frame under the read deadline already set.
func (rc *rawClient) nextNoDeadline() (rawFrame, error) {
	f, err := rc.fr.ReadFrame()
	if err != nil {
		return rawFrame{}, err
	}
	rf := rawFrame{FrameHeader: f.Header()}
	switch f := f.(type) {
	case *http2.HeadersFrame:
		block := bytes.Clone(f.HeaderBlockFragment())
		for end := f.HeadersEnded(); !end; {
			cf, err := rc.fr.ReadFrame() // the Framer checks it is a CONTINUATION of this stream
			if err != nil {
				return rf, err
			}
			cont := cf.(*http2.ContinuationFrame)
			block = append(block, cont.HeaderBlockFragment()...)
			end = cont.HeadersEnded()
		}
		if rf.fields, err = rc.dec.DecodeFull(block); err != nil {
			return rf, fmt.Errorf("HPACK decoding the server's header block: %w", err)
		}
	case *http2.DataFrame:
		rf.data = bytes.Clone(f.Data())
	case *http2.RSTStreamFrame:
		rf.code = f.ErrCode
	case *http2.GoAwayFrame:
		rf.code, rf.last, rf.data = f.ErrCode, f.LastStreamID, bytes.Clone(f.DebugData())
	case *http2.WindowUpdateFrame:
		rf.incr = f.Increment
		if f.StreamID == 0 {
			rc.connWindow += int64(f.Increment)
		} else {
			rc.granted[f.StreamID] += int64(f.Increment)
		}
	case *http2.PingFrame:
		rf.data = bytes.Clone(f.Data[:])
	case *http2.SettingsFrame:
		f.ForeachSetting(func(s http2.Setting) error {
			rf.settings = append(rf.settings, s)
			return nil
		})
	case *http2.PushPromiseFrame:
		return rf, errors.New("the server sent PUSH_PROMISE though it never got SETTINGS_ENABLE_PUSH")
	}
	if len(rc.log) == 64 {
		rc.log = append(rc.log[:0], rc.log[32:]...)
	}
	rc.log = append(rc.log, rf.String())
	return rf, nil
}

// wantFrame reads until a frame of type typ on stream id, failing on an
// error, on a GOAWAY other than the one wanted, or on an RST_STREAM of id.
func (rc *rawClient) wantFrame(typ http2.FrameType, id uint32) rawFrame {
	rc.tb.Helper()
	for {
		f := rc.next()
		if f.Type == typ && f.StreamID == id {
			return f
		}
		if f.Type == http2.FrameGoAway || f.Type == http2.FrameRSTStream && f.StreamID == id {
			rc.tb.Fatalf("%v while waiting for %v on stream %d\n%s", f, typ, id, rc.transcript())
		}
	}
}

// wantClosed reads until the server closes the connection.
func (rc *rawClient) wantClosed() {
	rc.tb.Helper()
	for {
		_, err := rc.tryNext()
		if err == nil {
			continue
		}
		if isTimeout(err) {
			rc.tb.Fatalf("the server did not close the connection\n%s", rc.transcript())
		}
		return
	}
}

// wantConnError reads until a GOAWAY and requires its error code to be
// one of codes and the connection to be closed after it (5.4.1).
func (rc *rawClient) wantConnError(codes ...http2.ErrCode) rawFrame {
	rc.tb.Helper()
	for {
		f, err := rc.tryNext()
		if err != nil {
			rc.tb.Fatalf("connection ended (%v) without GOAWAY %v\n%s", err, codes, rc.transcript())
		}
		if f.Type != http2.FrameGoAway {
			continue
		}
		if !slices.Contains(codes, f.code) {
			rc.tb.Errorf("%v, want GOAWAY %v\n%s", f, codes, rc.transcript())
		}
		rc.wantClosed()
		return f
	}
}

// streamResult is how a stream ended, as the client saw it.
type streamResult struct {
	interim  []int // 1xx status codes
	status   int
	header   []hpack.HeaderField // the final response's regular fields
	body     []byte
	trailers []hpack.HeaderField
	ended    bool          // END_STREAM arrived
	rst      bool          // RST_STREAM arrived
	code     http2.ErrCode // its code
	goAway   *rawFrame     // a GOAWAY with an error ended the wait
	err      error         // the connection ended first
	frames   []rawFrame    // the frames of the stream, in order
}

func (r streamResult) String() string {
	switch {
	case r.err != nil:
		return fmt.Sprintf("connection ended: %v", r.err)
	case r.goAway != nil:
		return r.goAway.String()
	case r.rst:
		return fmt.Sprintf("RST_STREAM %v after status %d", r.code, r.status)
	}
	return fmt.Sprintf("status %d ended=%v header %v body %.60q trailers %v", r.status, r.ended, r.header, r.body, r.trailers)
}

func (r streamResult) get(name string) (string, bool) {
	for _, f := range r.header {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// await reads until stream id ends: END_STREAM, RST_STREAM, a GOAWAY with
// an error, or the connection's end. Frames of other streams it reads are
// set aside for their own await. DATA is credited back to the server's
// windows, and the server's PINGs and SETTINGS acknowledged, as a client
// must.
func (rc *rawClient) await(id uint32) streamResult {
	rc.tb.Helper()
	var r streamResult
	for {
		f, err := rc.nextOf(id)
		if err != nil {
			r.err = err
			return r
		}
		if f.StreamID == 0 {
			switch {
			case f.Type == http2.FrameGoAway:
				if f.code != http2.ErrCodeNo {
					r.goAway = &f
					return r
				}
			case rc.quiet:
			case f.Type == http2.FramePing && !f.Flags.Has(http2.FlagPingAck):
				rc.must(rc.fr.WritePing(true, [8]byte(f.data)))
			case f.Type == http2.FrameSettings && !f.Flags.Has(http2.FlagSettingsAck):
				rc.must(rc.fr.WriteSettingsAck())
			}
			continue
		}
		r.frames = append(r.frames, f)
		switch f.Type {
		case http2.FrameHeaders:
			status := -1
			var regular []hpack.HeaderField
			for _, h := range f.fields {
				if h.Name == ":status" {
					status, _ = strconv.Atoi(h.Value)
				} else if !strings.HasPrefix(h.Name, ":") {
					regular = append(regular, h)
				}
			}
			switch {
			case r.status != 0:
				r.trailers = f.fields
			case status >= 100 && status < 200:
				r.interim = append(r.interim, status)
			default:
				r.status, r.header = status, regular
			}
		case http2.FrameData:
			r.body = append(r.body, f.data...)
		case http2.FrameRSTStream:
			r.rst, r.code = true, f.code
			return r
		}
		if f.endStream() {
			r.ended = true
			return r
		}
	}
}

// nextOf returns the next frame of stream id or of the connection
// (stream 0): one set aside earlier, or one read now. DATA is credited
// back to the server's windows as it is read.
func (rc *rawClient) nextOf(id uint32) (rawFrame, error) {
	for i, f := range rc.aside {
		if f.StreamID == id {
			rc.aside = slices.Delete(rc.aside, i, i+1)
			return f, nil
		}
	}
	for {
		f, err := rc.tryNext()
		if err != nil {
			return f, err
		}
		if f.Type == http2.FrameData && f.Length > 0 && !rc.quiet {
			rc.must(rc.fr.WriteWindowUpdate(0, f.Length))
			if !f.endStream() {
				rc.must(rc.fr.WriteWindowUpdate(f.StreamID, f.Length))
			}
		}
		if f.StreamID == 0 || f.StreamID == id {
			return f, nil
		}
		rc.aside = append(rc.aside, f)
	}
}

// wantResponse awaits stream id and requires a complete response.
func (rc *rawClient) wantResponse(id uint32, status int) streamResult {
	rc.tb.Helper()
	r := rc.await(id)
	if !r.ended || r.status != status {
		rc.tb.Fatalf("stream %d: %v, want a complete %d response\n%s", id, r, status, rc.transcript())
	}
	return r
}

// ping sends a PING and reads until its ACK; check sees every frame read
// before it. Frames are processed in order, so a PING round trip shows
// what the server did about everything sent before it.
func (rc *rawClient) ping(data [8]byte, check func(rawFrame)) {
	rc.tb.Helper()
	rc.must(rc.fr.WritePing(false, data))
	for {
		f := rc.next()
		if f.Type == http2.FramePing && f.Flags.Has(http2.FlagPingAck) && bytes.Equal(f.data, data[:]) {
			return
		}
		if check != nil {
			check(f)
		}
	}
}

// counter counts handler calls by path.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) add(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[path]++
}

func (c *counter) get(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[path]
}

// TestServerPreface: the server's SETTINGS are valid and advertise its
// limits; SETTINGS are acknowledged (6.5.3), PINGs answered with their
// data (6.7), and a PING ACK the server never asked for is ignored.
func TestServerPreface(t *testing.T) {
	ts := startTestServer(t, &Server{Handler: http.NotFoundHandler()}, nil)
	rc := dialRaw(t, ts.addr)
	for _, s := range rc.settings {
		if err := s.Valid(); err != nil {
			t.Errorf("server setting %v: %v", s, err)
		}
	}
	if v, ok := rc.setting(http2.SettingMaxConcurrentStreams); !ok || v != 250 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d (sent: %v), want the default 250", v, ok)
	}
	// 6.5.2: "A server MUST NOT explicitly set this value to 1."
	if v, ok := rc.setting(http2.SettingEnablePush); ok && v != 0 {
		t.Errorf("SETTINGS_ENABLE_PUSH %d from a server", v)
	}
	if v, ok := rc.setting(http2.SettingMaxHeaderListSize); ok && v != 1<<20 {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d, want the default 1 MiB", v)
	}

	rc.must(rc.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 4096}, http2.Setting{ID: 0x7a, Val: 1}))
	rc.must(rc.fr.WritePing(true, [8]byte{'u', 'n', 's', 'o', 'l', 'i', 'c', 'i'}))
	rc.must(rc.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}))
	rc.must(rc.fr.WritePing(false, [8]byte{8, 7, 6, 5, 4, 3, 2, 1}))
	acks, pings := 0, [][]byte{}
	for acks < 2 || len(pings) < 2 {
		f := rc.next()
		switch {
		case f.Type == http2.FrameSettings && f.Flags.Has(http2.FlagSettingsAck):
			acks++ // the preface's SETTINGS, then the second ones
			if f.Length != 0 {
				t.Errorf("SETTINGS ACK with a payload: %v", f)
			}
		case f.Type == http2.FramePing:
			if !f.Flags.Has(http2.FlagPingAck) {
				t.Errorf("%v: the server pinged", f)
				continue
			}
			pings = append(pings, f.data)
		case f.Type == http2.FrameGoAway:
			t.Fatalf("%v\n%s", f, rc.transcript())
		}
	}
	if want := [][]byte{{1, 2, 3, 4, 5, 6, 7, 8}, {8, 7, 6, 5, 4, 3, 2, 1}}; !slices.EqualFunc(pings, want, bytes.Equal) {
		t.Errorf("PING ACKs %x, want %x (and none for the unsolicited ACK)", pings, want)
	}
}

// TestConnectionErrors: each of these is a connection error (5.4.1): the
// server sends GOAWAY with the code and closes the connection.
func TestConnectionErrors(t *testing.T) {
	ts := startTestServer(t, &Server{MaxHeaderBytes: 64 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	})}, nil)
	get := encodeBlock(getReq("/"))
	var maxFrame uint32 // the server's SETTINGS_MAX_FRAME_SIZE, for one case
	for _, c := range []struct {
		name string
		rfc  string
		send func(fr *http2.Framer)
		want http2.ErrCode
	}{
		{"HEADERS on an even stream", "5.1.1", func(fr *http2.Framer) {
			writeBlock(fr, 2, true, get, 16384)
		}, http2.ErrCodeProtocol},
		{"stream id lower than a previous one", "5.1.1", func(fr *http2.Framer) {
			writeBlock(fr, 5, true, get, 16384)
			writeBlock(fr, 3, true, get, 16384)
		}, http2.ErrCodeProtocol},
		{"HEADERS on stream 0", "6.2", func(fr *http2.Framer) {
			fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 0, get)
		}, http2.ErrCodeProtocol},
		{"PUSH_PROMISE from the client", "8.4", func(fr *http2.Framer) {
			writeBlock(fr, 1, false, encodeBlock(postReq("/")), 16384)
			fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: get, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1", "6.5.2", func(fr *http2.Framer) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, http2.ErrCodeFlowControl},
		{"SETTINGS_ENABLE_PUSH 2", "6.5.2", func(fr *http2.Framer) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})
		}, http2.ErrCodeProtocol},
		{"SETTINGS_MAX_FRAME_SIZE below 16384", "6.5.2", func(fr *http2.Framer) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16383})
		}, http2.ErrCodeProtocol},
		{"SETTINGS_MAX_FRAME_SIZE above 2^24-1", "6.5.2", func(fr *http2.Framer) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24})
		}, http2.ErrCodeProtocol},
		{"SETTINGS of 5 bytes", "6.5", func(fr *http2.Framer) {
			fr.WriteRawFrame(http2.FrameSettings, 0, 0, []byte{0, 4, 0, 0, 0})
		}, http2.ErrCodeFrameSize},
		{"SETTINGS ACK with a payload", "6.5", func(fr *http2.Framer) {
			fr.WriteRawFrame(http2.FrameSettings, http2.FlagSettingsAck, 0, []byte{0, 4, 0, 0, 0, 1})
		}, http2.ErrCodeFrameSize},
		{"SETTINGS on a stream", "6.5", func(fr *http2.Framer) {
			fr.WriteRawFrame(http2.FrameSettings, 0, 1, nil)
		}, http2.ErrCodeProtocol},
		{"WINDOW_UPDATE overflowing the connection window", "6.9.1", func(fr *http2.Framer) {
			fr.WriteWindowUpdate(0, 1<<31-1)
		}, http2.ErrCodeFlowControl},
		{"WINDOW_UPDATE of 0 on the connection", "6.9", func(fr *http2.Framer) {
			fr.WriteWindowUpdate(0, 0)
		}, http2.ErrCodeProtocol},
		{"WINDOW_UPDATE of 3 bytes", "6.9", func(fr *http2.Framer) {
			fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 1})
		}, http2.ErrCodeFrameSize},
		{"PING of 7 bytes", "6.7", func(fr *http2.Framer) {
			fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 7))
		}, http2.ErrCodeFrameSize},
		{"PING on a stream", "6.7", func(fr *http2.Framer) {
			fr.WriteRawFrame(http2.FramePing, 0, 1, make([]byte, 8))
		}, http2.ErrCodeProtocol},
		{"DATA on stream 0", "6.1", func(fr *http2.Framer) {
			fr.WriteData(0, false, []byte("x"))
		}, http2.ErrCodeProtocol},
		{"RST_STREAM on an idle stream", "6.4", func(fr *http2.Framer) {
			fr.WriteRSTStream(1, http2.ErrCodeCancel)
		}, http2.ErrCodeProtocol},
		{"RST_STREAM of 3 bytes", "6.4", func(fr *http2.Framer) {
			writeBlock(fr, 1, true, get, 16384)
			fr.WriteRawFrame(http2.FrameRSTStream, 0, 1, []byte{0, 0, 8})
		}, http2.ErrCodeFrameSize},
		{"WINDOW_UPDATE on an idle stream", "5.1", func(fr *http2.Framer) {
			fr.WriteWindowUpdate(1, 100)
		}, http2.ErrCodeProtocol},
		{"DATA on an idle stream", "5.1", func(fr *http2.Framer) {
			fr.WriteData(1, true, []byte("x"))
		}, http2.ErrCodeProtocol},
		{"CONTINUATION without HEADERS", "6.10", func(fr *http2.Framer) {
			fr.WriteContinuation(1, true, get)
		}, http2.ErrCodeProtocol},
		{"another frame inside a header block", "6.10", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get[:3], EndStream: true})
			fr.WritePing(false, [8]byte{})
		}, http2.ErrCodeProtocol},
		{"CONTINUATION of another stream", "6.10", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get[:3], EndStream: true})
			fr.WriteContinuation(3, true, get[3:])
		}, http2.ErrCodeProtocol},
		{"undecodable header block", "4.3", func(fr *http2.Framer) {
			// An indexed field line with index 0 (RFC 7541 6.1).
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x80}, EndStream: true, EndHeaders: true})
		}, http2.ErrCodeCompression},
		{"HEADERS larger than SETTINGS_MAX_FRAME_SIZE", "4.2", func(fr *http2.Framer) {
			// One byte over what the server advertised (set below); the
			// server must refuse it by its length, before its content.
			fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1, make([]byte, maxFrame+1))
		}, http2.ErrCodeFrameSize},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			maxFrame = 16384
			if v, ok := rc.setting(http2.SettingMaxFrameSize); ok {
				maxFrame = v
			}
			var buf bytes.Buffer
			fr := http2.NewFramer(&buf, nil)
			fr.AllowIllegalWrites = true
			c.send(fr)
			// The server may close before it has read everything (a frame
			// too large), so a failed write is no failure by itself.
			rc.c.SetWriteDeadline(time.Now().Add(testTimeout))
			if _, err := rc.c.Write(buf.Bytes()); err != nil {
				t.Logf("write: %v", err)
			}
			if f := rc.wantConnError(c.want); t.Failed() {
				t.Logf("RFC 9113 %s requires a connection error %v; got %v", c.rfc, c.want, f)
			}
		})
	}
}

// TestBadPreface: a connection that does not start with the client
// preface, SETTINGS included, is a connection error (3.4): it is closed,
// after a GOAWAY PROTOCOL_ERROR if any.
func TestBadPreface(t *testing.T) {
	ts := startTestServer(t, &Server{Handler: http.NotFoundHandler()}, nil)
	ping := func() []byte {
		var buf bytes.Buffer
		http2.NewFramer(&buf, nil).WritePing(false, [8]byte{})
		return buf.Bytes()
	}()
	for _, c := range []struct{ name, send string }{
		{"HTTP/1.1 request", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"mangled preface", strings.Replace(http2.ClientPreface, "2.0", "2.1", 1)},
		{"preface then PING", http2.ClientPreface + string(ping)},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := connectRaw(t, ts.addr)
			rc.write([]byte(c.send))
			for {
				f, err := rc.tryNext()
				if err != nil {
					if isTimeout(err) {
						t.Fatalf("not closed\n%s", rc.transcript())
					}
					return
				}
				switch f.Type {
				case http2.FrameGoAway:
					if f.code != http2.ErrCodeProtocol {
						t.Errorf("%v, want PROTOCOL_ERROR", f)
					}
				case http2.FrameSettings, http2.FrameWindowUpdate:
				default:
					t.Errorf("%v after a bad preface", f)
				}
			}
		})
	}
}

// TestMalformedRequests: a malformed request (8.1.1) is a stream error of
// type PROTOCOL_ERROR, which the server may precede with a 400 response.
// Either way no handler runs, and the connection serves the next request.
func TestMalformedRequests(t *testing.T) {
	var calls counter
	ts := startTestServer(t, &Server{
		Inline: func(w http.ResponseWriter, r *http.Request) bool {
			calls.add(r.URL.Path)
			return false
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.add(r.URL.Path)
			io.Copy(io.Discard, r.Body)
		}),
	}, nil)
	base := hf(":method", "GET", ":scheme", "http", ":authority", "example.com", ":path", "/bad")
	without := func(name string) []hpack.HeaderField {
		return slices.DeleteFunc(slices.Clone(base), func(f hpack.HeaderField) bool { return f.Name == name })
	}
	with := func(pairs ...string) []hpack.HeaderField { return append(slices.Clone(base), hf(pairs...)...) }
	for _, c := range []struct {
		name   string
		rfc    string
		fields []hpack.HeaderField
	}{
		{"no :method", "8.3.1", without(":method")},
		{"no :path", "8.3.1", without(":path")},
		{"no :scheme", "8.3.1", without(":scheme")},
		{"empty :path", "8.3.1", append(without(":path"), hf(":path", "")...)},
		{"two :path", "8.3", with(":path", "/bad")},
		{"unknown pseudo-header", "8.3", hf(":method", "GET", ":scheme", "http", ":path", "/bad", ":foo", "x")},
		{"response pseudo-header", "8.3", hf(":method", "GET", ":scheme", "http", ":path", "/bad", ":status", "200")},
		{"pseudo-header after a regular field", "8.3", hf(":method", "GET", ":scheme", "http", "x-a", "1", ":path", "/bad")},
		{"uppercase field name", "8.2.1", with("X-Upper", "1")},
		{"field name with a space", "8.2.1", with("x y", "1")},
		{"field value with a line feed", "8.2.1", with("x-a", "1\nx-b: 2")},
		{"field value with NUL", "8.2.1", with("x-a", "1\x002")},
		{"connection: keep-alive", "8.2.2", with("connection", "keep-alive")},
		{"keep-alive", "8.2.2", with("keep-alive", "timeout=5")},
		{"proxy-connection", "8.2.2", with("proxy-connection", "keep-alive")},
		{"transfer-encoding", "8.2.2", with("transfer-encoding", "chunked")},
		{"upgrade", "8.2.2", with("upgrade", "h2c")},
		{"te: gzip", "8.2.2", with("te", "gzip")},
		{"te: trailers, gzip", "8.2.2", with("te", "trailers, gzip")},
		{"non-numeric content-length", "8.1.1", append(without(":method"), hf(":method", "POST", "content-length", "abc")...)},
		// END_STREAM on the HEADERS: the content is 0 bytes, not 5.
		{"content-length without a body", "8.1.1", append(without(":method"), hf(":method", "POST", "content-length", "5")...)},
		// What a proxy would write into its HTTP/1.1 request line or Host
		// (the Framer lets anything but CR, LF and NUL through).
		{":method with spaces", "8.3.1", append(without(":method"), hf(":method", "GET /admin HTTP/1.1")...)},
		{":method not a token", "8.3.1", append(without(":method"), hf(":method", "G(T")...)},
		{":authority with a space", "8.3.1", append(without(":authority"), hf(":authority", "a b")...)},
		{":authority with a tab", "8.3.1", append(without(":authority"), hf(":authority", "a\tb")...)},
		{"host with a space", "8.3.1", append(without(":authority"), hf("host", "x y")...)},
		// This server does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL.
		{":protocol not offered", "RFC 8441 3", hf(":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":authority", "example.com", ":path", "/bad")},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			rc.headers(1, true, c.fields...)
			res := rc.await(1)
			t.Logf("%v", res)
			switch {
			case res.rst && res.code == http2.ErrCodeProtocol:
			case res.ended && res.status == 400:
			default:
				t.Errorf("got %v; RFC 9113 %s: want RST_STREAM PROTOCOL_ERROR or a 400\n%s", res, c.rfc, rc.transcript())
			}
			rc.headers(3, true, getReq("/next")...)
			rc.wantResponse(3, 200)
			if n := calls.get("/bad"); n != 0 {
				t.Errorf("the malformed request reached Inline or Handler (%d calls)", n)
			}
		})
	}
	// Controls: what is allowed is served.
	for _, c := range []struct {
		name   string
		fields []hpack.HeaderField
	}{
		{"te: trailers", with("te", "trailers")},
		{"host instead of :authority", append(without(":authority"), hf("host", "example.com")...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := calls.get("/bad")
			rc := dialRaw(t, ts.addr)
			rc.headers(1, true, c.fields...)
			rc.wantResponse(1, 200)
			if calls.get("/bad") == before {
				t.Errorf("the handler did not run")
			}
		})
	}
}

// TestContentLengthMismatch: DATA that does not add up to content-length
// make the request malformed (8.1.1): RST_STREAM PROTOCOL_ERROR, and the
// handler's read of the body fails.
func TestContentLengthMismatch(t *testing.T) {
	started := make(chan struct{}, 1)
	readErr := make(chan error, 1)
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/upload" {
			return
		}
		started <- struct{}{}
		_, err := io.ReadAll(r.Body)
		readErr <- err
	})}, nil)
	for _, c := range []struct {
		name   string
		length string
		frames []string
	}{
		{"fewer bytes", "10", []string{"hello"}},
		{"more bytes", "3", []string{"hello"}},
		{"more bytes over two frames", "6", []string{"abc", "defg"}},
		{"no bytes", "4", []string{""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			rc.headers(1, false, postReq("/upload", "content-length", c.length)...)
			recv(t, started, "the handler to start")
			for i, d := range c.frames {
				rc.data(1, i == len(c.frames)-1, []byte(d))
			}
			if res := rc.await(1); !res.rst || res.code != http2.ErrCodeProtocol {
				t.Errorf("got %v, want RST_STREAM PROTOCOL_ERROR\n%s", res, rc.transcript())
			}
			if err := recv(t, readErr, "the handler's read"); err == nil {
				t.Errorf("the handler read the body without error")
			}
			rc.headers(3, true, getReq("/next")...)
			rc.wantResponse(3, 200)
		})
	}
}

// TestStreamErrors: errors confined to one stream reset it (5.4.2) with
// the code RFC 9113 names, and the connection goes on. The handler of
// stream 1 is still running (the stream is open or half-closed).
func TestStreamErrors(t *testing.T) {
	g := newGate()
	ts := startTestServer(t, &Server{StreamWindow: 1024, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/held" {
			g.wait(r) // reads nothing, so the stream window stays as advertised
		}
	})}, nil)
	t.Cleanup(g.open)

	type stepFunc func(t *testing.T, rc *rawClient) []http2.ErrCode // what the server may answer on stream 1
	for _, c := range []struct {
		name      string
		rfc       string
		endStream bool // the request on stream 1 ends with its HEADERS
		step      stepFunc
		connOK    bool // a GOAWAY with the code is acceptable too
	}{
		{"WINDOW_UPDATE overflowing a stream window", "6.9.1", true, func(t *testing.T, rc *rawClient) []http2.ErrCode {
			rc.windowUpdate(1, 1<<31-1)
			return []http2.ErrCode{http2.ErrCodeFlowControl}
		}, false},
		{"WINDOW_UPDATE of 0 on a stream", "6.9", true, func(t *testing.T, rc *rawClient) []http2.ErrCode {
			rc.windowUpdate(1, 0)
			return []http2.ErrCode{http2.ErrCodeProtocol}
		}, false},
		{"DATA after END_STREAM", "5.1", true, func(t *testing.T, rc *rawClient) []http2.ErrCode {
			rc.data(1, false, []byte("late"))
			return []http2.ErrCode{http2.ErrCodeStreamClosed}
		}, false},
		{"HEADERS after HEADERS without END_STREAM", "8.1", false, func(t *testing.T, rc *rawClient) []http2.ErrCode {
			rc.headers(1, false, hf("x-a", "1")...)
			return []http2.ErrCode{http2.ErrCodeProtocol}
		}, false},
		{"trailers with a pseudo-header", "8.1", false, func(t *testing.T, rc *rawClient) []http2.ErrCode {
			rc.headers(1, true, hf(":path", "/x")...)
			return []http2.ErrCode{http2.ErrCodeProtocol}
		}, false},
		{"DATA beyond the stream window", "6.9.1", false, func(t *testing.T, rc *rawClient) []http2.ErrCode {
			// What the server advertised, plus what it granted since.
			window, conn := int64(65535), int64(65535)
			if v, ok := rc.setting(http2.SettingInitialWindowSize); ok {
				window = int64(v)
			}
			rc.ping([8]byte{'w'}, func(f rawFrame) {
				if f.Type == http2.FrameWindowUpdate {
					if f.StreamID == 1 {
						window += int64(f.incr)
					} else if f.StreamID == 0 {
						conn += int64(f.incr)
					}
				}
			})
			if window >= 16384 || window >= conn {
				t.Skipf("stream window %d (connection %d): not one frame's worth", window, conn)
			}
			rc.data(1, false, make([]byte, window+1))
			return []http2.ErrCode{http2.ErrCodeFlowControl}
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			if c.endStream {
				rc.headers(1, true, getReq("/held")...)
			} else {
				rc.headers(1, false, postReq("/held")...)
			}
			recv(t, g.started, "the handler to start")
			codes := c.step(t, rc)
			res := rc.await(1)
			switch {
			case res.rst && slices.Contains(codes, res.code):
			case c.connOK && res.goAway != nil && slices.Contains(codes, res.goAway.code):
				return
			default:
				t.Fatalf("got %v; RFC 9113 %s: want RST_STREAM %v\n%s", res, c.rfc, codes, rc.transcript())
			}
			rc.headers(3, true, getReq("/next")...)
			rc.wantResponse(3, 200)
		})
	}
}

// TestToleratedFrames: what a server must accept without error: unknown
// frame types and settings (4.1, 6.5.2), PRIORITY on an idle stream (5.1),
// padding and priority in HEADERS and DATA (6.1, 6.2), a header block in
// CONTINUATIONs (6.10), WINDOW_UPDATE and RST_STREAM just after a stream
// closed (5.1), and a GOAWAY from the client (6.8).
func TestToleratedFrames(t *testing.T) {
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(500)
			return
		}
		fmt.Fprintf(w, "%s %s %q x-long=%d", r.Method, r.URL.Path, b, len(r.Header.Get("X-Long")))
	})}, nil)
	rc := dialRaw(t, ts.addr)

	rc.must(rc.fr.WriteRawFrame(0xfa, 0x5, 0, []byte("unknown frame type")))
	rc.must(rc.fr.WriteRawFrame(0xfb, 0, 1, nil))
	rc.must(rc.fr.WriteSettings(http2.Setting{ID: 0x7777, Val: 12345}))
	rc.must(rc.fr.WritePriority(11, http2.PriorityParam{StreamDep: 0, Weight: 15}))

	// Padded HEADERS with priority, padded DATA.
	rc.must(rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: encodeBlock(postReq("/padded")), EndHeaders: true,
		PadLength: 7, Priority: http2.PriorityParam{StreamDep: 0, Weight: 200, Exclusive: true}}))
	rc.must(rc.fr.WriteDataPadded(1, false, []byte("pad"), make([]byte, 20)))
	rc.must(rc.fr.WriteDataPadded(1, true, []byte("ded"), make([]byte, 255)))
	if r := rc.wantResponse(1, 200); string(r.body) != `POST /padded "padded" x-long=0` {
		t.Errorf("padded request: %q", r.body)
	}

	// A header block over three frames.
	block := encodeBlock(getReq("/continued", "x-long", strings.Repeat("l", 30000)))
	rc.c.SetWriteDeadline(time.Now().Add(testTimeout))
	rc.must(writeBlock(rc.fr, 3, true, block, 12000))
	if r := rc.wantResponse(3, 200); string(r.body) != `GET /continued "" x-long=30000` {
		t.Errorf("continued request: %q", r.body)
	}

	// Frames for closed streams, as a client sends them in a race.
	rc.windowUpdate(3, 1000)
	rc.must(rc.fr.WriteRSTStream(3, http2.ErrCodeCancel))
	rc.must(rc.fr.WritePriority(3, http2.PriorityParam{StreamDep: 0, Weight: 1}))

	// Stream 11 was idle with a priority; it can be opened.
	rc.headers(11, true, getReq("/prioritized")...)
	rc.wantResponse(11, 200)

	rc.must(rc.fr.WriteGoAway(0, http2.ErrCodeNo, nil))
	rc.ping([8]byte{'e', 'n', 'd'}, func(f rawFrame) {
		if f.Type == http2.FrameGoAway && f.code != http2.ErrCodeNo || f.Type == http2.FrameRSTStream {
			t.Errorf("%v\n%s", f, rc.transcript())
		}
	})
}

// TestHeaderListTooLarge: a header list over MaxHeaderBytes is refused
// (431, RST_STREAM or GOAWAY) without running a handler, and header
// blocks are not buffered without bound (a CONTINUATION flood).
func TestHeaderListTooLarge(t *testing.T) {
	var calls counter
	ts := startTestServer(t, &Server{MaxHeaderBytes: 4096, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.add(r.URL.Path)
	})}, nil)

	t.Run("advertised", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		if v, ok := rc.setting(http2.SettingMaxHeaderListSize); ok && v != 4096 {
			t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d, want MaxHeaderBytes 4096", v)
		}
	})
	t.Run("within", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		rc.headers(1, true, getReq("/fits", "x-a", strings.Repeat("a", 3000))...)
		rc.wantResponse(1, 200)
	})
	many := getReq("/big")
	for i := range 100 {
		many = append(many, hpack.HeaderField{Name: fmt.Sprintf("x-field-%d", i), Value: "value"})
	}
	for _, c := range []struct {
		name   string
		fields []hpack.HeaderField
	}{
		{"one large field", getReq("/big", "x-a", strings.Repeat("a", 8000))},
		{"many fields", many},
		{"over two frames", getReq("/big", "x-a", strings.Repeat("a", 20000))},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			rc.headers(1, true, c.fields...)
			res := rc.await(1)
			t.Logf("%v", res)
			switch {
			case res.goAway != nil || res.err != nil:
				if calls.get("/big") != 0 {
					t.Errorf("handler ran")
				}
				return // the connection is gone; nothing more to check
			case res.rst:
			case res.ended && res.status == 431:
			default:
				t.Errorf("got %v, want 431, RST_STREAM or GOAWAY\n%s", res, rc.transcript())
			}
			rc.headers(3, true, getReq("/next")...)
			rc.wantResponse(3, 200)
			if calls.get("/big") != 0 {
				t.Errorf("handler ran")
			}
		})
	}

	t.Run("CONTINUATION flood", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		rc.quiet = true // the flood has the connection's write side
		frag := encodeBlock(hf("x-flood", strings.Repeat("f", 1000)))
		// 16 MiB of CONTINUATION frames; the server must give up long
		// before, so write errors are expected and ignored.
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			bw := bufio.NewWriterSize(rc.c, 64<<10)
			fr := http2.NewFramer(bw, nil)
			rc.c.SetWriteDeadline(time.Now().Add(testTimeout))
			if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: encodeBlock(getReq("/big")), EndStream: true}) != nil {
				return
			}
			for i := range 16 << 10 {
				if fr.WriteContinuation(1, i == 16<<10-1, frag) != nil {
					return
				}
			}
			bw.Flush()
		}()
		res := rc.await(1)
		t.Logf("%v", res)
		switch {
		case res.goAway != nil, res.err != nil && !isTimeout(res.err), res.rst, res.status == 431:
		default:
			t.Errorf("got %v after a CONTINUATION flood\n%s", res, rc.transcript())
		}
		rc.c.Close()
		recv(t, wrote, "the writer")
		if calls.get("/big") != 0 {
			t.Errorf("handler ran")
		}
	})
}

// TestMaxConcurrentStreams: streams beyond SETTINGS_MAX_CONCURRENT_STREAMS
// are refused with RST_STREAM REFUSED_STREAM (5.1.2, 8.7) without
// running a handler; once handlers finish, new streams are served.
func TestMaxConcurrentStreams(t *testing.T) {
	ts, g := heldServer(t)

	rc := dialRaw(t, ts.addr)
	if v, ok := rc.setting(http2.SettingMaxConcurrentStreams); !ok || v != 2 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d (sent: %v), want 2", v, ok)
	}
	rc.headers(1, true, getReq("/held")...)
	rc.headers(3, true, getReq("/held")...)
	recv(t, g.started, "the first handler")
	recv(t, g.started, "the second handler")
	wantRefused(t, rc, g, 5, "third stream")
	g.open()
	rc.wantResponse(1, 200)
	rc.wantResponse(3, 200)
	requestUntilServed(t, rc, 7, "/after")
}

// wantRefused sends GET /held on stream id and requires RST_STREAM
// REFUSED_STREAM without a handler having run for it.
func wantRefused(t *testing.T, rc *rawClient, g *gate, id uint32, what string) {
	t.Helper()
	rc.headers(id, true, getReq("/held")...)
	if res := rc.await(id); !res.rst || res.code != http2.ErrCodeRefusedStream {
		t.Errorf("%s: %v, want RST_STREAM REFUSED_STREAM\n%s", what, res, rc.transcript())
	}
	select {
	case p := <-g.started:
		t.Errorf("a handler ran for the refused stream (%s)", p)
	default:
	}
}

// heldServer is a server with MaxConcurrentStreams 2 whose handler
// answers with the request's path, for /held once g opens.
func heldServer(t *testing.T) (*testServer, *gate) {
	g := newGate()
	ts := startTestServer(t, &Server{MaxConcurrentStreams: 2, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/held" {
			g.wait(r)
		}
		io.WriteString(w, r.URL.Path)
	})}, nil)
	t.Cleanup(g.open)
	return ts, g
}

// requestUntilServed sends GET path on stream id, id+2, ... until one is
// not refused: the handlers that held the slots return on their own
// goroutines, so the server may refuse a stream or two after their
// responses arrived.
func requestUntilServed(t *testing.T, rc *rawClient, id uint32, path string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for ; ; id += 2 {
		rc.headers(id, true, getReq(path)...)
		res := rc.await(id)
		if res.ended && res.status == 200 {
			return
		}
		if !res.rst || res.code != http2.ErrCodeRefusedStream || time.Now().After(deadline) {
			t.Fatalf("stream %d: %v\n%s", id, res, rc.transcript())
		}
		time.Sleep(5 * time.Millisecond) // a refused stream is to be retried later (8.7)
	}
}

// TestRapidReset: a client that resets every stream right after opening
// it (CVE-2023-44487) cannot have more handlers running than
// MaxConcurrentStreams; the server either refuses the excess streams or
// ends the connection with GOAWAY ENHANCE_YOUR_CALM.
func TestRapidReset(t *testing.T) {
	const limit = 10
	const streams = 10000
	g := newGate()
	var running, peak, total atomic.Int32
	ts := startTestServer(t, &Server{MaxConcurrentStreams: limit, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		total.Add(1)
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		g.wait(r) // ignores the reset: the worst case
		running.Add(-1)
	})}, nil)
	t.Cleanup(g.open)

	rc := dialRaw(t, ts.addr)
	type outcome struct {
		refused, otherRST int
		firstOther        rawFrame
		goAway            *rawFrame
		pinged            bool
		err               error
	}
	marker := [8]byte{'f', 'l', 'o', 'o', 'd'}
	done := make(chan outcome, 1)
	go func() { // reads while the test writes, so the server never blocks on its writes
		var o outcome
		for {
			f, err := rc.tryNext()
			if err != nil {
				o.err = err
				done <- o
				return
			}
			switch {
			case f.Type == http2.FrameRSTStream && f.code == http2.ErrCodeRefusedStream:
				o.refused++
			case f.Type == http2.FrameRSTStream:
				if o.otherRST == 0 {
					o.firstOther = f
				}
				o.otherRST++
			case f.Type == http2.FrameGoAway:
				o.goAway = &f
			case f.Type == http2.FramePing && f.Flags.Has(http2.FlagPingAck) && bytes.Equal(f.data, marker[:]):
				o.pinged = true
				done <- o
				return
			}
		}
	}()

	get, post := encodeBlock(getReq("/flood")), encodeBlock(postReq("/flood"))
	bw := bufio.NewWriterSize(rc.c, 64<<10)
	fr := http2.NewFramer(bw, nil)
	rc.c.SetWriteDeadline(time.Now().Add(testTimeout))
	var werr error
	for i := range streams {
		id := uint32(2*i + 1)
		block := get
		if i%2 == 1 {
			block = post // open both ways when reset
		}
		if werr = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: i%2 == 0, EndHeaders: true}); werr != nil {
			break
		}
		if werr = fr.WriteRSTStream(id, http2.ErrCodeCancel); werr != nil {
			break
		}
	}
	if werr == nil {
		werr = fr.WritePing(false, marker)
	}
	if werr == nil {
		werr = bw.Flush()
	}
	o := recv(t, done, "the end of the flood")
	t.Logf("%d handlers ran, at most %d at once; %d streams refused; GOAWAY %v; write error %v; read error %v",
		total.Load(), peak.Load(), o.refused, o.goAway, werr, o.err)
	if p := peak.Load(); p > limit {
		t.Errorf("%d handlers ran at once, MaxConcurrentStreams is %d", p, limit)
	}
	if o.otherRST > 0 {
		t.Errorf("%d RST_STREAMs other than REFUSED_STREAM, the first %v (5.4.2: no RST_STREAM in answer to one)", o.otherRST, o.firstOther)
	}
	switch {
	case o.goAway != nil:
		if o.goAway.code != http2.ErrCodeEnhanceYourCalm {
			t.Errorf("%v, want ENHANCE_YOUR_CALM", o.goAway)
		}
	case !o.pinged:
		t.Fatalf("the connection ended without GOAWAY: %v", o.err)
	default:
		// Kept open: after the handlers finish, it serves again.
		g.open()
		requestUntilServed(t, rc, 2*streams+1, "/after")
	}
}

// TestWindowZero: a client whose initial stream window is 0 gets the
// response's HEADERS, which flow control does not cover, but no DATA
// payload until it grants a window (6.9.1), then exactly as much as it
// grants. The window opens by WINDOW_UPDATE, or by SETTINGS changing the
// initial window of open streams (6.9.2).
func TestWindowZero(t *testing.T) {
	body := patternBytes(40000, 6)
	ts := startTestServer(t, &Server{
		Inline: func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/inline" {
				return false
			}
			w.Write(body)
			return true
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }),
	}, nil)
	for _, c := range []struct {
		name, path string
		settings   bool // open the window by SETTINGS instead of WINDOW_UPDATE
	}{
		{"handler, WINDOW_UPDATE", "/handler", false},
		{"inline, WINDOW_UPDATE", "/inline", false},
		{"handler, SETTINGS", "/handler", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			rc.headers(1, true, getReq(c.path)...)
			noData := func(f rawFrame) {
				if f.Type == http2.FrameData && f.StreamID == 1 && f.Length > 0 {
					t.Fatalf("%v with a window of 0\n%s", f, rc.transcript())
				}
			}
			for {
				f := rc.next()
				noData(f)
				if f.Type == http2.FrameHeaders && f.StreamID == 1 {
					if f.endStream() {
						t.Fatalf("%v: no body", f)
					}
					break
				}
				if f.Type == http2.FrameRSTStream || f.Type == http2.FrameGoAway {
					t.Fatalf("%v\n%s", f, rc.transcript())
				}
			}
			rc.ping([8]byte{'z'}, noData)

			const step = 10000
			credit := step
			if c.settings {
				rc.must(rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: step}))
			} else {
				rc.windowUpdate(1, step)
			}
			var got []byte
			for {
				if len(got) == credit {
					rc.windowUpdate(1, step)
					credit += step
				}
				f := rc.next()
				if f.StreamID != 1 {
					continue
				}
				if f.Type != http2.FrameData {
					t.Fatalf("%v\n%s", f, rc.transcript())
				}
				got = append(got, f.data...)
				if len(got) > credit {
					t.Fatalf("%d bytes of DATA with a window of %d\n%s", len(got), credit, rc.transcript())
				}
				if f.endStream() {
					break
				}
			}
			if d := bodyDiff(got, body); d != "" {
				t.Error(d)
			}
		})
	}
}

// TestResponseOnTheWire: the response's header block as sent: lowercase
// names (8.2.1), no connection-specific fields (8.2.2), :status as the
// only pseudo-header and first (8.3); a body only where allowed; trailers
// without pseudo-headers (8.1); informational HEADERS without END_STREAM.
func TestResponseOnTheWire(t *testing.T) {
	handlers := map[string]http.HandlerFunc{
		"/hop": func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Connection", "close")
			h.Set("Keep-Alive", "timeout=5")
			h.Set("Transfer-Encoding", "chunked")
			h.Set("Upgrade", "foo")
			h.Set("Proxy-Connection", "keep-alive")
			h["X-Mixed-Case"] = []string{"v"}
			io.WriteString(w, "hello")
		},
		"/nocontent": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(204)
			io.WriteString(w, "not allowed")
		},
		"/notmodified": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(304)
			io.WriteString(w, "not allowed")
		},
		"/trailers": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
		},
		"/early": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</a>; rel=preload")
			w.WriteHeader(103)
			io.WriteString(w, "final")
		},
		// Handlers that break their own content-length: the server must
		// not end the stream as if the response were complete (8.1.1).
		"/short": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "12345")
		},
		"/long": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			io.WriteString(w, "12345")
		},
	}
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers[r.URL.Path](w, r)
	})}, nil)
	rc := dialRaw(t, ts.addr)
	id := uint32(1)
	do := func(method, path string) streamResult {
		t.Helper()
		rc.headers(id, true, reqFields(method, path)...)
		r := rc.await(id)
		id += 2
		if !r.ended {
			t.Fatalf("%s %s: %v\n%s", method, path, r, rc.transcript())
		}
		// 8.1.1: content-length equals the DATA (but for HEAD and 304,
		// where it is the length of what a GET would get).
		if cl, ok := r.get("content-length"); ok && method != "HEAD" && r.status != 304 && cl != strconv.Itoa(len(r.body)) {
			t.Errorf("%s %s: content-length %s with %d bytes of DATA and END_STREAM\n%s", method, path, cl, len(r.body), rc.transcript())
		}
		for _, f := range r.frames {
			if f.Type != http2.FrameHeaders {
				continue
			}
			for i, h := range f.fields {
				if h.Name != strings.ToLower(h.Name) {
					t.Errorf("%s %s: field name %q not lowercase", method, path, h.Name)
				}
				switch h.Name {
				case "connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection":
					t.Errorf("%s %s: connection-specific field %s: %s", method, path, h.Name, h.Value)
				}
				if strings.HasPrefix(h.Name, ":") && (h.Name != ":status" || i != 0) {
					t.Errorf("%s %s: pseudo-header %s at %d", method, path, h.Name, i)
				}
			}
		}
		return r
	}
	header := func(r streamResult, name string) string {
		v, _ := r.get(name)
		return v
	}

	r := do("GET", "/hop")
	if string(r.body) != "hello" || header(r, "x-mixed-case") != "v" {
		t.Errorf("/hop: %v", r)
	}
	if header(r, "date") == "" || header(r, "content-type") != "text/plain; charset=utf-8" || header(r, "content-length") != "5" {
		t.Errorf("/hop: want date, sniffed content-type and content-length 5: %v", r.header)
	}

	r = do("HEAD", "/hop")
	if len(r.body) != 0 {
		t.Errorf("HEAD: a body of %d bytes", len(r.body))
	}
	for _, path := range []string{"/nocontent", "/notmodified"} {
		r = do("GET", path)
		if len(r.body) != 0 {
			t.Errorf("%s: a body of %d bytes", path, len(r.body))
		}
		if v, ok := r.get("content-length"); ok && path == "/nocontent" {
			// RFC 9110 8.6: not in a 204.
			t.Errorf("%s: content-length %s", path, v)
		}
	}

	r = do("GET", "/trailers")
	if string(r.body) != "body" || len(r.trailers) != 1 || r.trailers[0] != (hpack.HeaderField{Name: "x-sum", Value: "42"}) {
		t.Errorf("/trailers: body %q, trailers %v, want x-sum: 42 alone", r.body, r.trailers)
	}
	if last := r.frames[len(r.frames)-1]; last.Type != http2.FrameHeaders || !last.endStream() {
		t.Errorf("/trailers: the last frame is %v, want HEADERS with END_STREAM", last)
	}

	for _, path := range []string{"/short", "/long"} {
		rc.headers(id, true, getReq(path)...)
		r := rc.await(id)
		id += 2
		if cl, _ := r.get("content-length"); r.ended && cl != strconv.Itoa(len(r.body)) {
			t.Errorf("%s: END_STREAM after %d bytes with content-length %s; want RST_STREAM for a response the handler cut short or overran\n%s", path, len(r.body), cl, rc.transcript())
		}
	}

	r = do("GET", "/early")
	if !slices.Equal(r.interim, []int{103}) || r.status != 200 || string(r.body) != "final" {
		t.Errorf("/early: %v (interim %v)", r, r.interim)
	}
	if first := r.frames[0]; first.endStream() {
		t.Errorf("/early: END_STREAM on the 103")
	}
}

// TestHeaderTableSizeZero: a client that allows no dynamic table
// (SETTINGS_HEADER_TABLE_SIZE 0) can decode every response: the server's
// encoder must not index fields (RFC 7541 4.2, RFC 9113 6.5.2).
func TestHeaderTableSizeZero(t *testing.T) {
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Repeated", "the same value every time")
		io.WriteString(w, "ok")
	})}, nil)
	rc := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	for id := uint32(1); id < 10; id += 2 {
		r := rc.wantResponseAfter(id, getReq("/"))
		if v, _ := r.get("x-repeated"); v != "the same value every time" {
			t.Errorf("stream %d: %v", id, r.header)
		}
	}
}

func (rc *rawClient) wantResponseAfter(id uint32, fields []hpack.HeaderField) streamResult {
	rc.tb.Helper()
	rc.headers(id, true, fields...)
	return rc.wantResponse(id, 200)
}

// TestInlineBatch: requests that arrive in one read are all answered,
// inline or not, whatever the order their answers leave in.
func TestInlineBatch(t *testing.T) {
	ts := startTestServer(t, &Server{
		Inline: func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasPrefix(r.URL.Path, "/inline/") {
				return false
			}
			io.WriteString(w, "inline "+r.URL.Path)
			return true
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "handler "+r.URL.Path) }),
	}, nil)
	rc := dialRaw(t, ts.addr)
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	want := map[uint32]string{}
	for i := range 100 {
		id := uint32(2*i + 1)
		path := fmt.Sprintf("/inline/%d", i)
		want[id] = "inline " + path
		if i%3 == 0 {
			path = fmt.Sprintf("/handler/%d", i)
			want[id] = "handler " + path
		}
		writeBlock(fr, id, true, encodeBlock(getReq(path)), 16384)
	}
	rc.write(buf.Bytes())
	bodies := map[uint32][]byte{}
	for len(want) > 0 {
		f := rc.next()
		switch f.Type {
		case http2.FrameData:
			bodies[f.StreamID] = append(bodies[f.StreamID], f.data...)
		case http2.FrameRSTStream, http2.FrameGoAway:
			t.Fatalf("%v\n%s", f, rc.transcript())
		}
		if f.endStream() {
			if string(bodies[f.StreamID]) != want[f.StreamID] {
				t.Errorf("stream %d: %q, want %q", f.StreamID, bodies[f.StreamID], want[f.StreamID])
			}
			delete(want, f.StreamID)
		}
	}
}

// TestRequestContextEndsWithConnection: when the connection ends, the
// contexts of its requests end too.
func TestRequestContextEndsWithConnection(t *testing.T) {
	started := make(chan struct{}, 1)
	ended := make(chan error, 1)
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(testTimeout):
			ended <- nil
		}
	})}, nil)
	rc := dialRaw(t, ts.addr)
	rc.headers(1, false, postReq("/wait")...)
	recv(t, started, "the handler to start")
	rc.c.Close()
	if err := recv(t, ended, "the handler"); err == nil {
		t.Error("the request's context did not end with its connection")
	}
}

// TestRequestContextEndsWithRSTStream: RST_STREAM from the client ends the
// request's context and fails its body, and the connection goes on.
func TestRequestContextEndsWithRSTStream(t *testing.T) {
	started := make(chan struct{}, 1)
	ended := make(chan cancelOutcome, 1)
	wait := awaitCancel(started, ended)
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			wait(w, r)
		}
	})}, nil)
	rc := dialRaw(t, ts.addr)
	rc.headers(1, false, postReq("/wait")...)
	rc.data(1, false, []byte("part"))
	recv(t, started, "the handler to start")
	rc.must(rc.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	o := recv(t, ended, "the handler")
	if o.ctxErr == nil {
		t.Error("the request's context did not end with RST_STREAM")
	}
	if o.readErr == nil {
		t.Error("the body of a reset stream read to EOF")
	}
	// 5.4.2: no RST_STREAM in answer to one.
	noRST := func(f rawFrame) {
		if f.StreamID == 1 && (f.Type == http2.FrameRSTStream || f.Type == http2.FrameHeaders || f.Type == http2.FrameData) {
			t.Errorf("%v on the stream the client reset", f)
		}
	}
	rc.ping([8]byte{'r'}, noRST)
	rc.headers(3, true, getReq("/next")...)
	rc.wantResponse(3, 200)
	rc.ping([8]byte{'s'}, noRST)
}

// sendBody sends body on stream id as DATA frames of at most 16384 bytes
// within the windows the server granted (its SETTINGS_INITIAL_WINDOW_SIZE
// and WINDOW_UPDATEs), waiting for WINDOW_UPDATEs as a client must.
func (rc *rawClient) sendBody(id uint32, body []byte, end bool) {
	rc.tb.Helper()
	initial := int64(65535)
	if v, ok := rc.setting(http2.SettingInitialWindowSize); ok {
		initial = int64(v)
	}
	sent := int64(0)
	for len(body) > 0 {
		n := min(int64(len(body)), 16384)
		for rc.connWindow < n || initial+rc.granted[id]-sent < n {
			if _, err := rc.nextOf(0); err != nil {
				rc.tb.Fatalf("waiting for a window of %d bytes (connection %d, stream %d): %v\n%s",
					n, rc.connWindow, initial+rc.granted[id]-sent, err, rc.transcript())
			}
		}
		rc.data(id, end && n == int64(len(body)), body[:n])
		rc.connWindow -= n
		sent += n
		body = body[n:]
	}
}

// TestUnreadRequestBody: when a handler answers without reading the
// request body, the DATA the client already sent for it is ignored (5.1)
// but still counted against and given back to the connection window
// (6.9), or the connection stalls after a few such requests.
func TestUnreadRequestBody(t *testing.T) {
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ignored")
	})}, nil)
	rc := dialRaw(t, ts.addr)
	body := patternBytes(200<<10, 8)
	id := uint32(1)
	// 10 x 200 KiB: more than any connection window the server grants at
	// first, and than one stream window.
	for range 10 {
		rc.headers(id, false, postReq("/ignore", "content-length", strconv.Itoa(len(body)))...)
		rc.sendBody(id, body, true)
		res := rc.await(id)
		if !res.ended || res.status != 200 || string(res.body) != "ignored" {
			t.Fatalf("stream %d: %v\n%s", id, res, rc.transcript())
		}
		id += 2
	}
	rc.headers(id, true, getReq("/last")...)
	rc.wantResponse(id, 200)
}

// TestResetWhileBlockedOnWindow: a handler waiting for a flow-control
// window gets a Write error when the client resets the stream or goes
// away, instead of waiting for ever.
func TestResetWhileBlockedOnWindow(t *testing.T) {
	cases := []struct {
		name string
		end  func(rc *rawClient)
	}{
		{"RST_STREAM", func(rc *rawClient) { rc.must(rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)) }},
		{"connection closed", func(rc *rawClient) { rc.c.Close() }},
	}
	writeErr := map[string]chan error{} // by path: one per case
	for _, c := range cases {
		writeErr["/"+c.name] = make(chan error, 1)
	}
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := w.Write(patternBytes(100<<10, 10))
		writeErr[r.URL.Path] <- err
	})}, nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			rc.headers(1, true, getReq("/"+c.name)...)
			rc.wantFrame(http2.FrameHeaders, 1)
			c.end(rc)
			if err := recv(t, writeErr["/"+c.name], "the handler's Write to return"); err == nil {
				t.Errorf("Write succeeded on a stream the client ended")
			}
		})
	}
}

// TestSmallWindowSteps: a client that grants 10 bytes at a time, each
// grant sent as soon as the previous 10 arrived, gets the whole body.
// Every grant wakes a handler that has just sent DATA, which is when a
// writer that waits for a window without looking at it again after
// flushing misses the WINDOW_UPDATE (a lost wakeup), so a missed one
// stalls the stream here rather than once in a while.
func TestSmallWindowSteps(t *testing.T) {
	body := patternBytes(2000, 11)
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })}, nil)
	rc := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	rc.headers(1, true, getReq("/")...)
	rc.wantFrame(http2.FrameHeaders, 1)
	const step = 10
	var got []byte
	credit := 0
	for {
		if len(got) == credit {
			rc.windowUpdate(1, step)
			credit += step
		}
		f, err := rc.tryNext()
		if err != nil {
			t.Fatalf("stalled after %d of %d bytes, with a window of %d granted: %v\n%s", len(got), len(body), credit, err, rc.transcript())
		}
		if f.StreamID != 1 {
			continue
		}
		if f.Type != http2.FrameData {
			t.Fatalf("%v\n%s", f, rc.transcript())
		}
		got = append(got, f.data...)
		if len(got) > credit {
			t.Fatalf("%d bytes of DATA with a window of %d", len(got), credit)
		}
		if f.endStream() {
			break
		}
	}
	if d := bodyDiff(got, body); d != "" {
		t.Error(d)
	}
}

// TestHandlerPanic: a handler that panics (http.ErrAbortHandler or any
// value) has its stream reset, before or after its response began, as
// net/http's servers do, and the connection serves on.
func TestHandlerPanic(t *testing.T) {
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/after-flush":
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic("boom")
		case "/buffered":
			io.WriteString(w, "never complete")
			panic("boom")
		}
		io.WriteString(w, "ok")
	})}, nil)
	for _, path := range []string{"/abort", "/after-flush", "/buffered"} {
		t.Run(path, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			rc.headers(1, true, getReq(path)...)
			if r := rc.await(1); !r.rst {
				t.Errorf("%v, want RST_STREAM\n%s", r, rc.transcript())
			}
			rc.headers(3, true, getReq("/")...)
			rc.wantResponse(3, 200)
		})
	}
}

// TestExpectContinue: a request with Expect: 100-continue gets a 100
// (Continue) when the handler first reads its body, and none when the
// handler answers without reading it or the body has already arrived
// (RFC 9110 10.1.1); the handler never sees the Expect field.
func TestExpectContinue(t *testing.T) {
	// A request with x-gate waits for its gate before the handler reads,
	// so that the body is there first (else the 100 races the DATA).
	var gates sync.Map
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g, ok := gates.Load(r.Header.Get("X-Gate")); ok {
			<-g.(chan struct{})
		}
		w.Header().Set("X-Expect", r.Header.Get("Expect"))
		if r.URL.Path == "/reject" {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Write(b)
	})}, nil)
	tests := []struct {
		name      string
		fields    []hpack.HeaderField
		bodyFirst bool // the body is sent and taken before the handler reads
		status    int
		interim   []int
	}{
		{"read", postReq("/read", "expect", "100-continue", "content-length", "5"), false, 200, []int{100}},
		{"case and list", postReq("/read", "expect", "100-Continue, foo", "content-length", "5"), false, 200, []int{100}},
		{"answered unread", postReq("/reject", "expect", "100-continue", "content-length", "5"), false, 413, nil},
		{"body already here", postReq("/read", "expect", "100-continue", "content-length", "5"), true, 200, nil},
		{"no expectation", postReq("/read", "content-length", "5"), true, 200, nil},
		{"no body", getReq("/read", "expect", "100-continue"), false, 200, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			id := uint32(2*i + 1)
			noBody := tt.fields[0].Value == "GET"
			fields, gate := tt.fields, make(chan struct{})
			if tt.bodyFirst {
				fields = append(slices.Clone(fields), hf("x-gate", tt.name)...)
				gates.Store(tt.name, gate)
			}
			rc.headers(id, noBody, fields...)
			var interim []int
			switch {
			case tt.bodyFirst:
				// The PING's answer comes after the server took the DATA
				// before it: frames are handled in order.
				rc.data(id, true, []byte("hello"))
				rc.ping([8]byte{1}, nil)
				close(gate)
			case !noBody:
				// The handler can only read on once a 100 went out: wait
				// for the stream's first HEADERS, a 100 (then send the
				// body, as a client does) or the final answer.
				f, err := rc.nextOf(id)
				for err == nil && f.Type != http2.FrameHeaders {
					f, err = rc.nextOf(id)
				}
				if err != nil {
					t.Fatalf("no HEADERS: %v\n%s", err, rc.transcript())
				}
				if f.fields[0].Name == ":status" && f.fields[0].Value == "100" {
					interim = append(interim, 100)
					rc.data(id, true, []byte("hello"))
				} else {
					rc.aside = append([]rawFrame{f}, rc.aside...)
				}
			}
			r := rc.await(id)
			r.interim = append(interim, r.interim...)
			if r.status != tt.status || !slices.Equal(r.interim, tt.interim) {
				t.Fatalf("status %d interim %v, want %d %v\n%s", r.status, r.interim, tt.status, tt.interim, rc.transcript())
			}
			if v, _ := r.get("x-expect"); v != "" {
				t.Errorf("the handler saw Expect: %q", v)
			}
			if tt.status == 200 && !noBody && string(r.body) != "hello" {
				t.Errorf("body %q, want hello", r.body)
			}
		})
	}
}

// TestSpaceInPath: a space in :path (which no request-target may hold,
// and which x/net's Framer lets through) reaches the handler escaped, so
// a proxy's target never gets a request line of more than three parts.
func TestSpaceInPath(t *testing.T) {
	ts := startTestServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s|%s|%s", r.RequestURI, r.URL.Path, r.URL.RawQuery, r.URL.RequestURI())
	})}, nil)
	rc := dialRaw(t, ts.addr)
	for i, c := range []struct{ path, want string }{
		{"/a b", "/a%20b|/a b||/a%20b"},
		{"/?q= HTTP/1.1", "/?q=%20HTTP/1.1|/|q=%20HTTP/1.1|/?q=%20HTTP/1.1"},
		{"/x?a=1 2&b=3", "/x?a=1%202&b=3|/x|a=1%202&b=3|/x?a=1%202&b=3"},
	} {
		id := uint32(2*i + 1)
		rc.headers(id, true, getReq(c.path)...)
		if r := rc.wantResponse(id, 200); string(r.body) != c.want {
			t.Errorf(":path %q: handler saw %q, want %q", c.path, r.body, c.want)
		}
	}
}

// TestServerResetKeepsSlot ("MadeYouReset", CVE-2025-8671): a client that
// makes the server reset its streams (here a zero WINDOW_UPDATE, a stream
// error) must not free their slots while the handlers still run, or it
// could run any number of them past SETTINGS_MAX_CONCURRENT_STREAMS.
func TestServerResetKeepsSlot(t *testing.T) {
	ts, g := heldServer(t)

	rc := dialRaw(t, ts.addr)
	for _, id := range []uint32{1, 3} {
		rc.headers(id, true, getReq("/held")...)
		recv(t, g.started, "a handler")
		rc.windowUpdate(id, 0)
		if res := rc.await(id); !res.rst || res.code != http2.ErrCodeProtocol {
			t.Fatalf("stream %d after a zero WINDOW_UPDATE: %v, want RST_STREAM PROTOCOL_ERROR\n%s", id, res, rc.transcript())
		}
	}
	wantRefused(t, rc, g, 5, "third stream while two reset handlers run")
	g.open()
	requestUntilServed(t, rc, 7, "/after")
}

// TestExtendedConnect: with ExtendedConnect the server advertises
// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 3) and hands a CONNECT with
// :protocol to the handler as x/net's server does; the stream then
// carries bytes both ways, past BodyTimeout, until the client ends its
// side. A :protocol on another method, or an extended CONNECT without its
// target, is malformed (RFC 8441 4).
func TestExtendedConnect(t *testing.T) {
	var calls counter
	ts := startTestServer(t, &Server{
		ExtendedConnect: true,
		BodyTimeout:     100 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.add(r.URL.Path)
			if r.Method != http.MethodConnect || r.Header.Get(":protocol") != "echo" || r.Host != "example.com" {
				http.Error(w, fmt.Sprintf("%s %q %s", r.Method, r.Header[":protocol"], r.Host), http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusOK)
			rc := http.NewResponseController(w)
			_ = rc.Flush()
			buf := make([]byte, 1024)
			for {
				n, err := r.Body.Read(buf)
				if n > 0 {
					w.Write(bytes.ToUpper(buf[:n]))
					_ = rc.Flush()
				}
				if err != nil {
					return
				}
			}
		}),
	}, nil)
	rc := dialRaw(t, ts.addr)
	if v, ok := rc.setting(http2.SettingEnableConnectProtocol); !ok || v != 1 {
		t.Fatalf("SETTINGS_ENABLE_CONNECT_PROTOCOL %d (sent: %v), want 1", v, ok)
	}
	rc.headers(1, false, hf(":method", "CONNECT", ":protocol", "echo", ":scheme", "http", ":authority", "example.com", ":path", "/tunnel")...)
	f := rc.wantFrame(http2.FrameHeaders, 1)
	if f.endStream() || len(f.fields) == 0 || f.fields[0].Value != "200" {
		t.Fatalf("tunnel answer %v %v, want an open 200", f, f.fields)
	}
	for i, msg := range []string{"ping", "after the body timeout"} {
		if i > 0 {
			time.Sleep(300 * time.Millisecond)
		}
		rc.data(1, false, []byte(msg))
		if d := rc.wantFrame(http2.FrameData, 1); string(d.data) != strings.ToUpper(msg) {
			t.Fatalf("echo of %q: %v %q\n%s", msg, d, d.data, rc.transcript())
		}
	}
	rc.data(1, true, []byte("bye"))
	if res := rc.await(1); !res.ended || string(res.body) != "BYE" {
		t.Fatalf("end of the tunnel: %v, want BYE and END_STREAM\n%s", res, rc.transcript())
	}
	for _, c := range []struct {
		name   string
		fields []hpack.HeaderField
	}{
		{":protocol on a GET", hf(":method", "GET", ":protocol", "echo", ":scheme", "http", ":authority", "example.com", ":path", "/bad")},
		{"no :path", hf(":method", "CONNECT", ":protocol", "echo", ":scheme", "http", ":authority", "example.com")},
		{"no :scheme", hf(":method", "CONNECT", ":protocol", "echo", ":authority", "example.com", ":path", "/bad")},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			rc.headers(1, true, c.fields...)
			if res := rc.await(1); !res.rst || res.code != http2.ErrCodeProtocol {
				t.Errorf("got %v, want RST_STREAM PROTOCOL_ERROR\n%s", res, rc.transcript())
			}
			if n := calls.get("/bad"); n != 0 {
				t.Errorf("the malformed request reached the handler (%d calls)", n)
			}
		})
	}
}
