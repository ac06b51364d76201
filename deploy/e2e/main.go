// Command e2e proves the demo stack end to end from the host, step by step,
// printing pass/fail and timings. deploy/e2e.sh brings the stack up, runs
// this, and always tears the stack down.
//
//	E2E_COMPOSE="docker compose -p edgestack -f deploy/compose.yaml" go run ./deploy/e2e
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

type stack struct {
	dnsAddr   string   // dnsd as published on the host
	domain    string   // demo zone
	edges     []string // public addresses of the edges
	edgeAdmin []string // admin base URLs of the edges
	lbAdmin   string
	certd     string
	token     string
	compose   []string
	siteDir   string
	edgectl   []string
	roots     *x509.CertPool
}

func main() {
	s := &stack{}
	flag.StringVar(&s.dnsAddr, "dns", "127.0.0.1:5300", "dnsd address")
	flag.StringVar(&s.domain, "domain", "example.test", "demo zone")
	edges := flag.String("edges", "172.30.0.11,172.30.0.12", "public addresses of the edges")
	edgeAdmin := flag.String("edge-admin", "http://172.31.0.11:9103,http://172.31.0.12:9103", "admin URLs of the edges")
	flag.StringVar(&s.lbAdmin, "lb-admin", "http://172.31.0.20:9104", "admin URL of lbd")
	flag.StringVar(&s.certd, "certd", "http://172.31.0.2:9102", "admin URL of certd")
	tokenFile := flag.String("token-file", "deploy/config/admin-token", "admin token file")
	flag.StringVar(&s.siteDir, "site", "deploy/site", "the site folder the edges serve")
	edgectl := flag.String("edgectl", "go run ./cmd/edgectl", "edgectl command")
	flag.Parse()
	s.edges = strings.Split(*edges, ",")
	s.edgeAdmin = strings.Split(*edgeAdmin, ",")
	s.edgectl = strings.Fields(*edgectl)
	s.compose = strings.Fields(os.Getenv("E2E_COMPOSE"))
	if len(s.compose) == 0 {
		s.compose = []string{"docker-compose", "-p", "edgestack", "-f", "deploy/compose.yaml"}
	}
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		fmt.Println("FAIL setup:", err)
		os.Exit(1)
	}
	s.token = strings.TrimSpace(string(tok))

	steps := []struct {
		name string
		run  func(context.Context) (string, error)
	}{
		{"1. resolve www and api through dnsd", s.resolve},
		{"2. HTTPS to www trusting only the stack's CA; second request is a cache hit", s.fetchSite},
		{"3. /api/hello through edge and lbd reaches all three instances", s.apiSpread},
		{"4. stop one API instance under load: no failed request, target leaves rotation", s.stopTarget},
		{"5. stop one edge: dnsd drops its address, the other keeps serving", s.stopEdge},
		{"6. edgectl cdn invalidate: new content from both edges", s.invalidate},
	}
	failed := 0
	for _, st := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		start := time.Now()
		detail, err := st.run(ctx)
		cancel()
		took := time.Since(start).Round(10 * time.Millisecond)
		if err != nil {
			failed++
			fmt.Printf("FAIL %s (%v): %v\n", st.name, took, err)
			continue
		}
		fmt.Printf("PASS %s (%v): %s\n", st.name, took, detail)
	}
	if failed > 0 {
		fmt.Printf("%d of %d steps failed\n", failed, len(steps))
		os.Exit(1)
	}
	fmt.Printf("all %d steps passed\n", len(steps))
}

// lookup asks dnsd for the A records of name.
func (s *stack) lookup(name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, s.dnsAddr)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
		return nil, fmt.Errorf("%s: rcode %s, aa=%v", name, dns.RcodeToString[r.Rcode], r.Authoritative)
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

func (s *stack) resolve(context.Context) (string, error) {
	www, err := s.lookup("www." + s.domain)
	if err != nil {
		return "", err
	}
	want := slices.Clone(s.edges)
	slices.Sort(want)
	if !slices.Equal(www, want) {
		return "", fmt.Errorf("www: %v, want %v", www, want)
	}
	api, err := s.lookup("api." + s.domain)
	if err != nil {
		return "", err
	}
	if len(api) != 1 {
		return "", fmt.Errorf("api: %v, want lbd's one address", api)
	}
	return fmt.Sprintf("www → %v, api → %v", www, api), nil
}

// client returns an HTTPS client that sends every request for the demo
// names to addr and trusts only the stack's CA.
func (s *stack) client(addr string) *http.Client {
	d := &net.Dialer{Timeout: 3 * time.Second}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: s.roots},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, hostport string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(hostport)
				return d.DialContext(ctx, network, net.JoinHostPort(addr, port))
			},
		},
	}
}

