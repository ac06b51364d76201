package h2

import (
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		field string // "" = valid
		own   bool
	}{
		{Config{}, "", true},
		{Config{Server: "edgestack", MaxConcurrentStreams: 100}, "", true},
		{Config{Server: "net/http"}, "", false},
		{Config{Server: "nghttp2"}, "http2.server", true},
		{Config{MaxConcurrentStreams: 1<<20 + 1}, "http2.max_concurrent_streams", true},
	} {
		err := tc.cfg.Validate("http2")
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field)):
			t.Errorf("%+v: error %v, want one naming %s", tc.cfg, err, tc.field)
		}
		if tc.cfg.Own() != tc.own {
			t.Errorf("%+v: Own() = %v", tc.cfg, !tc.own)
		}
	}
}
