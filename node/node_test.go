package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/bench/backend"
	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
	"github.com/thebalancer/balancer/proxy"
	"github.com/thebalancer/balancer/proxy/pick"
)

func startBackend(t *testing.T, name, mode string) *backend.Server {
	t.Helper()
	cfg := backend.DefaultConfig()
	cfg.Listen, cfg.Name, cfg.Mode = "127.0.0.1:0", name, mode
	srv, err := backend.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv
}

func testConfig(t *testing.T, backends ...proxy.Backend) Config {
	cfg := DefaultConfig()
	cfg.Name = "n1"
	cfg.Listen, cfg.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Backends = backends
	cfg.ShutdownTimeout = 3 * time.Second
	cfg.Breaker.SleepWindow = 200 * time.Millisecond
	cfg.Breaker.FlushInterval = 5 * time.Millisecond
	cfg.Breaker.MinRequests = 5
	cfg.Raft.HeartbeatTimeout = 250 * time.Millisecond
	cfg.Raft.ElectionTimeout = 250 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 200 * time.Millisecond
	cfg.Raft.CommitTimeout = 20 * time.Millisecond
	return cfg
}

// startNode runs a node until the test ends and checks that it stops
// cleanly. stop ends it early (as SIGTERM would) and returns Run's error;
// calling it again returns the same.
func startNode(t *testing.T, cfg Config) (n *Node, stop func() error) {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("node did not stop within 10s")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return n, stop
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode
}

func breakerState(t *testing.T, n *Node, id string) string {
	var load admin.Load
	getJSON(t, "http://"+n.AdminAddr()+"/v1/load", &load)
	for _, b := range load.Backends {
		if b.ID == id {
			return b.Breaker[n.Name()]
		}
	}
	t.Fatalf("backend %s missing from /v1/load", id)
	return ""
}

func TestHTTPEndToEndKilledBackendOpensCircuit(t *testing.T) {
	a, b, c := startBackend(t, "a", "http"), startBackend(t, "b", "http"), startBackend(t, "c", "http")
	cfg := testConfig(t,
		proxy.Backend{ID: "a", Address: a.Addr(), Weight: 1},
		proxy.Backend{ID: "b", Address: b.Addr(), Weight: 1},
		proxy.Backend{ID: "c", Address: c.Addr(), Weight: 1})
	cfg.Proxy.Algorithm = pick.RoundRobin
	n, _ := startNode(t, cfg)
	client := &http.Client{Timeout: 5 * time.Second}
	count := func(reqs int) map[string]int {
		seen := map[string]int{}
		for i := 0; i < reqs; i++ {
			resp, err := client.Get("http://" + n.Addr() + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("client saw %d %s; connect failures must be retried invisibly", resp.StatusCode, body)
			}
			seen[strings.TrimSpace(string(body))]++
		}
		return seen
	}
	if seen := count(30); seen["a"] != 10 || seen["b"] != 10 || seen["c"] != 10 {
		t.Fatalf("before the kill: %v", seen)
	}
	b.Close() // crash: listener and connections gone
	testutil.Eventually(t, 10*time.Second, "b's circuit to open", func() bool {
		count(10)
		return breakerState(t, n, "b") == "open"
	})
	seen := count(40)
	if seen["b"] != 0 || seen["a"]+seen["c"] != 40 {
		t.Fatalf("with b's circuit open: %v", seen)
	}
	// Nothing left in flight once the traffic stops.
	var load admin.Load
	getJSON(t, "http://"+n.AdminAddr()+"/v1/load", &load)
	for _, be := range load.Backends {
		if be.Local != 0 {
			t.Errorf("backend %s: %d in flight while idle", be.ID, be.Local)
		}
	}
}