func get(c *http.Client, url string) (*http.Response, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func (s *stack) fetchSite(ctx context.Context) (string, error) {
	// The CA root comes from certd's API, which takes it from the issuer.
	req, _ := http.NewRequest(http.MethodGet, s.certd+"/v1/issuers/pebble/root", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("CA root from certd: %w", err)
	}
	pemBytes, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("CA root from certd: %s: %s", resp.Status, pemBytes)
	}
	s.roots = x509.NewCertPool()
	if !s.roots.AppendCertsFromPEM(pemBytes) {
		return "", errors.New("certd's CA root is not PEM")
	}
	var notes []string
	for _, edge := range s.edges {
		c := s.client(edge)
		url := "https://www." + s.domain + "/?e2e=" + fmt.Sprint(time.Now().UnixNano())
		// The certificate may still be on its way from the CA.
		r1, body, err := get(c, url)
		for err != nil && ctx.Err() == nil {
			time.Sleep(500 * time.Millisecond)
			r1, body, err = get(c, url)
		}
		if err != nil {
			return "", fmt.Errorf("edge %s: %w", edge, err)
		}
		if r1.StatusCode != 200 || !strings.Contains(body, "edgestack demo site") {
			return "", fmt.Errorf("edge %s: %s, body %.80q", edge, r1.Status, body)
		}
		r2, _, err := get(c, url)
		if err != nil {
			return "", err
		}
		if !strings.HasPrefix(r2.Header.Get("X-Cache"), "Hit") {
			return "", fmt.Errorf("edge %s: second request X-Cache %q, want Hit", edge, r2.Header.Get("X-Cache"))
		}
		notes = append(notes, fmt.Sprintf("%s %s then %q", edge, r1.Proto, r2.Header.Get("X-Cache")))
	}
	return strings.Join(notes, "; "), nil
}

