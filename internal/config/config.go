// Package config loads edgestack's strict YAML configuration files.
//
// Every daemon reads one YAML file into a struct whose defaults come from a
// single constructor. Decoding is strict: unknown keys and duplicate keys are
// errors naming file and line. Environment variables with the prefix
// EDGESTACK_ then override single fields (see ApplyEnv), and validation
// problems are reported all at once, each with the file and line of the field
// when the file sets it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Source remembers where a decoded configuration came from, so that
// validation errors can name the file and line of the offending field.
type Source struct {
	// File is the path the configuration was read from ("" for defaults only).
	File string
	root *yaml.Node
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// LoadFile decodes the YAML file at path into dst, which must be a pointer to
// a struct already holding the defaults. Unknown and duplicate keys are
// errors; every such error is reported, each as "file:line: message".
func LoadFile(path string, dst any) (*Source, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Decode(path, data, dst)
}

// Decode is LoadFile for bytes already in memory; name is used in errors.
func Decode(name string, data []byte, dst any) (*Source, error) {
	src := &Source{File: name}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return src, fileErrors(name, err)
	}
	src.root = &root
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return src, fileErrors(name, err)
	}
	return src, nil
}

// fileErrors rewrites yaml.v3's "line N: msg" errors as "file:N: msg", one
// error per problem.
func fileErrors(name string, err error) error {
	var lines []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		lines = te.Errors
	} else {
		lines = []string{err.Error()}
	}
	var errs []error
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if m := yamlLineRE.FindStringSubmatch(l); m != nil {
			errs = append(errs, fmt.Errorf("%s:%s: %s", name, m[1], strings.TrimPrefix(l[len(m[0]):], "yaml: ")))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %s", name, strings.TrimPrefix(l, "yaml: ")))
	}
	return errors.Join(errs...)
}

// Line returns the line in the source file where the field at path (for
// example "zones[2].file" or "admin.listen") is set, or 0 when the file does
// not set it. For a mapping key it is the key's line.
func (s *Source) Line(path string) int {
	if s == nil || s.root == nil {
		return 0
	}
	n := s.root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, seg := range splitPath(path) {
		switch n.Kind {
		case yaml.SequenceNode:
			idx, err := strconv.Atoi(seg)
			if err != nil || idx < 0 || idx >= len(n.Content) {
				return 0
			}
			n = n.Content[idx]
			line = n.Line
		case yaml.MappingNode:
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == seg {
					next, line = n.Content[i+1], n.Content[i].Line
					break
				}
			}
			if next == nil {
				return 0
			}
			n = next
		default:
			return 0
		}
	}
	return line
}

// splitPath turns "a.b[2].c" into ["a", "b", "2", "c"].
func splitPath(path string) []string {
	path = strings.ReplaceAll(path, "[", ".")
	path = strings.ReplaceAll(path, "]", "")
	var out []string
	for _, p := range strings.Split(path, ".") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}
