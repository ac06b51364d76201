// Package apptest checks that a real edgestack binary behaves like every
// other: version, validate, print-config, healthcheck, admin endpoints,
// reload on SIGHUP (a bad config keeps the last good one) and graceful stop.
// Each cmd/<daemon> test calls Conformance with configs of its own.
package apptest

import (
	"bytes"
	"context"
	"errors"

	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// Case describes a daemon to check.
type Case struct {
	// Package is the import path of the main package, e.g.
	// "github.com/edgestack/edgestack/cmd/dnsd".
	Package string
	// Name is the binary's name as printed by version.
	Name string
	// Good is a valid config as a text/template: {{.Admin}} is the admin
	// address, {{port "x"}} a free loopback port (same name, same port),
	// {{.Dir}} a scratch folder, {{.Token}} the admin token.
	Good string
	// Bad is an invalid config (same template) and BadWant the substrings
	// validate must print for it (e.g. "cfg.yaml:3: listen: ..."). Relative
	// paths in configs resolve against the daemon's working directory, which
	// is {{.Dir}}.
	Bad     string
	BadWant []string
	// Files are extra files (templated) written into {{.Dir}} first.
	Files map[string]string
	// Serving, when set, checks the daemon's own data plane with the
	// resolved ports; it runs after start and again after a rejected reload.
	Serving func(t *testing.T, ports map[string]string)
}

// Env is what the templates see.
type Env struct {
	Admin string
	Dir   string
	Token string
	ports map[string]string
	mu    sync.Mutex
}

func (e *Env) port(name string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.ports[name]; ok {
		return p, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	e.ports[name] = p
	return p, nil
}

func (e *Env) render(t *testing.T, text string) string {
	t.Helper()
	tpl, err := template.New("cfg").Funcs(template.FuncMap{"port": e.port}).Parse(text)
	if err != nil {
		t.Fatalf("template: %v", err)
	}
	var b bytes.Buffer
	if err := tpl.Execute(&b, e); err != nil {
		t.Fatalf("template: %v", err)
	}
	return b.String()
}

// Build compiles pkg into a temporary folder and returns the binary's path.
func Build(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, bin, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return result{code, so.String(), se.String()}
}

// Conformance runs every shared-runtime check against the binary.
func Conformance(t *testing.T, c Case) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := Build(t, c.Package)
	dir := t.TempDir()
	e := &Env{Dir: dir, Token: "s3cret-token-for-tests", ports: map[string]string{}}
	ap, err := e.port("admin")
	if err != nil {
		t.Fatal(err)
	}
	e.Admin = "127.0.0.1:" + ap
	for name, text := range c.Files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(e.render(t, text)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	good := e.render(t, c.Good)
	bad := e.render(t, c.Bad)
	cfgPath := filepath.Join(dir, "cfg.yaml")
	// The bad config is validated under the same base name, so BadWant
	// can name "cfg.yaml:LINE:".
	if err := os.MkdirAll(filepath.Join(dir, "bad"), 0o755); err != nil {
		t.Fatal(err)
	}
	badPath := filepath.Join(dir, "bad", "cfg.yaml")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(cfgPath, good)
	write(badPath, bad)

	t.Run("version", func(t *testing.T) {
		r := run(t, bin, dir, nil, "version")
		if r.code != 0 || !strings.Contains(r.stdout, c.Name) {
			t.Fatalf("version: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("validate", func(t *testing.T) {
		if r := run(t, bin, dir, nil, "validate", "-config", cfgPath); r.code != 0 {
			t.Fatalf("validate good config: code %d\n%s", r.code, r.stderr)
		}
		r := run(t, bin, dir, nil, "validate", "-config", badPath)
		if r.code != 2 {
			t.Fatalf("validate bad config: code %d, want 2\n%s", r.code, r.stderr)
		}
		for _, w := range c.BadWant {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("validate bad config: stderr lacks %q:\n%s", w, r.stderr)
			}
		}
		unknown := strings.Replace(good, "admin:", "admin:\n  no_such_key: 1", 1)
		unknownPath := filepath.Join(dir, "unknown.yaml")
		write(unknownPath, unknown)
		if r := run(t, bin, dir, nil, "validate", "-config", unknownPath); r.code != 2 || !strings.Contains(r.stderr, "unknown.yaml:") || !strings.Contains(r.stderr, "no_such_key") {
			t.Errorf("unknown key: code %d, stderr %q; want 2 naming file, line and key", r.code, r.stderr)
		}
		if r := run(t, bin, dir, []string{"EDGESTACK_NO_SUCH_FIELD=1"}, "validate", "-config", cfgPath); r.code != 2 || !strings.Contains(r.stderr, "EDGESTACK_NO_SUCH_FIELD") {
			t.Errorf("unknown env override: code %d, stderr %q; want 2 naming the variable", r.code, r.stderr)
		}
		if r := run(t, bin, dir, []string{"EDGESTACK_LOG__LEVEL=loud"}, "validate", "-config", cfgPath); r.code != 2 || !strings.Contains(r.stderr, "log") {
			t.Errorf("bad env value: code %d, stderr %q", r.code, r.stderr)
		}
		if r := run(t, bin, dir, nil, "bogus-command"); r.code != 2 {
			t.Errorf("unknown command: code %d, want 2", r.code)
		}
	})
	t.Run("print-config", func(t *testing.T) {
		r := run(t, bin, dir, []string{"EDGESTACK_LOG__LEVEL=warn"}, "print-config", "-config", cfgPath, "-log-format", "text")
		if r.code != 0 {
			t.Fatalf("print-config: code %d\n%s", r.code, r.stderr)
		}
		if strings.Contains(r.stdout, e.Token) {
			t.Errorf("print-config shows the admin token:\n%s", r.stdout)
		}
		for _, w := range []string{"level: warn", "format: text"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("print-config lacks %q (env and flag precedence):\n%s", w, r.stdout)
			}
		}
	})
	t.Run("run", func(t *testing.T) {
		var logs syncBuffer
		cmd := exec.Command(bin, "run", "-config", cfgPath, "-log-format", "text")
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			if t.Failed() {
				t.Logf("daemon log:\n%s", logs.String())
			}
		})
		waitFor(t, 20*time.Second, "healthcheck to pass", func() bool {
			select {
			case err := <-exited:
				t.Fatalf("daemon exited early: %v\n%s", err, logs.String())
			default:
			}
			return run(t, bin, dir, nil, "healthcheck", "-config", cfgPath).code == 0
		})
		base := "http://" + e.Admin
		if code, _ := get(t, base+"/livez", ""); code != 200 {
			t.Errorf("/livez: %d", code)
		}
		code, metrics := get(t, base+"/metrics", "")
		if code != 200 || !strings.Contains(metrics, "edgestack_build_info{") || !strings.Contains(metrics, "edgestack_config_last_reload_successful 1") {
			t.Errorf("/metrics: %d, missing build_info or reload gauge", code)
		}
		for _, tok := range []string{"", "wrong"} {
			if code := post(t, base+"/v1/reload", tok); code != 401 {
				t.Errorf("POST /v1/reload with token %q: %d, want 401", tok, code)
			}
		}
		if strings.Contains(logs.String(), "wrong") {
			t.Errorf("a presented token was logged")
		}
		if c.Serving != nil {
			c.Serving(t, e.ports)
		}

		write(cfgPath, bad)
		_ = cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, 10*time.Second, "rejected reload to show in metrics", func() bool {
			_, m := get(t, base+"/metrics", "")
			return strings.Contains(m, "edgestack_config_last_reload_successful 0")
		})
		if r := run(t, bin, dir, nil, "healthcheck", "-url", base+"/readyz"); r.code != 0 {
			t.Errorf("not ready after a rejected reload: %s", r.stderr)
		}
		if c.Serving != nil {
			c.Serving(t, e.ports)
		}
		write(cfgPath, good)
		if code := post(t, base+"/v1/reload", e.Token); code != 200 {
			t.Errorf("POST /v1/reload with token: %d", code)
		}
		_ = cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, 10*time.Second, "good reload to show in metrics", func() bool {
			_, m := get(t, base+"/metrics", "")
			return strings.Contains(m, "edgestack_config_last_reload_successful 1")
		})

		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("exit after SIGTERM: %v, want status 0", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no exit 30s after SIGTERM")
		}
		if !strings.Contains(logs.String(), "stopped") {
			t.Errorf("log does not say stopped")
		}
	})
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, url, token string) (int, string) {
	return do(t, http.MethodGet, url, token)
}

func post(t *testing.T, url, token string) int {
	code, _ := do(t, http.MethodPost, url, token)
	return code
}

func do(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// syncBuffer is a bytes.Buffer safe for a child process's two pipes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
