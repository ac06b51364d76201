package httpguard

import (
	"math/rand/v2"
	"testing"
)

// levenshtein is the plain full-table distance, the reference for the
// banded editDistanceAtMost.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// TestEditDistanceAtMost compares the banded check with the full table on
// the framing names, their near misses and random strings over a small
// alphabet (so that near misses are common).
func TestEditDistanceAtMost(t *testing.T) {
	cases := [][2]string{
		{"transferencoding", teLetters}, {"transferencodin", teLetters}, {"transfrencoding", teLetters},
		{"xtransferencodingx", teLetters}, {"tranferencodng", teLetters}, {"contentlength", clLetters},
		{"contentlenght", clLetters}, {"contentleng", clLetters}, {"xforwardedproto", teLetters},
		{"xforwardedfor", clLetters}, {"acceptencoding", teLetters}, {"contentencoding", clLetters},
		{"contentencoding", teLetters}, {"", clLetters},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		target := []string{teLetters, clLetters}[r.IntN(2)]
		b := []byte(target)
		for range r.IntN(5) { // a few random edits
			switch i := r.IntN(len(b) + 1); r.IntN(3) {
			case 0:
				if i < len(b) {
					b[i] = "aceglnorst"[r.IntN(10)]
				}
			case 1:
				b = append(b[:i], append([]byte{"aceglnorst"[r.IntN(10)]}, b[i:]...)...)
			default:
				if i < len(b) {
					b = append(b[:i], b[i+1:]...)
				}
			}
		}
		cases = append(cases, [2]string{string(b), target})
	}
	for _, c := range cases {
		for k := 0; k <= 3; k++ {
			want := levenshtein(c[0], c[1]) <= k
			if got := editDistanceAtMost([]byte(c[0]), c[1], k); got != want {
				t.Fatalf("editDistanceAtMost(%q, %q, %d) = %v, distance %d", c[0], c[1], k, got, levenshtein(c[0], c[1]))
			}
		}
	}
}

func BenchmarkFramingKind(b *testing.B) {
	names := [][]byte{[]byte("X-Forwarded-Proto"), []byte("X-Forwarded-Host"), []byte("Accept-Encoding"), []byte("Transfer_Encoding")}
	for b.Loop() {
		for _, n := range names {
			framingKind(n)
		}
	}
}
