package l7

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// collectTrailers de-chunks body and returns the trailers an HTTP/2
// client would get.
func collectTrailers(body []byte) (http.Header, string, error) {
	var plain bytes.Buffer
	pw := bufio.NewWriter(&plain)
	var tr trailerSink
	err := copyChunkedTrailer(nil, bufio.NewReader(bytes.NewReader(body)), pw, tr.add)
	_ = pw.Flush()
	return tr.h, plain.String(), err
}

func TestTrailerSink(t *testing.T) {
	type tc struct {
		name string
		in   string
		want http.Header
		err  error // nil: ok
	}
	for _, c := range []tc{
		{"none", "3\r\nabc\r\n0\r\n\r\n", nil, nil},
		{"fields, canonical names, repeated", "3\r\nabc\r\n0\r\nx-checksum: abc\r\nGrpc-Status:0\r\nX-Multi: 1\r\nX-Multi:  2 \r\n\r\n",
			http.Header{"X-Checksum": {"abc"}, "Grpc-Status": {"0"}, "X-Multi": {"1", "2"}}, nil},
		{"forbidden and per-hop fields dropped", "0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nHost: evil.test\r\n" +
			"Authorization: Basic x\r\nConnection: close\r\nTrailer: X\r\nIf-Match: *\r\nX-Forwarded-For: 1.2.3.4\r\nX-Ok: yes\r\n\r\n",
			http.Header{"X-Ok": {"yes"}}, nil},
		{"lone LF ends the section", "0\r\nX-A: 1\r\n\n", http.Header{"X-A": {"1"}}, nil},
		{"no colon", "0\r\nbroken\r\n\r\n", nil, errBadTrailer},
		{"obs-fold", "0\r\nX-A: 1\r\n continued\r\n\r\n", nil, errBadTrailer},
		{"space before colon", "0\r\nX-A : 1\r\n\r\n", nil, errBadTrailer},
		{"bare LF field", "0\r\nX-A: 1\n\r\n", nil, errBadTrailer},
		{"two-byte line is a field, not the end", "0\r\nX\n\r\n", nil, errBadTrailer},
		{"control byte in value", "0\r\nX-A: a\x00b\r\n\r\n", nil, errBadTrailer},
		{"too large", "0\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 70) + "\r\n", nil, errTrailerTooLarge},
		{"truncated", "0\r\nX-A: 1\r\n", nil, io.EOF},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, _, err := collectTrailers([]byte(c.in))
			if !errors.Is(err, c.err) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if c.err == nil && !reflect.DeepEqual(got, c.want) {
				t.Errorf("trailers %v, want %v", got, c.want)
			}
		})
	}
}

func TestTrailerNames(t *testing.T) {
	got := trailerNames([]string{" x-checksum, Content-Length ,, Grpc-Status", "X-Checksum, Host, Te"})
	if want := []string{"X-Checksum", "Grpc-Status"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	r := &http.Request{Trailer: http.Header{"X-B": nil, "X-A": nil, "Content-Length": nil}}
	if got, want := requestTrailerNames(r), []string{"X-A", "X-B"}; !slices.Equal(got, want) {
		t.Errorf("request: got %q, want %q", got, want)
	}
}

// FuzzTrailers: any trailer section after a last chunk; no panic, the
// collected fields may all be relayed, and written out again they parse
// to the same fields.
func FuzzTrailers(f *testing.F) {
	f.Add([]byte("X-Checksum: abc\r\n\r\n"))
	f.Add([]byte("grpc-status: 0\r\ngrpc-message: ok\r\nContent-Length: 3\r\n\r\n"))
	f.Add([]byte("X-A: 1\r\n continued\r\n\r\n"))
	f.Add([]byte("X-A:\t \r\nX-A: 2\r\n\n"))
	f.Fuzz(func(t *testing.T, section []byte) {
		got, plain, err := collectTrailers(append([]byte("1\r\nx\r\n0\r\n"), section...))
		if err != nil {
			return
		}
		if plain != "x" {
			t.Fatalf("body %q", plain)
		}
		var again bytes.Buffer
		again.WriteString("0\r\n")
		for k, vs := range got {
			if !forwardableTrailer(k) || k != http.CanonicalHeaderKey(k) {
				t.Fatalf("relayed %q", k)
			}
			for _, v := range vs {
				again.WriteString(k + ": " + v + "\r\n")
			}
		}
		again.WriteString("\r\n")
		back, _, err := collectTrailers(again.Bytes())
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("%q: written back as %q, parsed to %v (%v), want %v", section, again.Bytes(), back, err, got)
		}
	})
}
