package targetgroup

import (
	"strings"
	"testing"

	"github.com/edgestack/edgestack/internal/health"
)

// TestProtocolVersion: the default, what Validate refuses (naming the
// field), and the default health check of groups speaking HTTP/2.
func TestProtocolVersion(t *testing.T) {
	for _, c := range []struct {
		name      string
		cfg       Config
		wantErr   string // "" = valid
		wantCheck health.Kind
	}{
		{"default http1", Config{Name: "g"}, "", health.KindHTTP},
		{"https http1", Config{Name: "g", Protocol: ProtoHTTPS, ProtocolVersion: VersionHTTP1}, "", health.KindHTTPS},
		{"h2c checked by tcp", Config{Name: "g", ProtocolVersion: VersionHTTP2}, "", health.KindTCP},
		{"grpc checked by grpc health", Config{Name: "g", ProtocolVersion: VersionGRPC}, "", health.KindGRPC},
		{"grpc over tls checked by grpcs", Config{Name: "g", Protocol: ProtoHTTPS, ProtocolVersion: VersionGRPC}, "", health.KindGRPCS},
		{"explicit http check kept", Config{Name: "g", ProtocolVersion: VersionGRPC, HealthCheck: HealthCheck{Protocol: "http"}}, "", health.KindHTTP},
		{"explicit tcp check kept", Config{Name: "g", ProtocolVersion: VersionGRPC, HealthCheck: HealthCheck{Protocol: "tcp"}}, "", health.KindTCP},
		{"grpc check of an http2 group", Config{Name: "g", ProtocolVersion: VersionHTTP2, HealthCheck: HealthCheck{Protocol: "grpc"}}, "", health.KindGRPC},
		{"ALB's gRPC path", Config{Name: "g", ProtocolVersion: VersionGRPC, HealthCheck: HealthCheck{Path: "/AWS.ALB/healthcheck", Matcher: "12"}}, "", health.KindGRPC},
		{"grpc matcher out of range", Config{Name: "g", ProtocolVersion: VersionGRPC, HealthCheck: HealthCheck{Matcher: "200"}}, "health_check.matcher: grpc code list", ""},
		{"grpc path not a method", Config{Name: "g", ProtocolVersion: VersionGRPC, HealthCheck: HealthCheck{Path: "/healthz"}}, "health_check.path: want a gRPC method", ""},
		{"grpc service asked about", Config{Name: "g", ProtocolVersion: VersionGRPC, HealthCheck: HealthCheck{GRPCService: "users.v1.Users"}}, "", health.KindGRPC},
		{"grpc service on an http check", Config{Name: "g", HealthCheck: HealthCheck{GRPCService: "users.v1.Users"}}, "health_check.grpc_service", ""},
		{"grpc service with ALB's path", Config{Name: "g", ProtocolVersion: VersionGRPC, HealthCheck: HealthCheck{Path: "/AWS.ALB/healthcheck", Matcher: "12", GRPCService: "x"}}, "health_check.grpc_service", ""},
		{"unknown version", Config{Name: "g", ProtocolVersion: "http3"}, `protocol_version: unknown protocol version "http3"`, ""},
		{"http2 on tcp", Config{Name: "g", Protocol: ProtoTCP, ProtocolVersion: VersionHTTP2}, "protocol_version: http2 needs an http or https group, not tcp", ""},
		{"grpc on udp", Config{Name: "g", Protocol: ProtoUDP, ProtocolVersion: VersionGRPC}, "protocol_version: grpc needs an http or https group, not udp", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Validate() = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			cfg := c.cfg.WithDefaults()
			if cfg.ProtocolVersion == "" {
				t.Errorf("no default protocol_version")
			}
			cc, ok := cfg.checkConfig("192.0.2.1:80")
			if !ok || cc.Kind != c.wantCheck {
				t.Errorf("check %v (%v), want %s", cc.Kind, ok, c.wantCheck)
			}
			if cc.Kind == health.KindGRPC || cc.Kind == health.KindGRPCS {
				// The engine's defaults: grpc.health.v1, grpc-status 0,
				// unless the group says otherwise.
				d := cc.WithDefaults()
				wantPath, wantMatcher := health.DefaultGRPCPath, "0"
				if c.cfg.HealthCheck.Path != "" {
					wantPath, wantMatcher = c.cfg.HealthCheck.Path, c.cfg.HealthCheck.Matcher
				}
				if d.Path != wantPath || d.ExpectedGRPCStatus != wantMatcher || d.ExpectedStatus != "" || d.GRPCService != c.cfg.HealthCheck.GRPCService {
					t.Errorf("grpc check %+v, want path %s matcher %s service %q", d, wantPath, wantMatcher, c.cfg.HealthCheck.GRPCService)
				}
			}
		})
	}
}
