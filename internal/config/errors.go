package config

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is a validation problem with one field, named by its YAML path
// ("listen", "zones[2].file").
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Errorf returns a FieldError for field with a formatted message.
func Errorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Nest prefixes every field named in err (a FieldError or an errors.Join of
// them) with prefix, so a nested struct's Validate can report paths relative to
// itself. Errors that are not FieldErrors become FieldErrors of prefix.
func Nest(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range Flatten(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			field := prefix
			switch {
			case fe.Field == "":
			case strings.HasPrefix(fe.Field, "["):
				field += fe.Field
			default:
				field += "." + fe.Field
			}
			out = append(out, &FieldError{Field: field, Err: fe.Err})
			continue
		}
		out = append(out, &FieldError{Field: prefix, Err: e})
	}
	return errors.Join(out...)
}

// Flatten returns the leaves of a tree of errors.Join'ed errors.
func Flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Problems lists every problem in err as one line each. FieldErrors are
// prefixed with "file:line:" when src knows where the field is set, or with
// "file:" otherwise.
func Problems(err error, src *Source) []string {
	var out []string
	for _, e := range Flatten(err) {
		var fe *FieldError
		if errors.As(e, &fe) && src != nil && src.File != "" {
			if line := src.Line(fe.Field); line > 0 {
				out = append(out, fmt.Sprintf("%s:%d: %s", src.File, line, fe.Error()))
				continue
			}
			out = append(out, fmt.Sprintf("%s: %s", src.File, fe.Error()))
			continue
		}
		out = append(out, e.Error())
	}
	return out
}

// Annotate is Problems joined back into one error, for returning.
func Annotate(err error, src *Source) error {
	if err == nil {
		return nil
	}
	var errs []error
	for _, p := range Problems(err, src) {
		errs = append(errs, errors.New(p))
	}
	return errors.Join(errs...)
}