func TestCircuitClosesAfterRecovery(t *testing.T) {
	flaky := startBackend(t, "flaky", "http")
	good := startBackend(t, "good", "http")
	cfg := testConfig(t,
		proxy.Backend{ID: "flaky", Address: flaky.Addr(), Weight: 1},
		proxy.Backend{ID: "good", Address: good.Addr(), Weight: 1})
	cfg.Proxy.Algorithm = pick.RoundRobin
	n, _ := startNode(t, cfg)
	// 500s from the backend count as failures: status=500 makes the demo backend fail.
	testutil.Eventually(t, 10*time.Second, "flaky's circuit to open on 5xx", func() bool {
		for i := 0; i < 10; i++ {
			if resp, err := http.Get("http://" + n.Addr() + "/?status=500"); err == nil {
				resp.Body.Close()
			}
		}
		return breakerState(t, n, "flaky") == "open"
	})
	// Healthy answers again: after the sleep window one trial closes it.
	testutil.Eventually(t, 10*time.Second, "flaky's circuit to close after a good trial", func() bool {
		if resp, err := http.Get("http://" + n.Addr() + "/"); err == nil {
			resp.Body.Close()
		}
		return breakerState(t, n, "flaky") == "closed"
	})
}

func TestAllBackendsDownIs503JSON(t *testing.T) {
	dead := func() string {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		return ln.Addr().String()
	}
	cfg := testConfig(t, proxy.Backend{ID: "x", Address: dead(), Weight: 1}, proxy.Backend{ID: "y", Address: dead(), Weight: 1})
	n, _ := startNode(t, cfg)
	var body struct{ Error string }
	for i := 0; i < 20; i++ {
		if code := getJSON(t, "http://"+n.Addr()+"/", &body); code != 503 || body.Error == "" {
			t.Fatalf("status %d body %+v, want 503 with a JSON error", code, body)
		}
	}
	testutil.Eventually(t, 10*time.Second, "circuits of dead backends to open", func() bool {
		getJSON(t, "http://"+n.Addr()+"/", &body)
		return strings.Contains(body.Error, "circuit")
	})
}

func TestTCPEndToEnd(t *testing.T) {
	a, b := startBackend(t, "a", "tcp"), startBackend(t, "b", "tcp")
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: a.Addr(), Weight: 1}, proxy.Backend{ID: "b", Address: b.Addr(), Weight: 1})
	cfg.Proxy.Mode = proxy.ModeTCP
	cfg.Proxy.Algorithm = pick.RoundRobin
	n, _ := startNode(t, cfg)
	seen := map[string]int{}
	for i := 0; i < 6; i++ {
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "ping")
		c.(*net.TCPConn).CloseWrite()
		all, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		name, rest, _ := strings.Cut(string(all), "\n")
		if rest != "ping" {
			t.Fatalf("got %q, want greeting and echo", all)
		}
		seen[name]++
	}
	if seen["a"] != 3 || seen["b"] != 3 {
		t.Fatalf("connections per backend: %v", seen)
	}
}

