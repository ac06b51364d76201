package benchkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParsers(t *testing.T) {
	type tc struct {
		file  string
		parse func(string) (Load, error)
		want  Load
	}
	cases := []tc{
		{"wrk.txt", ParseWrk, Load{Requests: 361000, Errors: 3, Seconds: 10.01, PerSecond: 36073.51, Mean: 1380 * time.Microsecond, Max: 21450 * time.Microsecond, P50: 1150 * time.Microsecond, P75: 1520 * time.Microsecond, P90: 2200 * time.Microsecond, P99: 5320 * time.Microsecond}},
		{"dnsperf.txt", ParseDNSPerf, Load{Requests: 999990, Errors: 10, Seconds: 10.001, PerSecond: 99989.123456, Mean: 987 * time.Microsecond, Max: 15432 * time.Microsecond}},
		{"h2load.txt", ParseH2Load, Load{Requests: 99990, Errors: 10, Seconds: 1.23, PerSecond: 81234.56, Mean: 1230 * time.Microsecond, Max: 12340 * time.Microsecond}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", c.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.parse(string(b))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
	if _, err := ParseWrk("garbage"); err == nil {
		t.Error("ParseWrk accepted garbage")
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize([]float64{5, 1, 3, 2, 4})
	if s.Median != 3 || s.Min != 1 || s.Max != 5 || s.P25 != 2 || s.P75 != 4 || s.N != 5 {
		t.Errorf("%+v", s)
	}
	if got := s.SpreadPct(); got < 66.6 || got > 66.7 {
		t.Errorf("spread %v", got)
	}
}

func TestTreeUsage(t *testing.T) {
	u, err := TreeUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS <= 0 {
		t.Errorf("rss %d", u.RSS)
	}
	if _, err := TreeUsage(1 << 30); err == nil {
		t.Error("no error for a missing pid")
	}
}

func TestParseH2LoadLog(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "h2load-log.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ParseH2LoadLog(f)
	if err != nil {
		t.Fatal(err)
	}
	// 100 completed requests of 1..100 µs; the two failed ones (-1) left out.
	us := func(x float64) time.Duration { return time.Duration(x * float64(time.Microsecond)) }
	want := Load{Requests: 100, P50: us(50.5), P75: us(75.25), P90: us(90.1), P99: us(99.01), Max: us(100)}
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"", "1\t200\n", "1\tx\t3\n"} {
		if _, err := ParseH2LoadLog(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
