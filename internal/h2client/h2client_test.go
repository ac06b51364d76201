package h2client

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestTransports: h2c and TLS targets are spoken to in HTTP/2; a TLS
// target that does not offer h2 is refused with ErrNoH2.
func TestTransports(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })

	// h2c: a plain server that also accepts unencrypted HTTP/2.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h2c := &http.Server{Handler: handler, Protocols: new(http.Protocols)}
	h2c.Protocols.SetHTTP1(true)
	h2c.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = h2c.Serve(ln) }()
	t.Cleanup(func() { h2c.Close() })

	h2tls := httptest.NewUnstartedServer(handler)
	h2tls.EnableHTTP2 = true
	h2tls.StartTLS()
	t.Cleanup(h2tls.Close)

	h1tls := httptest.NewTLSServer(handler) // http/1.1 only
	t.Cleanup(h1tls.Close)

	dialer := &net.Dialer{Timeout: 2 * time.Second}
	insecure := &tls.Config{InsecureSkipVerify: true} // test certificates
	for _, c := range []struct {
		name    string
		url     string
		tls     *tls.Config
		want    string
		wantErr error
	}{
		{"h2c", "http://" + ln.Addr().String() + "/", nil, "HTTP/2.0", nil},
		{"h2 over TLS", h2tls.URL + "/", insecure, "HTTP/2.0", nil},
		{"TLS without h2", h1tls.URL + "/", insecure, "", ErrNoH2},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := New(Options{Dial: dialer.DialContext, TLS: c.tls, HandshakeTimeout: 2 * time.Second, IdleConnTimeout: time.Minute})
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(c.url)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.ProtoMajor != 2 || string(b) != c.want {
				t.Errorf("client saw %s, target saw %q; want HTTP/2 both", resp.Proto, b)
			}
		})
	}
}
