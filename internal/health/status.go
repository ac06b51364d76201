package health

import (
	"fmt"
	"strconv"
	"strings"
)

// StatusRange is an inclusive range of HTTP (or gRPC) status codes.
type StatusRange struct {
	Lo, Hi int
}

// StatusRanges is a set of HTTP status codes (or gRPC status codes, from
// ParseGRPCCodes) written as a comma-separated list of codes and ranges,
// e.g. "200-399" or "200,204" or "200-299,301".
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
	return parseRanges(s, "status", "\"200-399\" or \"200,204\"", parseStatusCode)
}

// Limits of a gRPC status code accepted by ParseGRPCCodes: ALB's matcher
// range, wider than the 17 codes gRPC defines today.
const (
	minGRPCCode = 0
	maxGRPCCode = 99
)

// ParseGRPCCodes parses a comma-separated list of gRPC status codes and
// inclusive ranges ("0", "0,12", "0-99"), with the syntax of
// ParseStatusRanges. Codes are one or two digits, 0..99.
func ParseGRPCCodes(s string) (StatusRanges, error) {
	return parseRanges(s, "grpc code", "\"0\" or \"0,12\" or \"0-99\"", parseGRPCCode)
}

// parseRanges parses a list of codes and ranges; what names the codes in
// errors, example shows a valid list and code parses one code.
func parseRanges(s, what, example string, code func(string) (int, error)) (StatusRanges, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("empty %s list (want e.g. %s)", what, example)
	}
	var out StatusRanges
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("empty item in %s list %q", what, s)
		}
		lo, hi, isRange := strings.Cut(item, "-")
		l, err := code(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("%s list %q: %w", what, s, err)
		}
		h := l
		if isRange {
			if h, err = code(strings.TrimSpace(hi)); err != nil {
				return nil, fmt.Errorf("%s list %q: %w", what, s, err)
			}
			if l > h {
				return nil, fmt.Errorf("%s list %q: range %d-%d is reversed", what, s, l, h)
			}
		}
		out = append(out, StatusRange{Lo: l, Hi: h})
	}
	return out, nil
}

func parseStatusCode(s string) (int, error) {
	if len(s) != 3 || !allDigits(s) {
		return 0, fmt.Errorf("status code %q is not three digits", s)
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

func parseGRPCCode(s string) (int, error) {
	if len(s) < 1 || len(s) > 2 || !allDigits(s) {
		return 0, fmt.Errorf("grpc code %q is not a number %d..%d", s, minGRPCCode, maxGRPCCode)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("grpc code %q: %w", s, err)
	}
	return n, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
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
