package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// viewerAddr is the client address: the peer, or with a trusted proxy in
// front, the right-most untrusted X-Forwarded-For entry.
func (s *snapshot) viewerAddr(r *http.Request) netip.Addr {
	a := peerAddr(r)
	if len(s.trusted) == 0 || !inAny(s.trusted, a) {
		return a
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			c, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return a
			}
			c = c.Unmap()
			if !inAny(s.trusted, c) {
				return c
			}
			a = c
		}
	}
	return a
}

func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err == nil {
		return ap.Addr().Unmap()
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// permitted applies the distribution's deny then allow lists.
func (d *dist) permitted(a netip.Addr) bool {
	if inAny(d.deny, a) {
		return false
	}
	return len(d.allow) == 0 || inAny(d.allow, a)
}

// Signed URLs carry query parameters
//
//	Expires=<unix seconds>&KeyName=<name>[&IP=<client ip>]&Signature=<hex>
//
// where Signature is hex(HMAC-SHA256(key, path + "?" + the query up to,
// not including, "&Signature=")). The signature parameters are removed
// before the cache key is built.
const sigParam = "Signature="

// SignURL returns path with a signature valid until expires, for the
// given key; ip, when valid, binds it to one client address.
func SignURL(path, keyName string, key []byte, expires time.Time, ip string) string {
	q := "Expires=" + strconv.FormatInt(expires.Unix(), 10) + "&KeyName=" + keyName
	if ip != "" {
		q += "&IP=" + ip
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	signed := path + sep + q
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signed))
	return signed + "&" + sigParam + hex.EncodeToString(mac.Sum(nil))
}

// verifySigned checks r's signature; on success it returns the raw query
// without the signature parameters.
func (s *snapshot) verifySigned(r *http.Request, client netip.Addr, now time.Time) (string, bool) {
	raw := r.URL.RawQuery
	i := strings.LastIndex(raw, "&"+sigParam)
	if i < 0 {
		return "", false
	}
	sig, err := hex.DecodeString(raw[i+1+len(sigParam):])
	if err != nil {
		return "", false
	}
	signedQuery := raw[:i]
	var exp int64 = -1
	var keyName, ip string
	var rest []string
	for kv := range strings.SplitSeq(signedQuery, "&") {
		switch k, v, _ := strings.Cut(kv, "="); k {
		case "Expires":
			exp, err = strconv.ParseInt(v, 10, 64)
			if err != nil {
				return "", false
			}
		case "KeyName":
			keyName = v
		case "IP":
			ip = v
		default:
			rest = append(rest, kv)
		}
	}
	key, ok := s.keys[keyName]
	if !ok || exp < 0 || now.Unix() > exp {
		return "", false
	}
	if ip != "" {
		want, err := netip.ParseAddr(ip)
		if err != nil || want.Unmap() != client {
			return "", false
		}
	}
	p := r.URL.RawPath
	if p == "" {
		p = r.URL.Path
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(p + "?" + signedQuery))
	if !hmac.Equal(mac.Sum(nil), sig) {
		return "", false
	}
	return strings.Join(rest, "&"), true
}
