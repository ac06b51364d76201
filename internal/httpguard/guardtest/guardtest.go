// Package guardtest loads the HTTP desync test vectors (from AWS's
// http-desync-guardian, copied under internal/httpguard/testdata) and turns
// them into raw requests, for the tests of every HTTP/1.1 front end.
package guardtest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Vector is one test case.
type Vector struct {
	File    string
	Name    string `yaml:"name"`
	URI     string `yaml:"uri"`
	Method  string `yaml:"method"`
	Version string `yaml:"version"`
	Headers []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
		Tier  string `yaml:"tier"`
	} `yaml:"headers"`
	Expected struct {
		Tier   string   `yaml:"tier"`
		Reason string   `yaml:"reason"`
		Items  []string `yaml:"required_message_items"`
	} `yaml:"expected"`
}

// Refuse reports whether a front end must refuse the vector (Ambiguous
// and Severe) rather than forward it (Compliant and Acceptable).
func (v Vector) Refuse() bool { return v.Expected.Tier == "Ambiguous" || v.Expected.Tier == "Severe" }

// String names the vector.
func (v Vector) String() string { return v.File + ": " + v.Name }

// Head serialises the request head as it goes on the wire; when host is
// set and the vector has no Host header, one is added after the request
// line.
func (v Vector) Head(host string) []byte {
	var b strings.Builder
	b.WriteString(v.Method + " " + v.URI)
	if v.Version != "" {
		b.WriteString(" " + v.Version)
	}
	b.WriteString("\r\n")
	hasHost := false
	for _, h := range v.Headers {
		if strings.EqualFold(h.Name, "host") {
			hasHost = true
		}
	}
	if host != "" && !hasHost {
		b.WriteString("Host: " + host + "\r\n")
	}
	for _, h := range v.Headers {
		b.WriteString(h.Name + ":")
		if !strings.HasPrefix(h.Value, " ") && !strings.HasPrefix(h.Value, "\t") {
			b.WriteString(" ")
		}
		b.WriteString(h.Value + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// Dir is the vectors' folder.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "desync-vectors")
}

// Load reads every vector, in file order.
func Load() ([]Vector, error) {
	files, err := filepath.Glob(filepath.Join(Dir(), "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []Vector
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if len(doc.Content) == 0 {
			continue
		}
		raw := doc.Content[0].Content
		for i := range raw {
			var v Vector
			if err := raw[i].Decode(&v); err != nil {
				return nil, fmt.Errorf("%s: case %d: %w", f, i, err)
			}
			v.File = filepath.Base(f)
			out = append(out, v)
		}
	}
	return out, nil
}

// Send writes raw on a new connection to addr and returns the status code
// and the first 4 KiB of the body of the first response (0 and the error
// text when the connection closed without one). It writes while it reads,
// as a browser does: a refused request can be answered, and the connection
// reset, before a long head is all sent, so a failed write is not an error
// when a response arrived.
func Send(addr string, raw []byte) (int, string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, "", err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		_, _ = c.Write(raw)
	}()
	defer func() {
		c.Close() // unblocks a write the server stopped reading
		<-wrote
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), nil
}
