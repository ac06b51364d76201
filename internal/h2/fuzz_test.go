package h2

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fuzzSeed is a named sequence of frames that follows the client preface.
type fuzzSeed struct {
	name  string
	build func(fr *http2.Framer)
}

// fuzzSeeds are the FuzzServeConn seeds: valid exchanges, so that the
// fuzzer starts from frames the server gets far with, and broken ones.
// testdata/fuzz/FuzzServeConn holds the same, written by
// TestWriteFuzzCorpus.
func fuzzSeeds() []fuzzSeed {
	block := func(fields []hpack.HeaderField) []byte { return encodeBlock(fields) }
	settings := func(fr *http2.Framer) { fr.WriteSettings() }
	return []fuzzSeed{
		{"settings", func(fr *http2.Framer) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 4096}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
			fr.WriteSettingsAck()
		}},
		{"get", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, true, block(getReq("/")), 16384)
		}},
		{"post", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, false, block(postReq("/echo", "content-length", "5")), 16384)
			fr.WriteData(1, true, []byte("hello"))
		}},
		{"inline", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, true, block(getReq("/inline")), 16384)
			writeBlock(fr, 3, true, block(getReq("/inline-big")), 16384)
			writeBlock(fr, 5, true, block(reqFields("HEAD", "/inline")), 16384)
		}},
		{"ping", func(fr *http2.Framer) {
			settings(fr)
			fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
			fr.WritePing(true, [8]byte{})
		}},
		{"window_update", func(fr *http2.Framer) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			fr.WriteWindowUpdate(0, 1000)
			writeBlock(fr, 1, true, block(getReq("/big")), 16384)
			fr.WriteWindowUpdate(1, 1000)
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100000})
		}},
		{"rst_stream", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, false, block(postReq("/echo")), 16384)
			fr.WriteData(1, false, []byte("part"))
			fr.WriteRSTStream(1, http2.ErrCodeCancel)
			writeBlock(fr, 3, true, block(getReq("/")), 16384)
		}},
		{"continuation", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, true, block(getReq("/", "x-long", strings.Repeat("x", 100))), 40)
		}},
		{"trailers", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, false, block(postReq("/trailer", "trailer", "x-t")), 16384)
			fr.WriteData(1, false, []byte("body"))
			writeBlock(fr, 1, true, block(hf("x-t", "v")), 16384)
		}},
		{"padded_priority", func(fr *http2.Framer) {
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(postReq("/echo")), EndHeaders: true,
				PadLength: 3, Priority: http2.PriorityParam{StreamDep: 0, Weight: 9}})
			fr.WriteDataPadded(1, true, []byte("x"), make([]byte, 4))
			fr.WritePriority(7, http2.PriorityParam{StreamDep: 1, Weight: 1})
		}},
		{"flush_103", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, true, block(getReq("/flush")), 16384)
			writeBlock(fr, 3, true, block(getReq("/103")), 16384)
		}},
		{"goaway", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, true, block(getReq("/")), 16384)
			fr.WriteGoAway(1, http2.ErrCodeNo, []byte("bye"))
		}},
		{"rapid_reset", func(fr *http2.Framer) {
			settings(fr)
			for id := uint32(1); id < 100; id += 2 {
				writeBlock(fr, id, true, block(getReq("/")), 16384)
				fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
		}},
		// Broken ones.
		{"even_stream", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 2, true, block(getReq("/")), 16384)
		}},
		{"decreasing_stream", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 5, true, block(getReq("/")), 16384)
			writeBlock(fr, 3, true, block(getReq("/")), 16384)
		}},
		{"bad_hpack", func(fr *http2.Framer) {
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x80, 0xff, 0xff}, EndStream: true, EndHeaders: true})
		}},
		{"lone_continuation", func(fr *http2.Framer) {
			settings(fr)
			fr.WriteContinuation(1, true, block(getReq("/")))
		}},
		{"data_stream_0", func(fr *http2.Framer) {
			settings(fr)
			fr.WriteData(0, true, []byte("x"))
		}},
		{"window_overflow", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, true, block(getReq("/big")), 16384)
			fr.WriteWindowUpdate(1, 1<<31-1)
			fr.WriteWindowUpdate(0, 1<<31-1)
		}},
		{"settings_bad_length", func(fr *http2.Framer) {
			fr.WriteRawFrame(http2.FrameSettings, 0, 0, []byte{0, 4, 0})
		}},
		{"truncated_frame", func(fr *http2.Framer) {
			settings(fr)
			fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, block(getReq("/")))
			fr.WriteRawFrame(http2.FrameData, 0, 1, make([]byte, 100))
		}},
		{"push_promise", func(fr *http2.Framer) {
			settings(fr)
			fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: block(getReq("/")), EndHeaders: true})
		}},
		{"content_length_mismatch", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, false, block(postReq("/echo", "content-length", "2")), 16384)
			fr.WriteData(1, true, []byte("hello"))
		}},
		{"malformed_headers", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, true, block(hf(":method", "GET", "Connection", "close", ":path", "")), 16384)
			writeBlock(fr, 3, true, block(getReq("/", "te", "gzip")), 16384)
		}},
		{"downgrade_fields", func(fr *http2.Framer) {
			// What a proxy would write into its HTTP/1.1 request line or
			// Host: refused (method, authority) or escaped (path).
			settings(fr)
			writeBlock(fr, 1, true, block(hf(":method", "GET /admin HTTP/1.1", ":scheme", "https", ":authority", "a", ":path", "/")), 16384)
			writeBlock(fr, 3, true, block(hf(":method", "GET", ":scheme", "https", ":authority", "a b", ":path", "/")), 16384)
			writeBlock(fr, 5, true, block(getReq("/?q= HTTP/1.1")), 16384)
		}},
		{"expect_continue", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, false, block(postReq("/echo", "expect", "100-continue", "content-length", "5")), 16384)
			fr.WriteData(1, true, []byte("hello"))
			writeBlock(fr, 3, true, block(getReq("/", "expect", "100-continue")), 16384)
		}},
		{"unknown_frame", func(fr *http2.Framer) {
			settings(fr)
			fr.WriteRawFrame(0xee, 0xff, 3, []byte("?"))
			writeBlock(fr, 1, true, block(getReq("/")), 16384)
		}},
		{"extended_connect", func(fr *http2.Framer) {
			settings(fr)
			writeBlock(fr, 1, false, block(hf(":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":authority", "example.com", ":path", "/chat")), 16384)
			fr.WriteData(1, false, []byte("hello"))
			fr.WriteData(1, true, []byte("bye"))
			writeBlock(fr, 3, true, block(hf(":method", "GET", ":protocol", "websocket", ":scheme", "https", ":authority", "example.com", ":path", "/")), 16384)
		}},
		{"no_settings", func(fr *http2.Framer) {
			writeBlock(fr, 1, true, block(getReq("/")), 16384)
		}},
	}
}

func (s fuzzSeed) bytes() []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.AllowIllegalWrites = true
	s.build(fr)
	return buf.Bytes()
}

