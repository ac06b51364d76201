package config

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix is the one prefix of every environment override.
//
// A field's variable is the prefix followed by its YAML path in upper case,
// nesting separated by a double underscore: admin.listen is
// EDGESTACK_ADMIN__LISTEN and log.level is EDGESTACK_LOG__LEVEL. The value is
// parsed as YAML, so lists and maps may be given in flow style
// ("[a, b]", "{k: v}").
const EnvPrefix = "EDGESTACK_"

// reservedEnv are EDGESTACK_ variables that are not config fields.
var reservedEnv = map[string]bool{
	"EDGESTACK_CONFIG": true, // path of the config file, read by internal/app
}

// ApplyEnv sets the fields of dst (a pointer to a struct) named by
// EDGESTACK_* variables in environ ("KEY=value" pairs). A variable with the
// prefix that names no field is an error, so a typo is never silently
// ignored. It returns the names of the variables applied.
func ApplyEnv(dst any, environ []string) ([]string, error) {
	fields := map[string]reflect.Value{}
	collectEnvFields(reflect.ValueOf(dst).Elem(), nil, fields)
	var applied []string
	var errs []error
	for _, kv := range environ {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(key, EnvPrefix) || reservedEnv[key] {
			continue
		}
		f, found := fields[key]
		if !found {
			errs = append(errs, fmt.Errorf("environment: %s names no config field (fields are %s<PATH> with __ between levels, e.g. %sADMIN__LISTEN)", key, EnvPrefix, EnvPrefix))
			continue
		}
		fresh := reflect.New(f.Type())
		if err := yaml.Unmarshal([]byte(val), fresh.Interface()); err != nil {
			errs = append(errs, fmt.Errorf("environment: %s: %s", key, strings.TrimPrefix(err.Error(), "yaml: ")))
			continue
		}
		f.Set(fresh.Elem())
		applied = append(applied, key)
	}
	sort.Strings(applied)
	return applied, errors.Join(errs...)
}

var (
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func collectEnvFields(v reflect.Value, path []string, out map[string]reflect.Value) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, inline := yamlName(sf)
		if name == "-" {
			continue
		}
		fv := v.Field(i)
		if inline && fv.Kind() == reflect.Struct {
			collectEnvFields(fv, path, out)
			continue
		}
		p := append(append([]string(nil), path...), strings.ToUpper(name))
		if fv.Kind() == reflect.Struct && !reflect.PointerTo(fv.Type()).Implements(yamlUnmarshaler) && !reflect.PointerTo(fv.Type()).Implements(textUnmarshaler) {
			collectEnvFields(fv, p, out)
			continue
		}
		out[EnvPrefix+strings.Join(p, "__")] = fv
	}
}

// yamlName returns the YAML key of a struct field and whether it is inlined.
func yamlName(sf reflect.StructField) (string, bool) {
	tag := sf.Tag.Get("yaml")
	name, opts, _ := strings.Cut(tag, ",")
	inline := strings.Contains(","+opts+",", ",inline,")
	if name == "" {
		name = strings.ToLower(sf.Name)
	}
	return name, inline
}
