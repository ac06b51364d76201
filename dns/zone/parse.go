package zone

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/miekg/dns"
)

// MaxRecords bounds the records read from one zone file.
const MaxRecords = 20_000_000

// LoadFile reads an RFC 1035 master file for origin. $ORIGIN, $TTL and
// $GENERATE work; $INCLUDE may only name files inside the folder of path
// (symbolic links that leave it are refused). A syntax error names the file
// and line: "zones/example.zone:12: ...".
func LoadFile(path, origin string) (*Zone, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("zone %s: %w", origin, err)
	}
	defer root.Close()
	f, err := root.Open(base)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("zone %s: %s: %w", origin, path, err)
	}
	defer f.Close()
	rrs, err := parse(f, origin, base, root)
	if err != nil {
		return nil, fmt.Errorf("%s", rewriteParseError(err, dir))
	}
	z, err := Build(origin, Group(rrs))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return z, nil
}

// Parse reads master-file text for origin (no $INCLUDE). name is used in
// error messages.
func Parse(r io.Reader, origin, name string) ([]dns.RR, error) {
	rrs, err := parse(r, origin, name, nil)
	if err != nil {
		return nil, errors.New(rewriteParseError(err, ""))
	}
	return rrs, nil
}

func parse(r io.Reader, origin, name string, root *os.Root) ([]dns.RR, error) {
	zp := dns.NewZoneParser(r, dns.Fqdn(origin), name)
	if root != nil {
		zp.SetIncludeAllowed(true)
		zp.SetIncludeFS(root.FS())
	}
	var out []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if rr.Header().Class != dns.ClassINET {
			return nil, fmt.Errorf("%s: %s: only class IN is served", name, rr.Header().Name)
		}
		out = append(out, rr)
		if len(out) > MaxRecords {
			return nil, fmt.Errorf("%s: more than %d records", name, MaxRecords)
		}
	}
	if err := zp.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

var parseErrRE = regexp.MustCompile(`^(?s)(.*?): dns: (.*) at line: (\d+):(\d+)$`)

// rewriteParseError turns miekg's "file: dns: msg: "tok" at line: L:C" into
// "dir/file:L:C: msg: "tok"".
func rewriteParseError(err error, dir string) string {
	m := parseErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		return err.Error()
	}
	file := m[1]
	if dir != "" && dir != "." {
		file = filepath.Join(dir, file)
	}
	return fmt.Sprintf("%s:%s:%s: %s", file, m[3], m[4], strings.TrimPrefix(m[2], "dns: "))
}

// Group turns records into simple record sets, one per (name, type), with
// owner names lower-cased and the TTL of the set being the smallest of its
// records (RFC 2181 §5.2). Duplicate records are dropped.
func Group(rrs []dns.RR) []*RRSet {
	type key struct {
		name string
		t    uint16
	}
	idx := map[key]*RRSet{}
	var out []*RRSet
	for _, rr := range rrs {
		h := rr.Header()
		h.Name = strings.ToLower(h.Name)
		k := key{h.Name, h.Rrtype}
		s := idx[k]
		if s == nil {
			s = &RRSet{Name: h.Name, Type: h.Rrtype, TTL: h.Ttl}
			idx[k] = s
			out = append(out, s)
		}
		dup := false
		for _, o := range s.RRs {
			if dns.IsDuplicate(o, rr) {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		if h.Ttl < s.TTL {
			s.TTL = h.Ttl
		}
		s.RRs = append(s.RRs, rr)
	}
	for _, s := range out {
		for _, rr := range s.RRs {
			rr.Header().Ttl = s.TTL
		}
	}
	return out
}
