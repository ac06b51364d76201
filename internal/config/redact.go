package config

import (
	"fmt"
	"reflect"

	"go.yaml.in/yaml/v3"
)

// Redacted is what Marshal writes in place of a secret.
const Redacted = "REDACTED"

// MarshalRedacted renders cfg (a struct or pointer to one) as YAML with
// every non-empty string field tagged `secret:"true"` replaced by Redacted.
// cfg itself is not modified.
func MarshalRedacted(cfg any) ([]byte, error) {
	v := reflect.ValueOf(cfg)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	cp := reflect.New(v.Type()).Elem()
	cp.Set(v)
	// Copy then redact on a YAML node tree, so shared slices and maps of
	// the caller's value are never written to.
	var node yaml.Node
	if err := node.Encode(cp.Interface()); err != nil {
		return nil, fmt.Errorf("config: render: %w", err)
	}
	redactNode(&node, v.Type())
	return yaml.Marshal(&node)
}

func redactNode(n *yaml.Node, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			redactNode(c, t)
		}
		return
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for _, c := range n.Content {
				redactNode(c, t.Elem())
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 1; i < len(n.Content); i += 2 {
				redactNode(n.Content[i], t.Elem())
			}
		}
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return
		}
		keys := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			keys[n.Content[i].Value] = n.Content[i+1]
		}
		redactStruct(keys, t)
	}
}

func redactStruct(keys map[string]*yaml.Node, t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, inline := yamlName(sf)
		if inline {
			ft := sf.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				redactStruct(keys, ft)
			}
			continue
		}
		val, ok := keys[name]
		if !ok {
			continue
		}
		if sf.Tag.Get("secret") == "true" {
			if val.Kind == yaml.ScalarNode && val.Value != "" {
				val.Value, val.Tag, val.Style = Redacted, "!!str", 0
			}
			continue
		}
		redactNode(val, sf.Type)
	}
}
