package cache

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Directives are the parsed Cache-Control directives of a request or a
// response (RFC 9111 section 5.2, RFC 5861). Durations are -1 when absent.
type Directives struct {
	MaxAge, SMaxAge      time.Duration
	StaleWhileRevalidate time.Duration
	StaleIfError         time.Duration
	MaxStale             time.Duration // request; a bare max-stale is MaxStaleAny
	MinFresh             time.Duration // request
	NoStore, NoCache     bool
	Private, Public      bool
	MustRevalidate       bool
	ProxyRevalidate      bool
	MustUnderstand       bool
	Immutable            bool
	NoTransform          bool
	OnlyIfCached         bool
	// NoCacheFields / PrivateFields hold the field names of the qualified
	// forms (no-cache="Set-Cookie"); the cache treats qualified forms as
	// unqualified, which RFC 9111 allows.
}

// MaxStaleAny is MaxStale for a bare "max-stale".
const MaxStaleAny = time.Duration(1<<63 - 1)

// maxDelta caps delta-seconds (RFC 9111 1.2.2: 2^31 is "infinity").
const maxDelta = 1 << 31

// ParseCacheControl parses every Cache-Control field value in h. Unknown
// directives are ignored; a malformed value of a known directive makes it
// count as present with the most conservative meaning (RFC 9111 4.2.1:
// invalid max-age is stale).
func ParseCacheControl(values []string) Directives {
	d := Directives{MaxAge: -1, SMaxAge: -1, StaleWhileRevalidate: -1, StaleIfError: -1, MaxStale: -1, MinFresh: -1}
	for _, v := range values {
		for len(v) > 0 {
			var item string
			item, v = nextItem(v)
			name, arg, hasArg := strings.Cut(item, "=")
			name = strings.ToLower(strings.TrimSpace(name))
			arg = strings.TrimSpace(arg)
			if len(arg) >= 2 && arg[0] == '"' && arg[len(arg)-1] == '"' {
				arg = arg[1 : len(arg)-1]
			}
			switch name {
			case "max-age":
				d.MaxAge = seconds(arg, hasArg, 0)
			case "s-maxage":
				d.SMaxAge = seconds(arg, hasArg, 0)
			case "stale-while-revalidate":
				d.StaleWhileRevalidate = seconds(arg, hasArg, 0)
			case "stale-if-error":
				d.StaleIfError = seconds(arg, hasArg, 0)
			case "max-stale":
				if !hasArg {
					d.MaxStale = MaxStaleAny
				} else {
					d.MaxStale = seconds(arg, true, 0)
				}
			case "min-fresh":
				d.MinFresh = seconds(arg, hasArg, 0)
			case "no-store":
				d.NoStore = true
			case "no-cache":
				d.NoCache = true
			case "private":
				d.Private = true
			case "public":
				d.Public = true
			case "must-revalidate":
				d.MustRevalidate = true
			case "proxy-revalidate":
				d.ProxyRevalidate = true
			case "must-understand":
				d.MustUnderstand = true
			case "immutable":
				d.Immutable = true
			case "no-transform":
				d.NoTransform = true
			case "only-if-cached":
				d.OnlyIfCached = true
			}
		}
	}
	return d
}

// nextItem splits the first comma-separated item off v, honouring quoted
// strings (a quoted argument may hold commas).
func nextItem(v string) (item, rest string) {
	inQuote := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			return v[:i], v[i+1:]
		}
	}
	return v, ""
}

// seconds parses delta-seconds; a missing or bad value yields bad.
func seconds(arg string, hasArg bool, bad time.Duration) time.Duration {
	if !hasArg || arg == "" {
		return bad
	}
	var n int64 // not int: maxDelta (2^31) overflows a 32-bit int
	for i := 0; i < len(arg); i++ {
		c := arg[i]
		if c < '0' || c > '9' {
			return bad
		}
		if n < maxDelta {
			n = n*10 + int64(c-'0')
		}
	}
	if n > maxDelta {
		n = maxDelta
	}
	return time.Duration(n) * time.Second
}

// parseAgeValue parses an Age value (delta-seconds, capped); ok is false
// when absent or malformed (RFC 9111 5.1: then ignored).
func parseAgeValue(v string) (time.Duration, bool) {
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0, false
	}
	if n > maxDelta {
		n = maxDelta
	}
	return time.Duration(n) * time.Second, true
}

// ParseHTTPDate parses an HTTP-date in any of the three RFC 9110 forms.
// IMF-fixdate, which RFC 9110 5.6.7 has senders use, is read by hand:
// time.Parse was 5% of a pass-through request's user CPU (its Date);
// anything else goes to http.ParseTime.
func ParseHTTPDate(v string) (time.Time, bool) {
	if t, ok := parseIMFFixdate(v); ok {
		return t, true
	}
	if v == "" {
		return time.Time{}, false
	}
	t, err := http.ParseTime(v)
	return t, err == nil
}

// parseIMFFixdate parses "Sun, 06 Nov 1994 08:49:37 GMT" exactly (names
// in their case), as time.Parse does with http.TimeFormat; false for
// anything else, which the caller then hands to http.ParseTime.
func parseIMFFixdate(v string) (time.Time, bool) {
	if len(v) != len(http.TimeFormat) || v[3] != ',' || v[4] != ' ' || v[7] != ' ' || v[11] != ' ' ||
		v[16] != ' ' || v[19] != ':' || v[22] != ':' || v[25:] != " GMT" {
		return time.Time{}, false
	}
	if d := strings.Index("SunMonTueWedThuFriSat", v[:3]); d < 0 || d%3 != 0 {
		return time.Time{}, false
	}
	m := strings.Index("JanFebMarAprMayJunJulAugSepOctNovDec", v[8:11])
	day, ok1 := digits(v[5:7])
	year, ok2 := digits(v[12:16])
	hour, ok3 := digits(v[17:19])
	minute, ok4 := digits(v[20:22])
	sec, ok5 := digits(v[23:25])
	if m < 0 || m%3 != 0 || !(ok1 && ok2 && ok3 && ok4 && ok5) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	month := time.Month(m/3 + 1)
	if day < 1 || day > daysIn(month, year) {
		return time.Time{}, false
	}
	return time.Date(year, month, day, hour, minute, sec, 0, time.UTC), true
}

// digits reads a run of ASCII digits.
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
