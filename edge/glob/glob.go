// Package glob matches URL paths against CloudFront-style patterns: '*'
// matches any run of characters (including '/'), '?' matches exactly one
// byte, everything else matches itself (case-sensitive).
package glob

// Match reports whether s matches pattern. It runs in O(len(pattern) *
// len(s)) worst case and never recurses.
func Match(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]) && pattern[p] != '*':
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Literal reports whether pattern has no wildcard, so Match is equality.
func Literal(pattern string) bool {
	for i := 0; i < len(pattern); i++ {
		if pattern[i] == '*' || pattern[i] == '?' {
			return false
		}
	}
	return true
}
