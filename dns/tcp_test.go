package dnsserver

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/edgestack/edgestack/internal/config"
	"github.com/miekg/dns"
)

func writeQuery(t *testing.T, c net.Conn, id uint16, name string) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Id = id
	b, _ := m.Pack()
	buf := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
	if _, err := c.Write(append(buf, b...)); err != nil {
		t.Fatal(err)
	}
}

func readAnswer(t *testing.T, r *bufio.Reader) *dns.Msg {
	t.Helper()
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTCPPipelining(t *testing.T) {
	srv := start(t, testConfig(t))
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// More than miekg/dns's default 128 queries per connection, all
	// written before reading.
	const n = 300
	go func() {
		for i := range n {
			writeQuery(t, c, uint16(i), "www.example.test.")
		}
	}()
	r := bufio.NewReader(c)
	for i := range n {
		m := readAnswer(t, r)
		if m.Id != uint16(i) || len(m.Answer) != 2 {
			t.Fatalf("answer %d: id %d, %d records", i, m.Id, len(m.Answer))
		}
	}
}

func TestTCPIdleTimeoutAndLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.TCP.IdleTimeout = config.Duration(300 * time.Millisecond)
	cfg.TCP.MaxConnections = 2
	srv := start(t, cfg)
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		writeQuery(t, c, 1, "www.example.test.")
		readAnswer(t, bufio.NewReader(c))
		conns = append(conns, c)
	}
	// A third connection is closed at once.
	c3, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	_ = c3.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection over max_connections was served")
	}
	// Idle connections are closed after the timeout.
	_ = conns[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := conns[0].Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	t.Logf("idle connection closed after %v", time.Since(start))
}

// TestFastPathKeepsQuestionCase asks the same name in different letter
// cases: every answer (the later ones from the fast path) spells the
// question and the answer owners as asked.
func TestFastPathKeepsQuestionCase(t *testing.T) {
	srv := start(t, testConfig(t))
	for _, name := range []string{"WWW.example.test.", "www.EXAMPLE.test.", "wWw.ExAmPlE.tEsT.", "Foo.Wild.example.test."} {
		for range 2 {
			r := query(t, srv.Addr(), name, dns.TypeA)
			if r.Question[0].Name != name || len(r.Answer) == 0 {
				t.Fatalf("%s: %v", name, r)
			}
			for _, rr := range r.Answer {
				if rr.Header().Name != name {
					t.Errorf("%s: answer owner %q", name, rr.Header().Name)
				}
			}
		}
	}
}
