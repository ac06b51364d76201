package h2

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestRequestContextEnds: a request's context ends once its stream is
// done, for handler and inline answers alike. A context that outlives its
// stream stays registered with the connection's and holds its request:
// under h2load that leak took edged from 24 to 120 MiB resident.
func TestRequestContextEnds(t *testing.T) {
	ctxs := make(chan context.Context, 2)
	ts := startTestServer(t, &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctxs <- r.Context()
			io.WriteString(w, "handler")
		}),
		Inline: func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/inline" {
				return false
			}
			ctxs <- r.Context()
			io.WriteString(w, "inline")
			return true
		},
	}, nil)
	client, _ := testClient(t)
	for _, path := range []string{"/inline", "/handler"} {
		resp, err := client.Get(ts.url(path))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		readBody(t, resp)
		ctx := recv(t, ctxs, "the request's context")
		recv(t, ctx.Done(), path+": the context to end after the response")
	}
}

// TestStreamsForgotten: streams leave the connection's table when done,
// after many requests of each kind on one connection.
func TestStreamsForgotten(t *testing.T) {
	s := &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "ok")
		}),
		Inline: func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/inline" {
				return false
			}
			io.WriteString(w, "inline")
			return true
		},
	}
	ts := startTestServer(t, s, nil)
	client, _ := testClient(t)
	for i := 0; i < 50; i++ {
		for _, path := range []string{"/inline", "/handler"} {
			resp, err := client.Get(ts.url(path))
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			readBody(t, resp)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) != 1 {
		t.Fatalf("%d connections, want the client's one", len(s.conns))
	}
	for c := range s.conns {
		c.mu.Lock()
		n := len(c.streams)
		c.mu.Unlock()
		if n != 0 {
			t.Errorf("%d streams still in the table after every response", n)
		}
	}
}

// TestInlinePanic: a panic in Inline (it runs on the connection's reading
// goroutine) resets that stream only; the process and the connection go on.
func TestInlinePanic(t *testing.T) {
	ts := startTestServer(t, &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "handler") }),
		Inline: func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/panic" {
				panic("inline bug")
			}
			return false
		},
	}, nil)
	client, _ := testClient(t)
	if resp, err := client.Get(ts.url("/panic")); err == nil {
		resp.Body.Close()
		t.Fatalf("a panicking inline answer gave %d, want the stream reset", resp.StatusCode)
	}
	resp, err := client.Get(ts.url("/after"))
	if err != nil {
		t.Fatalf("request after the panic: %v", err)
	}
	if b := readBody(t, resp); string(b) != "handler" {
		t.Errorf("after the panic: %q", b)
	}
}

// TestBodyTimeout: a request body that stops arriving is cut off after
// BodyTimeout: the handler's read fails and the client gets RST_STREAM
// CANCEL; a body that arrives in time is read whole.
func TestBodyTimeout(t *testing.T) {
	readErr := make(chan error, 2)
	ts := startTestServer(t, &Server{
		BodyTimeout: 200 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			readErr <- err
			if err == nil {
				w.Write(b)
			}
		}),
	}, nil)
	rc := dialRaw(t, ts.addr)
	rc.headers(1, false, postReq("/stalled")...)
	rc.data(1, false, []byte("part of it"))
	if res := rc.await(1); !res.rst || res.code != http2.ErrCodeCancel {
		t.Errorf("stalled body: %v, want RST_STREAM CANCEL\n%s", res, rc.transcript())
	}
	if err := recv(t, readErr, "the handler's read"); err == nil {
		t.Error("the handler read a stalled body to its end")
	}
	rc.headers(3, false, postReq("/whole")...)
	rc.data(3, true, []byte("all of it"))
	if res := rc.wantResponse(3, 200); string(res.body) != "all of it" {
		t.Errorf("body in time: %q", res.body)
	}
	if err := recv(t, readErr, "the second handler's read"); err != nil {
		t.Errorf("a body in time: %v", err)
	}
}
