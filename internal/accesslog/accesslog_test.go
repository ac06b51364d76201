package accesslog

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestFormats(t *testing.T) {
	at := time.Date(2026, 11, 26, 14, 30, 0, 0, time.UTC)
	hit := &Entry{Time: at, Remote: "192.0.2.1", Method: "GET", URI: "/a?b=1", Proto: "HTTP/1.1", Host: "www.example.test",
		Status: 200, Bytes: 1024, Duration: 1500 * time.Microsecond, Referer: "https://r.test/", UserAgent: "curl/8", Cache: "Hit"}
	miss := &Entry{Time: at, Remote: "192.0.2.1", Method: "GET", URI: "/x", Proto: "HTTP/1.1", Status: 502, Duration: time.Second,
		UpstreamAddr: "10.0.0.1:80", UpstreamStatus: 0, Cache: "Miss"}
	evil := &Entry{Time: at, Method: "GET", URI: "/\"\n\x00evil", Status: 400}
	type tc struct {
		name, format string
		e            *Entry
		want         string
	}
	for _, c := range []tc{
		{"common hit", "common", hit, `192.0.2.1 - - [26/Nov/2026:14:30:00 +0000] "GET /a?b=1 HTTP/1.1" 200 1024 duration_ms=1.500 cache=Hit`},
		{"combined hit", "combined", hit, `192.0.2.1 - - [26/Nov/2026:14:30:00 +0000] "GET /a?b=1 HTTP/1.1" 200 1024 "https://r.test/" "curl/8" duration_ms=1.500 cache=Hit`},
		{"common upstream", "common", miss, `192.0.2.1 - - [26/Nov/2026:14:30:00 +0000] "GET /x HTTP/1.1" 502 - duration_ms=1000.000 cache=Miss upstream=10.0.0.1:80 upstream_status=0 upstream_bytes=0 upstream_ms=0.000`},
		{"escaped", "common", evil, `- - - [26/Nov/2026:14:30:00 +0000] "GET /\"\x0a\x00evil " 400 - duration_ms=0.000`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := New(&buf, c.format)
			if err != nil {
				t.Fatal(err)
			}
			l.Log(c.e)
			if got := strings.TrimSuffix(buf.String(), "\n"); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	var buf bytes.Buffer
	l, _ := New(&buf, "json")
	l.Log(&Entry{Time: time.Unix(0, 0), Method: "GET", URI: "/", Status: 200, Bytes: 5, UpstreamStatus: 304, UpstreamDuration: 2 * time.Millisecond, Cache: "RefreshHit"})
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if m["status"].(float64) != 200 || m["upstream_status"].(float64) != 304 || m["cache"] != "RefreshHit" || m["upstream_duration_ms"].(float64) != 2 {
		t.Errorf("unexpected: %v", m)
	}
	if _, ok := m["user_agent"]; ok {
		t.Errorf("empty field not omitted")
	}
}

func TestBadFormat(t *testing.T) {
	if _, err := New(nil, "xml"); err == nil {
		t.Fatal("want error")
	}
	var l *Logger
	l.Log(&Entry{}) // nil logger discards
}

func BenchmarkCommon(b *testing.B) {
	l, _ := New(discard{}, "combined")
	e := &Entry{Time: time.Now(), Remote: "192.0.2.1", Method: "GET", URI: "/a", Proto: "HTTP/1.1", Status: 200, Bytes: 1024, Cache: "Hit"}
	b.ReportAllocs()
	for b.Loop() {
		l.Log(e)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestConnFormats(t *testing.T) {
	at := time.Date(2026, 11, 26, 14, 30, 0, 0, time.UTC)
	tcp := &Conn{Time: at, Listener: "postgres", Proto: "tcp", Remote: "192.0.2.1", RemotePort: 51234, TargetGroup: "db",
		UpstreamAddr: "10.0.3.10:5432", Status: 200, Result: "ok", BytesIn: 1234, BytesOut: 5678, Duration: 1500 * time.Millisecond}
	refused := &Conn{Time: at, Listener: "sni", Proto: "tls", Remote: "192.0.2.1", RemotePort: 40000, SNI: `evil" x\`, Status: 503, Result: "no_target"}
	udp := &Conn{Time: at, Listener: "dns", Proto: "udp", Remote: "192.0.2.1", RemotePort: 53000, TargetGroup: "dns",
		UpstreamAddr: "10.0.4.1:53", Status: 200, Result: "idle_timeout", BytesIn: 40, PacketsIn: 1, Duration: 2 * time.Millisecond}
	type tc struct {
		name, format string
		c            *Conn
		want         string
	}
	for _, c := range []tc{
		{"common tcp", "common", tcp, `192.0.2.1 - - [26/Nov/2026:14:30:00 +0000] "TCP postgres db" 200 5678 duration_ms=1500.000 result=ok bytes_in=1234 remote_port=51234 upstream=10.0.3.10:5432`},
		{"combined tcp", "combined", tcp, `192.0.2.1 - - [26/Nov/2026:14:30:00 +0000] "TCP postgres db" 200 5678 "-" "-" duration_ms=1500.000 result=ok bytes_in=1234 remote_port=51234 upstream=10.0.3.10:5432`},
		{"refused, client-chosen SNI escaped", "common", refused, `192.0.2.1 - - [26/Nov/2026:14:30:00 +0000] "TLS sni -" 503 - duration_ms=0.000 result=no_target bytes_in=0 remote_port=40000 sni=evil\"\x20x\\`},
		{"udp", "common", udp, `192.0.2.1 - - [26/Nov/2026:14:30:00 +0000] "UDP dns dns" 200 - duration_ms=2.000 result=idle_timeout bytes_in=40 packets_in=1 packets_out=0 remote_port=53000 upstream=10.0.4.1:53`},
		{"json tcp", "json", tcp, `{"time":"2026-11-26T14:30:00Z","remote":"192.0.2.1","remote_port":51234,"listener":"postgres","proto":"tcp","target_group":"db","upstream_addr":"10.0.3.10:5432","status":200,"result":"ok","bytes_in":1234,"bytes_out":5678,"duration_ms":1500}`},
		{"json udp keeps zero packets", "json", udp, `{"time":"2026-11-26T14:30:00Z","remote":"192.0.2.1","remote_port":53000,"listener":"dns","proto":"udp","target_group":"dns","upstream_addr":"10.0.4.1:53","status":200,"result":"idle_timeout","bytes_in":40,"bytes_out":0,"packets_in":1,"packets_out":0,"duration_ms":2}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := New(&buf, c.format)
			if err != nil {
				t.Fatal(err)
			}
			l.LogConn(c.c)
			got := buf.String()
			if !strings.HasSuffix(got, "\n") || strings.Count(got, "\n") != 1 {
				t.Fatalf("not one line: %q", got)
			}
			if got = strings.TrimSuffix(got, "\n"); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
	var l *Logger
	l.LogConn(tcp) // nil logger discards
}