// handlerTracker waits for the handlers a connection started.
type handlerTracker struct {
	mu      sync.Mutex
	running int
	closing bool
	idle    chan struct{}
	once    sync.Once
}

func (h *handlerTracker) enter() {
	h.mu.Lock()
	h.running++
	h.mu.Unlock()
}

func (h *handlerTracker) exit() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running--
	if h.running == 0 && h.closing {
		h.once.Do(func() { close(h.idle) })
	}
}

// wait reports whether every handler returned within d.
func (h *handlerTracker) wait(d time.Duration) bool {
	h.mu.Lock()
	h.closing = true
	if h.running == 0 {
		h.once.Do(func() { close(h.idle) })
	}
	h.mu.Unlock()
	select {
	case <-h.idle:
		return true
	case <-time.After(d):
		return false
	}
}

// FuzzServeConn: whatever a client sends after the preface, ServeConn
// neither panics nor hangs: once the client has gone, it returns, and so
// do the handlers it started.
func FuzzServeConn(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.bytes())
	}
	big := patternBytes(100<<10, 9)
	f.Fuzz(func(t *testing.T, data []byte) {
		handlers := &handlerTracker{idle: make(chan struct{})}
		s := &Server{
			MaxConcurrentStreams: 8,
			ExtendedConnect:      true,
			MaxHeaderBytes:       8 << 10,
			StreamWindow:         16 << 10,
			ReadTimeout:          2 * time.Second,
			WriteTimeout:         2 * time.Second,
			Inline: func(w http.ResponseWriter, r *http.Request) bool {
				switch r.URL.Path {
				case "/inline":
					io.WriteString(w, "inline")
				case "/inline-big":
					w.Write(big)
				default:
					return false
				}
				return true
			},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				handlers.enter()
				defer handlers.exit()
				b, _ := io.ReadAll(io.LimitReader(r.Body, 4<<10))
				switch r.URL.Path {
				case "/big":
					w.Write(big)
				case "/flush":
					io.WriteString(w, "a")
					w.(http.Flusher).Flush()
					io.WriteString(w, "b")
				case "/trailer":
					w.Header().Set("Trailer", "X-T")
					w.Write(b)
					w.Header().Set("X-T", "v")
				case "/103":
					w.WriteHeader(103)
					w.WriteHeader(200)
				default:
					w.Write(b)
				}
			}),
		}
		cli, srv := net.Pipe()
		served := make(chan struct{})
		go func() {
			defer close(served)
			s.ServeConn(srv, ConnOpts{})
		}()
		// net.Pipe has no buffer: the server's writes wait for a reader.
		go io.Copy(io.Discard, cli)
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			cli.Write([]byte(http2.ClientPreface))
			cli.Write(data)
		}()
		select {
		case <-wrote:
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatalf("the server neither read %d bytes nor closed the connection", len(data))
		}
		cli.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatalf("ServeConn did not return after the client closed the connection")
		}
		if !handlers.wait(5 * time.Second) {
			t.Fatalf("handlers still running 5s after the connection ended")
		}
	})
}

// TestWriteFuzzCorpus rewrites testdata/fuzz/FuzzServeConn from fuzzSeeds
// when H2_WRITE_FUZZ_CORPUS is set; the files are checked in, so that
// `go test` runs them without -fuzz.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("H2_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set H2_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz/FuzzServeConn")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzServeConn")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range fuzzSeeds() {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.bytes())
		if err := os.WriteFile(filepath.Join(dir, "seed_"+s.name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
