package health

import (
	"slices"
	"testing"
)

func TestParseStatusRanges(t *testing.T) {
	tests := []struct {
		in      string
		want    StatusRanges
		wantErr bool
	}{
		{"200", StatusRanges{{200, 200}}, false},
		{"200-399", StatusRanges{{200, 399}}, false},
		{"200,204", StatusRanges{{200, 200}, {204, 204}}, false},
		{" 200 - 299 , 404 ", StatusRanges{{200, 299}, {404, 404}}, false},
		{"100-599", StatusRanges{{100, 599}}, false},
		{"301-301", StatusRanges{{301, 301}}, false},
		{"", nil, true},
		{"  ", nil, true},
		{"200,", nil, true},
		{",200", nil, true},
		{"200,,204", nil, true},
		{"200-", nil, true},
		{"-200", nil, true},
		{"399-200", nil, true},
		{"99", nil, true},
		{"099", nil, true},
		{"600", nil, true},
		{"2000", nil, true},
		{"20x", nil, true},
		{"+20", nil, true},
		{"200-299-399", nil, true},
		{"2 00", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseStatusRanges(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseStatusRanges(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("ParseStatusRanges(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestStatusRangesContains(t *testing.T) {
	r, err := ParseStatusRanges("200-299,304,500-503")
	if err != nil {
		t.Fatal(err)
	}
	for code, want := range map[int]bool{199: false, 200: true, 250: true, 299: true, 300: false, 304: true, 499: false, 500: true, 503: true, 504: false} {
		if got := r.Contains(code); got != want {
			t.Errorf("Contains(%d) = %v, want %v", code, got, want)
		}
	}
	if s := r.String(); s != "200-299,304,500-503" {
		t.Errorf("String() = %q", s)
	}
}

func TestParseGRPCCodes(t *testing.T) {
	tests := []struct {
		in      string
		want    StatusRanges
		wantErr bool
	}{
		{"0", StatusRanges{{0, 0}}, false},
		{"12", StatusRanges{{12, 12}}, false},
		{"0,12", StatusRanges{{0, 0}, {12, 12}}, false},
		{"0-99", StatusRanges{{0, 99}}, false},
		{" 0 - 2 , 14 ", StatusRanges{{0, 2}, {14, 14}}, false},
		{"", nil, true},
		{"100", nil, true},
		{"-1", nil, true},
		{"12-0", nil, true},
		{"0,", nil, true},
		{"x", nil, true},
		{"200", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseGRPCCodes(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseGRPCCodes(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("ParseGRPCCodes(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// FuzzParseStatusRanges checks that the parser never panics, that whatever it
// accepts is within 100..599 with ordered ends, and that String gives back an
// equivalent list.
func FuzzParseStatusRanges(f *testing.F) {
	for _, s := range []string{"200", "200-399", "200,204", " 200 - 299 , 404 ", "", "399-200", "600", "200,,204"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseStatusRanges(s)
		if err != nil {
			if r != nil {
				t.Fatalf("ParseStatusRanges(%q) returned %v with error %v", s, r, err)
			}
			return
		}
		if len(r) == 0 {
			t.Fatalf("ParseStatusRanges(%q) accepted an empty list", s)
		}
		for _, x := range r {
			if x.Lo < minStatus || x.Hi > maxStatus || x.Lo > x.Hi {
				t.Fatalf("ParseStatusRanges(%q) gave bad range %v", s, x)
			}
			if !r.Contains(x.Lo) || !r.Contains(x.Hi) {
				t.Fatalf("%v does not contain its own ends", r)
			}
		}
		again, err := ParseStatusRanges(r.String())
		if err != nil {
			t.Fatalf("String() of %q is %q, which does not parse: %v", s, r.String(), err)
		}
		if !slices.Equal(again, r) {
			t.Fatalf("round trip of %q: %v != %v", s, again, r)
		}
		for code := minStatus - 1; code <= maxStatus+1; code++ {
			if r.Contains(code) != again.Contains(code) {
				t.Fatalf("round trip changed membership of %d", code)
			}
		}
	})
}