func (s *stack) instance(c *http.Client) (string, error) {
	resp, body, err := get(c, "https://www."+s.domain+"/api/hello")
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("/api/hello: %s", resp.Status)
	}
	var v struct {
		Instance string `json:"instance"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return "", fmt.Errorf("/api/hello: %w", err)
	}
	return v.Instance, nil
}

func (s *stack) apiSpread(context.Context) (string, error) {
	c := s.client(s.edges[0])
	seen := map[string]int{}
	for i := 0; i < 30; i++ {
		in, err := s.instance(c)
		if err != nil {
			return "", err
		}
		seen[in]++
	}
	if len(seen) != 3 {
		return "", fmt.Errorf("instances seen %v, want 3", seen)
	}
	return fmt.Sprint(seen), nil
}

func (s *stack) runCompose(args ...string) error {
	cmd := exec.Command(s.compose[0], append(slices.Clone(s.compose[1:]), args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return nil
}

// failures keeps the first few failure reasons of a load run.
type failures struct {
	mu   sync.Mutex
	seen []string
}

func (f *failures) add(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) < 3 {
		f.seen = append(f.seen, s)
	}
}

func (f *failures) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.seen, "; ")
}

// load sends requests through edge to path until stop is closed and counts
// them and their failures.
func (s *stack) load(edge, path string, stop <-chan struct{}) (ok, failed *atomic.Int64, why *failures, wait func()) {
	ok, failed, why = new(atomic.Int64), new(atomic.Int64), &failures{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := s.client(edge)
			for n := 0; n < 20000; n++ { // bounded, and stops when told
				select {
				case <-stop:
					return
				default:
				}
				resp, body, err := get(c, "https://www."+s.domain+path)
				switch {
				case err != nil:
					failed.Add(1)
					why.add(time.Now().Format("15:04:05.000") + " " + err.Error())
				case resp.StatusCode >= 500:
					failed.Add(1)
					why.add(fmt.Sprintf("%s %s %s: %.120s", time.Now().Format("15:04:05.000"), resp.Status, resp.Header.Get("X-Cache"), body))
				default:
					ok.Add(1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	return ok, failed, why, wg.Wait
}

func (s *stack) targetState(address string) (string, error) {
	resp, err := http.Get(s.lbAdmin + "/v1/target-groups/api/targets")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var ts []struct {
		Address, State string
	}
	if err := json.NewDecoder(resp.Body).Decode(&ts); err != nil {
		return "", err
	}
	for _, t := range ts {
		if t.Address == address {
			return t.State, nil
		}
	}
	return "absent", nil
}

func (s *stack) stopTarget(ctx context.Context) (string, error) {
	stop := make(chan struct{})
	ok, failed, why, wait := s.load(s.edges[0], "/api/hello", stop)
	time.Sleep(time.Second)
	stopped := time.Now()
	// demoapi drains on SIGTERM (fails /healthz, keeps answering for 3 s),
	// so the stop runs while the target's state is watched.
	stopDone := make(chan error, 1)
	go func() { stopDone <- s.runCompose("stop", "-t", "10", "api-2") }()
	defer func() { _ = s.runCompose("start", "api-2") }()
	var left time.Duration
	for left == 0 {
		st, err := s.targetState("api-2:8080")
		if err != nil {
			return "", err
		}
		if st == "unhealthy" || st == "unused" || st == "draining" || st == "absent" {
			left = time.Since(stopped)
			break
		}
		select {
		case <-ctx.Done():
			close(stop)
			wait()
			return "", fmt.Errorf("api-2 still %q after %v", st, time.Since(stopped))
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := <-stopDone; err != nil {
		close(stop)
		wait()
		return "", err
	}
	time.Sleep(time.Second)
	close(stop)
	wait()
	c := s.client(s.edges[0])
	for i := 0; i < 12; i++ {
		if in, err := s.instance(c); err == nil && in == "api-2" {
			return "", errors.New("api-2 still answers after leaving rotation")
		}
	}
	if failed.Load() > 0 {
		return "", fmt.Errorf("%d of %d requests failed while api-2 stopped (stopped at %s): %s", failed.Load(), failed.Load()+ok.Load(), stopped.Format("15:04:05.000"), why)
	}
	// lbd checks every 1 s and needs 2 failures: with a check in flight the
	// window is about 3 s.
	if left > 4*time.Second {
		return "", fmt.Errorf("api-2 left rotation only %v after stop, beyond the health check's window", left)
	}
	return fmt.Sprintf("%d requests, 0 failed; api-2 out of rotation %v after SIGTERM (health check 1s × 2)", ok.Load(), left.Round(10*time.Millisecond)), nil
}

func (s *stack) stopEdge(ctx context.Context) (string, error) {
	stop := make(chan struct{})
	ok, failed, why, wait := s.load(s.edges[0], "/", stop)
	stopped := time.Now()
	if err := s.runCompose("stop", "-t", "10", "edge2"); err != nil {
		close(stop)
		wait()
		return "", err
	}
	defer func() { _ = s.runCompose("start", "edge2") }()
	var gone time.Duration
	for gone == 0 {
		addrs, err := s.lookup("www." + s.domain)
		if err == nil && slices.Equal(addrs, s.edges[:1]) {
			gone = time.Since(stopped)
			break
		}
		select {
		case <-ctx.Done():
			close(stop)
			wait()
			return "", fmt.Errorf("www still %v %v after stopping edge2", addrs, time.Since(stopped))
		case <-time.After(100 * time.Millisecond):
		}
	}
	close(stop)
	wait()
	if failed.Load() > 0 {
		return "", fmt.Errorf("%d requests to edge1 failed: %s", failed.Load(), why)
	}
	// dnsd checks every 2 s and needs 2 failures (4 s); edged keeps
	// answering through its 1 s lame duck, a check can be 2 s from its next
	// run, a failing one may take its 1 s timeout, and `compose stop` itself
	// takes a moment: 10 s bounds the window.
	if gone > 10*time.Second {
		return "", fmt.Errorf("edge2 left the answers only %v after stop, beyond the health check's window", gone)
	}
	return fmt.Sprintf("edge2 out of DNS answers %v after stop (check 2s × 2); edge1 served %d requests, 0 failed", gone.Round(10*time.Millisecond), ok.Load()), nil
}

func (s *stack) invalidate(ctx context.Context) (string, error) {
	// edge2 was just restarted: wait until it serves again.
	for _, edge := range s.edges {
		for {
			if resp, _, err := get(s.client(edge), "https://www."+s.domain+"/"); err == nil && resp.StatusCode == 200 {
				break
			}
			select {
			case <-ctx.Done():
				return "", fmt.Errorf("edge %s not serving", edge)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	probe := filepath.Join(s.siteDir, "e2e-probe.txt")
	defer os.Remove(probe)
	read := func(edge string) (string, string, error) {
		resp, body, err := get(s.client(edge), "https://www."+s.domain+"/e2e-probe.txt")
		if err != nil {
			return "", "", err
		}
		return strings.TrimSpace(body), resp.Header.Get("X-Cache"), nil
	}
	if err := os.WriteFile(probe, []byte("version 1\n"), 0o644); err != nil {
		return "", err
	}
	for _, e := range s.edges {
		if body, _, err := read(e); err != nil || body != "version 1" {
			return "", fmt.Errorf("edge %s: %q %v", e, body, err)
		}
	}
	if err := os.WriteFile(probe, []byte("version 2\n"), 0o644); err != nil {
		return "", err
	}
	for _, e := range s.edges {
		if body, xc, _ := read(e); body != "version 1" {
			return "", fmt.Errorf("edge %s served %q (%s) before invalidation; want the cached version 1", e, body, xc)
		}
	}
	args := append(slices.Clone(s.edgectl[1:]), "cdn", "invalidate", "-edged", strings.Join(s.edgeAdmin, ","), "/e2e-probe.txt")
	cmd := exec.CommandContext(ctx, s.edgectl[0], args...)
	cmd.Env = append(os.Environ(), "EDGECTL_TOKEN="+s.token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("edgectl: %v\n%s", err, out)
	}
	for _, e := range s.edges {
		if body, xc, err := read(e); err != nil || body != "version 2" {
			return "", fmt.Errorf("edge %s after invalidation: %q (%s) %v", e, body, xc, err)
		}
	}
	return "both edges serve version 2 after: " + strings.TrimSpace(string(out)), nil
}