func TestAdminEndpoints(t *testing.T) {
	a := startBackend(t, "a", "http")
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: a.Addr(), Weight: 3})
	n, _ := startNode(t, cfg)
	if resp, err := http.Get("http://" + n.Addr() + "/"); err == nil {
		resp.Body.Close()
	}
	base := "http://" + n.AdminAddr()
	var conf admin.Config
	if code := getJSON(t, base+"/v1/config", &conf); code != 200 || len(conf.Backends) != 1 || conf.Backends[0].Weight != 3 {
		t.Fatalf("/v1/config: %d %+v", code, conf)
	}
	var load admin.Load
	if getJSON(t, base+"/v1/load", &load); load.Node != "n1" || len(load.Backends) != 1 || load.Backends[0].Requests != 1 || load.Backends[0].Breaker["n1"] != "closed" {
		t.Fatalf("/v1/load: %+v", load)
	}
	var st map[string]string
	testutil.Eventually(t, 10*time.Second, "readiness (a leader elected)", func() bool { return getJSON(t, base+"/readyz", &st) == 200 })
	if code := getJSON(t, base+"/healthz", &st); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`balancer_backend_requests_total{backend="a"} 1`,
		`balancer_backend_inflight{backend="a"} 0`,
		`balancer_backend_circuit_state{backend="a",state="closed"} 1`,
		`balancer_backend_request_duration_seconds_count{backend="a"} 1`,
		`balancer_circuit_transitions_total{backend="a",from="closed",to="open"} 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	var e struct{ Error string }
	resp, err = http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The page must load nothing from outside the node: operators' hosts
	// often have no internet access.
	if !strings.Contains(string(page), `<script src="/ui/app.js">`) || strings.Contains(string(page), "//cdn") ||
		strings.Contains(string(page), `src="http`) || strings.Contains(string(page), `href="http`) {
		t.Errorf("status page is not self-contained: %s", page)
	}
	for _, asset := range []string{"/ui/app.js", "/ui/style.css"} {
		resp, err := http.Get(base + asset)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", asset, resp.StatusCode)
		}
	}
	var status admin.Status
	if code := getJSON(t, base+"/v1/status", &status); code != 200 || status.Node != "n1" || status.Leader != "n1" ||
		len(status.Backends) != 1 || status.Backends[0].Weight != 3 || status.Backends[0].Traffic["n1"].Requests != 1 {
		t.Errorf("/v1/status: %d %+v", code, status)
	}
	if code := getJSON(t, base+"/v1/status?scope=everything", &e); code != 400 || !strings.Contains(e.Error, "scope") {
		t.Errorf("/v1/status with a bad scope: %d %+v", code, e)
	}
	if code := getJSON(t, base+"/v1/nope", &e); code != 404 || e.Error == "" {
		t.Errorf("unknown endpoint: %d %+v", code, e)
	}
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	a := startBackend(t, "a", "http")
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: a.Addr(), Weight: 1})
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var wg sync.WaitGroup
	results := make(chan string, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get("http://" + n.Addr() + "/?sleep=300ms")
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- fmt.Sprint(resp.StatusCode, " ", strings.TrimSpace(string(b)))
		}()
	}
	testutil.Eventually(t, 5*time.Second, "requests in flight", func() bool { return n.proxy.InFlight()["a"] == 4 })
	cancel()
	// Readiness fails while draining.
	testutil.Eventually(t, 2*time.Second, "readiness to fail", func() bool { return n.ready() != nil })
	wg.Wait()
	close(results)
	for r := range results {
		if r != "200 a" {
			t.Errorf("in-flight request during shutdown: %s", r)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after graceful shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if c, err := net.DialTimeout("tcp", n.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("traffic listener still accepts after shutdown")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := testConfig(t, proxy.Backend{ID: "a", Address: "127.0.0.1:80", Weight: 1})
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no name", func(c *Config) { c.Name = "" }, "-node"},
		{"bad listen", func(c *Config) { c.Listen = "8080" }, "-listen"},
		{"bad admin", func(c *Config) { c.Admin = "localhost" }, "-admin"},
		{"admin advertise no port", func(c *Config) { c.AdminAdvertise = "10.0.0.1" }, "-admin-advertise"},
		{"admin advertise wildcard", func(c *Config) { c.AdminAdvertise = "0.0.0.0:9090" }, "wildcard"},
		{"admin advertise wildcard v6", func(c *Config) { c.AdminAdvertise = "[::0]:9090" }, "wildcard"},
		// In a cluster, peers dial the admin address to forward writes.
		{"clustered wildcard admin", func(c *Config) { c.Gossip.Bind = "127.0.0.1:0"; c.Admin = ":9090" }, "-admin-advertise"},
		{"clustered 0.0.0.0 admin", func(c *Config) { c.Gossip.Bind = "127.0.0.1:0"; c.Admin = "0.0.0.0:9090" }, "wildcard"},
		{"bad id", func(c *Config) { c.Backends[0].ID = "a/b" }, "backend id"},
		{"no port", func(c *Config) { c.Backends[0].Address = "10.0.0.1" }, "HOST:PORT"},
		{"weight high", func(c *Config) { c.Backends[0].Weight = MaxWeight + 1 }, "weight"},
		{"weight negative", func(c *Config) { c.Backends[0].Weight = -1 }, "weight"},
		{"duplicate", func(c *Config) { c.Backends = append(c.Backends, c.Backends[0]) }, "twice"},
		{"algorithm", func(c *Config) { c.Proxy.Algorithm = "random" }, "-algorithm"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(t, proxy.Backend{ID: "a", Address: "127.0.0.1:80", Weight: 1})
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	// A lone node may bind its admin API anywhere: nobody forwards to it.
	lone := testConfig(t, proxy.Backend{ID: "a", Address: "127.0.0.1:80", Weight: 1})
	lone.Admin = "0.0.0.0:0"
	if err := lone.Validate(); err != nil {
		t.Errorf("a lone node with a wildcard admin address: %v", err)
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t)
	cfg.Listen = ln.Addr().String()
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "-listen") {
		t.Fatalf("want a -listen error for a port in use, got %v", err)
	}
}
