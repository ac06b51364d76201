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
