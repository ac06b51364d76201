package httpguard

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzClassify: Classify never panics, and a normalised head is itself
// accepted with the same framing.
func FuzzClassify(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST /a b HTTP/1.1\r\nHost: a\r\nX y: 1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		r := Classify(head)
		if r.Tier >= Ambiguous || r.Normalized == nil {
			return
		}
		r2 := Classify(r.Normalized)
		if r2.Tier >= Ambiguous {
			t.Fatalf("normalised head refused: %q -> %q: %s", head, r.Normalized, r2.Message)
		}
		if r2.Chunked != r.Chunked || r2.ContentLength != r.ContentLength {
			t.Fatalf("normalisation changed framing: %q -> %q", head, r.Normalized)
		}
	})
}

// pipeConn is a net.Conn reading from a fixed buffer.
type pipeConn struct {
	net.Conn
	r io.Reader
}

func (p *pipeConn) Read(b []byte) (int, error)      { return p.r.Read(b) }
func (p *pipeConn) SetReadDeadline(time.Time) error { return nil }

// FuzzConn: whatever a client sends, the guarded stream never panics and
// every head it hands on is accepted by Classify.
func FuzzConn(f *testing.F) {
	f.Add([]byte("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: x\r\n\r\n"), 7)
	f.Add([]byte("POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n"), 3)
	f.Fuzz(func(t *testing.T, in []byte, chunk int) {
		if chunk <= 0 || chunk > 1<<16 {
			chunk = 1
		}
		c := NewConn(&pipeConn{r: &chunkReader{b: in, n: chunk}}, Options{MaxHeaderBytes: 1 << 12})
		var out bytes.Buffer
		buf := make([]byte, 7)
		for i := 0; i < 1<<16; i++ {
			n, err := c.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				break
			}
		}
		if out.Len() > len(in)+1024 {
			t.Fatalf("guard produced %d bytes from %d", out.Len(), len(in))
		}
	})
}

type chunkReader struct {
	b []byte
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.n, len(c.b))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}
