package apptest

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// H2Dial opens an HTTP/2 connection over TLS to addr (any certificate,
// SNI serverName), sends the client preface and an empty SETTINGS, and
// returns a Framer on it (HPACK decoding on) for frames written by hand.
// The connection closes with the test.
func H2Dial(tb testing.TB, addr, serverName string) *http2.Framer {
	tb.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: serverName, NextProtos: []string{"h2"}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		tb.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		tb.Fatal(err)
	}
	return fr
}

// H2Settings returns the settings of the first SETTINGS frame the server
// at addr sends: what a listener's HTTP/2 server advertises.
func H2Settings(tb testing.TB, addr, serverName string) map[http2.SettingID]uint32 {
	tb.Helper()
	fr := H2Dial(tb, addr, serverName)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			tb.Fatalf("reading the server's SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			out := map[http2.SettingID]uint32{}
			_ = sf.ForeachSetting(func(s http2.Setting) error { out[s.ID] = s.Val; return nil })
			return out
		}
	}
}

// H2Get sends GET path?rawQuery over HTTP/2 and TLS to addr (any
// certificate, SNI serverName), the query as given, unescaped (x/net's
// client passes it on as it is), and returns the response's protocol,
// status and body.
func H2Get(tb testing.TB, addr, serverName, path, rawQuery string) (proto string, status int, body string) {
	tb.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: serverName}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest("GET", "https://"+addr+path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.URL.RawQuery = rawQuery
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.Proto, resp.StatusCode, string(b)
}
