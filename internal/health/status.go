package health

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct {
	Lo, Hi int
}

// StatusRanges is a set of HTTP status codes written as a comma-separated
// list of codes and ranges, e.g. "200-399" or "200,204" or "200-299,301".
type StatusRanges []StatusRange

// Limits of a status code accepted by ParseStatusRanges.
const (
	minStatus = 100
	maxStatus = 599
)

// ParseStatusRanges parses a comma-separated list of HTTP status codes and
// inclusive ranges ("200-399", "200,204", " 200 - 299 , 404 "). Codes must be
// within 100..599 and each range's low end must not exceed its high end.
// Whitespace around items and around the dash is ignored; empty items are not.
func ParseStatusRanges(s string) (StatusRanges, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty status list (want e.g. \"200-399\" or \"200,204\")")
	}
	var out StatusRanges
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("empty item in status list %q", s)
		}
		lo, hi, isRange := strings.Cut(item, "-")
		l, err := parseStatusCode(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("status list %q: %w", s, err)
		}
		h := l
		if isRange {
			if h, err = parseStatusCode(strings.TrimSpace(hi)); err != nil {
				return nil, fmt.Errorf("status list %q: %w", s, err)
			}
			if l > h {
				return nil, fmt.Errorf("status list %q: range %d-%d is reversed", s, l, h)
			}
		}
		out = append(out, StatusRange{Lo: l, Hi: h})
	}
	return out, nil
}

func parseStatusCode(s string) (int, error) {
	if len(s) != 3 {
		return 0, fmt.Errorf("status code %q is not three digits", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("status code %q is not three digits", s)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("status code %q: %w", s, err)
	}
	if n < minStatus || n > maxStatus {
		return 0, fmt.Errorf("status code %d is outside %d..%d", n, minStatus, maxStatus)
	}
	return n, nil
}

// Contains reports whether code is in one of the ranges.
func (r StatusRanges) Contains(code int) bool {
	for _, x := range r {
		if code >= x.Lo && code <= x.Hi {
			return true
		}
	}
	return false
}

// String writes the ranges back in the syntax ParseStatusRanges accepts.
func (r StatusRanges) String() string {
	var b strings.Builder
	for i, x := range r {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(x.Lo))
		if x.Hi != x.Lo {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(x.Hi))
		}
	}
	return b.String()
}
