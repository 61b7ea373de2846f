package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/proxy/pick"
)

func hostPort(u string) string { return strings.TrimPrefix(u, "http://") }

// startHTTP builds an HTTP-mode proxy over routes and serves it.
func startHTTP(t *testing.T, cfg Config, routes []Route, newCircuit func(string) Circuit) (*Proxy, string) {
	t.Helper()
	cfg.Mode = ModeHTTP
	p, err := New(cfg, newCircuit, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.SetRoutes(routes)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	t.Cleanup(p.CloseIdle)
	return p, srv.URL
}

func route(id, addr string) Route {
	return Route{Backend: Backend{ID: id, Address: addr, Weight: 1}}
}

func namedBackend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func totalInFlight(p *Proxy) int64 {
	var n int64
	for _, v := range p.InFlight() {
		n += v
	}
	return n
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestHTTPSpreadsOverBackends(t *testing.T) {
	a, b, c := namedBackend(t, "a"), namedBackend(t, "b"), namedBackend(t, "c")
	cfg := DefaultConfig()
	cfg.Algorithm = pick.RoundRobin
	p, url := startHTTP(t, cfg, []Route{route("a", hostPort(a.URL)), route("b", hostPort(b.URL)), route("c", hostPort(c.URL))}, nil)
	seen := map[string]int{}
	for i := 0; i < 30; i++ {
		code, body, _ := get(t, url)
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		seen[body]++
	}
	if seen["a"] != 10 || seen["b"] != 10 || seen["c"] != 10 {
		t.Fatalf("round-robin over 3 backends, 30 requests: got %v", seen)
	}
	testutil.Eventually(t, 2*time.Second, "in-flight back to 0", func() bool { return totalInFlight(p) == 0 })
	var reqs uint64
	for _, s := range p.Stats() {
		reqs += s.Requests
	}
	if reqs != 30 {
		t.Fatalf("stats count %d requests, want 30", reqs)
	}
}

func TestHTTPHeaders(t *testing.T) {
	var got http.Header
	var host string
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		host = r.Host
		w.Header().Set("Connection", "X-Secret")
		w.Header().Set("X-Secret", "hop")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End", "kept")
	}))
	defer be.Close()
	_, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	req, _ := http.NewRequest("GET", url+"/x", nil)
	req.Host = "app.example"
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "must not pass")
	req.Header.Set("Proxy-Authorization", "Basic Zm9v")
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-End", "passes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.Get("X-Hop") != "" || got.Get("Proxy-Authorization") != "" {
		t.Errorf("hop-by-hop request headers reached the backend: %v", got)
	}
	if got.Get("X-End") != "passes" {
		t.Errorf("end-to-end header lost: %v", got)
	}
	if xff := got.Get("X-Forwarded-For"); xff != "203.0.113.9, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the client chain with 127.0.0.1 appended", xff)
	}
	if got.Get("X-Forwarded-Proto") != "http" || got.Get("X-Forwarded-Host") != "app.example" {
		t.Errorf("X-Forwarded-Proto/Host = %q/%q", got.Get("X-Forwarded-Proto"), got.Get("X-Forwarded-Host"))
	}
	if host != "app.example" {
		t.Errorf("backend saw Host %q, want the client's", host)
	}
	if resp.Header.Get("X-Secret") != "" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop response headers reached the client: %v", resp.Header)
	}
	if resp.Header.Get("X-End") != "kept" {
		t.Errorf("end-to-end response header lost")
	}
}

func TestHTTPStreamsResponse(t *testing.T) {
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "second\n")
	}))
	defer be.Close()
	defer close(release)
	_, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk not streamed before the backend finished: %q %v", line, err)
	}
}

func TestHTTPRequestBodyStreamsToBackend(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}))
	defer be.Close()
	_, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 64; i++ {
			pw.Write(make([]byte, 16<<10))
		}
		pw.Close()
	}()
	resp, err := http.Post(url, "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != fmt.Sprint(64*16<<10) {
		t.Fatalf("backend read %s bytes of a chunked upload", b)
	}
}

func TestHTTPRetriesConnectFailureOnAnotherBackend(t *testing.T) {
	good := namedBackend(t, "good")
	cfg := DefaultConfig()
	cfg.Algorithm = pick.RoundRobin
	p, url := startHTTP(t, cfg, []Route{route("dead", testutil.FreeAddr(t)), route("good", hostPort(good.URL))}, nil)
	for i := 0; i < 20; i++ {
		code, body, _ := get(t, url)
		if code != 200 || body != "good" {
			t.Fatalf("request %d: %d %q; connect failures must be retried", i, code, body)
		}
		resp, err := http.Post(url, "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST with a body after a connect failure: %d", resp.StatusCode)
		}
	}
	for _, s := range p.Stats() {
		if s.ID == "dead" && (s.Failures == 0 || s.FailuresBy[Connect] != s.Failures) {
			t.Errorf("the dead backend's connect failures were not counted as such: %d, by reason %v", s.Failures, s.FailuresBy)
		}
	}
	testutil.Eventually(t, 2*time.Second, "in-flight back to 0", func() bool { return totalInFlight(p) == 0 })
}

func TestHTTPNoBackendIs503WithJSONReason(t *testing.T) {
	cases := []struct {
		name   string
		routes []Route
		reason string
	}{
		{"none configured", nil, "no backends configured"},
		{"all drained", []Route{{Backend: Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1, Drain: true}}}, "drained"},
		{"weight zero", []Route{{Backend: Backend{ID: "a", Address: "127.0.0.1:1", Weight: 0}}}, "weight 0"},
		{"all open", []Route{{Backend: Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1}, Down: true}}, "circuit is open"},
		{"all unreachable", []Route{route("a", testutil.FreeAddr(t)), route("b", testutil.FreeAddr(t))}, "every backend tried failed or refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, url := startHTTP(t, DefaultConfig(), tc.routes, nil)
			code, body, h := get(t, url)
			if code != http.StatusServiceUnavailable {
				t.Fatalf("status %d, want 503 (body %s)", code, body)
			}
			if h.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", h.Get("Content-Type"))
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tc.reason) {
				t.Fatalf("body %s: want a JSON error naming %q", body, tc.reason)
			}
			// The reason, not the detail: backend addresses stay in the log.
			if strings.Contains(e.Error, "127.0.0.1") {
				t.Errorf("body %s names a backend address", body)
			}
			if h.Get("Retry-After") == "" {
				t.Error("a 503 without Retry-After")
			}
			if p.Rejected() != 1 {
				t.Errorf("rejected = %d, want 1", p.Rejected())
			}
			if n := totalInFlight(p); n != 0 {
				t.Errorf("in-flight %d after a rejected request", n)
			}
		})
	}
}

func TestHTTPInFlightExactUnderAbortAndTimeout(t *testing.T) {
	var inHandler sync.WaitGroup
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inHandler.Done()
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer be.Close()
	cfg := DefaultConfig()
	cfg.ResponseTimeout = 200 * time.Millisecond
	p, url := startHTTP(t, cfg, []Route{route("slow", hostPort(be.URL))}, nil)

	// Backend timeout: the proxy answers 504 and releases the slot.
	inHandler.Add(1)
	code, _, _ := get(t, url)
	if code != http.StatusGatewayTimeout {
		t.Fatalf("backend timeout: status %d, want 504", code)
	}
	testutil.Eventually(t, 2*time.Second, "in-flight 0 after a backend timeout", func() bool { return totalInFlight(p) == 0 })
	if s := p.Stats()[0]; s.FailuresBy[Timeout] != 1 || s.Failures != 1 {
		t.Errorf("a backend timeout counted as %d failures, by reason %v; want one timeout", s.Failures, s.FailuresBy)
	}

	// Client aborts while the backend works: the slot is released too.
	cfg.ResponseTimeout = 10 * time.Second
	p2, url2 := startHTTP(t, cfg, []Route{route("slow", hostPort(be.URL))}, nil)
	const n = 8
	inHandler.Add(n)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", url2, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	inHandler.Wait()
	if got := totalInFlight(p2); got != n {
		t.Fatalf("in-flight %d while %d requests wait on the backend", got, n)
	}
	cancel()
	wg.Wait()
	testutil.Eventually(t, 2*time.Second, "in-flight 0 after client aborts", func() bool { return totalInFlight(p2) == 0 })
}

func TestHTTPAbortMidBodyReleasesSlot(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := w.Write(make([]byte, 4096)); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(time.Millisecond)
		}
	}))
	defer be.Close()
	p, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 10000))
	if totalInFlight(p) != 1 {
		t.Fatalf("in-flight %d during a streaming response", totalInFlight(p))
	}
	resp.Body.Close()
	testutil.Eventually(t, 2*time.Second, "in-flight 0 after closing mid-body", func() bool { return totalInFlight(p) == 0 })
}

// upgradeBackend is a backend that switches every request to the given
// protocol and hands the raw connection (and the reader holding anything
// the client already sent) to serve.
func upgradeBackend(t *testing.T, proto string, serve func(conn net.Conn, brw *bufio.ReadWriter)) *httptest.Server {
	t.Helper()
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != proto {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + proto + "\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		serve(conn, brw)
	}))
	t.Cleanup(be.Close)
	return be
}

// dialUpgrade opens a tunnel through the proxy at url and returns the
// client's connection and the reader past the 101 answer.
func dialUpgrade(t *testing.T, url, proto string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", hostPort(url))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprint(conn, "GET /tunnel HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: "+proto+"\r\n\r\n")
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade response %v %v", resp, err)
	}
	return conn, br
}

func TestHTTPUpgradePassesThrough(t *testing.T) {
	be := upgradeBackend(t, "echo", func(conn net.Conn, brw *bufio.ReadWriter) { io.Copy(conn, brw) })
	p, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	conn, br := dialUpgrade(t, url, "echo")
	if totalInFlight(p) != 1 {
		t.Errorf("an upgraded connection must count as in flight: %d", totalInFlight(p))
	}
	fmt.Fprint(conn, "ping")
	buf := make([]byte, 4)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo over the upgraded connection: %q %v", buf, err)
	}
	conn.Close()
	testutil.Eventually(t, 2*time.Second, "in-flight 0 after the upgraded connection closed", func() bool { return totalInFlight(p) == 0 })
}

// fakeCircuit records outcomes and can refuse.
type fakeCircuit struct {
	refuse          atomic.Bool
	ok, failed, can atomic.Int64
}

func (c *fakeCircuit) Allow() (bool, bool) { return !c.refuse.Load(), false }
func (c *fakeCircuit) Done(trial, success bool) {
	if success {
		c.ok.Add(1)
	} else {
		c.failed.Add(1)
	}
}
func (c *fakeCircuit) Cancel(bool) { c.can.Add(1) }

func TestHTTPCircuitSeesOutcomes(t *testing.T) {
	fails := namedBackend(t, "x")
	errBackend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", 500)
	}))
	defer errBackend.Close()
	circuits := map[string]*fakeCircuit{"ok": {}, "err": {}, "refusing": {}}
	circuits["refusing"].refuse.Store(true)
	cfg := DefaultConfig()
	cfg.Algorithm = pick.RoundRobin
	p, url := startHTTP(t, cfg, []Route{route("ok", hostPort(fails.URL)), route("err", hostPort(errBackend.URL)), route("refusing", hostPort(fails.URL))},
		func(id string) Circuit { return circuits[id] })
	for i := 0; i < 30; i++ {
		get(t, url)
	}
	testutil.Eventually(t, 2*time.Second, "outcomes reported", func() bool {
		return circuits["ok"].ok.Load()+circuits["err"].failed.Load() == 30
	})
	if circuits["ok"].failed.Load() != 0 || circuits["err"].ok.Load() != 0 {
		t.Errorf("2xx must count as success and 5xx as failure")
	}
	testutil.Eventually(t, 2*time.Second, "stats of every answer", func() bool { return totalInFlight(p) == 0 })
	for _, s := range p.Stats() {
		want := uint64(0)
		if s.ID == "err" {
			want = s.Requests
		}
		if s.FailuresBy[Status5xx] != want || s.Failures != want {
			t.Errorf("%s: %d of %d requests counted as failures, by reason %v; want %d answered 5xx", s.ID, s.Failures, s.Requests, s.FailuresBy, want)
		}
	}
	if n := circuits["refusing"].ok.Load() + circuits["refusing"].failed.Load(); n != 0 {
		t.Errorf("a refusing circuit's backend got %d requests", n)
	}
}

func TestProxyConfigValidate(t *testing.T) {
	bad := []func(*Config){
		func(c *Config) { c.Mode = "udp" },
		func(c *Config) { c.Algorithm = "fastest" },
		func(c *Config) { c.MaxTries = 0 },
		func(c *Config) { c.MaxTries = pick.MaxTries + 1 },
		func(c *Config) { c.DialTimeout = 0 },
		func(c *Config) { c.ClientIdleTimeout = 0 },
		func(c *Config) { c.MaxConns = -1 },
		func(c *Config) { c.HeaderTimeout = 0 },
		func(c *Config) { c.KeepAliveTimeout = 0 },
		func(c *Config) { c.BackendIdleTimeout = 0 },
	}
	for i, mod := range bad {
		c := DefaultConfig()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: want an error", i)
		}
	}
	c := DefaultConfig()
	c.ClientIdleTimeout = -time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "-client-idle-timeout") {
		t.Errorf("a bad client idle timeout: %v, want an error naming -client-idle-timeout", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	if n := DefaultConfig().MaxConns; n < 64 || n > 10000 {
		t.Errorf("default connection limit %d: want 64..10000", n)
	}
}

func TestProbeSendsExactlyOneRequestPerTable(t *testing.T) {
	down, up := namedBackend(t, "down"), namedBackend(t, "up")
	cfg := DefaultConfig()
	p, url := startHTTP(t, cfg, nil, nil)
	p.SetRoutes([]Route{
		{Backend: Backend{ID: "down", Address: hostPort(down.URL), Weight: 1}, Down: true, Probe: true},
		route("up", hostPort(up.URL)),
	})
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		_, body, _ := get(t, url)
		seen[body]++
	}
	if seen["down"] != 1 || seen["up"] != 9 {
		t.Fatalf("one probe then normal traffic elsewhere: %v", seen)
	}
}

// A client whose request body is malformed gets 400, and the backend's
// circuit hears nothing: clients must not be able to open a healthy
// backend's circuit.
func TestMalformedClientBodyIsNotABackendFailure(t *testing.T) {
	be := namedBackend(t, "a")
	fc := &fakeCircuit{}
	p, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, func(string) Circuit { return fc })
	const n = 20
	for i := 0; i < n; i++ {
		conn, err := net.Dial("tcp", hostPort(url))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(conn, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(jsonError(t, string(b)), "client request body") {
			t.Fatalf("malformed chunked body: %d %s, want 400 naming the client's body", resp.StatusCode, b)
		}
	}
	testutil.Eventually(t, 3*time.Second, "in-flight 0", func() bool { return totalInFlight(p) == 0 })
	if fc.failed.Load() != 0 || fc.ok.Load() != 0 || fc.can.Load() != n {
		t.Errorf("circuit ok=%d failed=%d cancel=%d, want 0/0/%d", fc.ok.Load(), fc.failed.Load(), fc.can.Load(), n)
	}
	if f := p.Stats()[0].Failures; f != 0 {
		t.Errorf("stats count %d backend failures", f)
	}
}

// trialCircuit admits every request as the half-open trial.
type trialCircuit struct {
	fakeCircuit
	trials atomic.Int64 // Done calls for a trial
}

func (c *trialCircuit) Allow() (bool, bool) { return true, true }
func (c *trialCircuit) Done(trial, success bool) {
	if trial {
		c.trials.Add(1)
	}
	c.fakeCircuit.Done(trial, success)
}

// The half-open trial's outcome is known when the answer's headers arrive;
// a streaming answer must not keep the backend on trial until it ends.
func TestTrialReportedWhenHeadersArrive(t *testing.T) {
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
	}))
	defer be.Close()
	defer close(release)
	tc := &trialCircuit{}
	p, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, func(string) Circuit { return tc })
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("stream: %q %v", line, err)
	}
	if tc.trials.Load() != 1 || tc.ok.Load() != 1 {
		t.Fatalf("trial reports %d (ok %d) while the answer streams, want 1 success", tc.trials.Load(), tc.ok.Load())
	}
	if totalInFlight(p) != 1 {
		t.Errorf("in-flight %d while the answer streams, want 1", totalInFlight(p))
	}
}

// A client that announces a body and then stalls is cut off after
// ClientIdleTimeout, releasing the backend connection and the slot; the
// backend is not blamed.
func TestStalledClientBodyReleasesSlot(t *testing.T) {
	be := namedBackend(t, "a")
	cfg := DefaultConfig()
	cfg.ClientIdleTimeout = 200 * time.Millisecond
	fc := &fakeCircuit{}
	p, url := startHTTP(t, cfg, []Route{route("a", hostPort(be.URL))}, func(string) Circuit { return fc })
	conn, err := net.Dial("tcp", hostPort(url))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
	testutil.Eventually(t, 2*time.Second, "the request in flight", func() bool { return totalInFlight(p) == 1 })
	testutil.Eventually(t, 3*time.Second, "the stalled client cut off", func() bool { return totalInFlight(p) == 0 })
	if fc.failed.Load() != 0 || p.Stats()[0].Failures != 0 {
		t.Errorf("a stalled client counted as a backend failure (circuit %d, stats %d)", fc.failed.Load(), p.Stats()[0].Failures)
	}
}

// A client that stops reading a large answer is cut off after
// ClientIdleTimeout, releasing the backend connection and the slot.
func TestNonReadingClientReleasesSlot(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 64<<20))
	}))
	defer be.Close()
	cfg := DefaultConfig()
	cfg.ClientIdleTimeout = 200 * time.Millisecond
	p, url := startHTTP(t, cfg, []Route{route("a", hostPort(be.URL))}, nil)
	conn, err := net.Dial("tcp", hostPort(url))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	testutil.Eventually(t, 2*time.Second, "the request in flight", func() bool { return totalInFlight(p) == 1 })
	testutil.Eventually(t, 5*time.Second, "the non-reading client cut off", func() bool { return totalInFlight(p) == 0 })
}

// ClientIdleTimeout counts silence only: an upload or a download that keeps
// moving may take far longer, and a backend may think for longer than it
// once the body is in.
func TestClientIdleTimeoutCountsOnlySilence(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/think":
			time.Sleep(600 * time.Millisecond) // the backend's pace, not a wait for the test
		case "/stream":
			for i := 0; i < 8; i++ {
				fmt.Fprintf(w, "%d\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(100 * time.Millisecond)
			}
			return
		}
		fmt.Fprint(w, n)
	}))
	defer be.Close()
	cfg := DefaultConfig()
	cfg.ClientIdleTimeout = 300 * time.Millisecond
	_, url := startHTTP(t, cfg, []Route{route("a", hostPort(be.URL))}, nil)
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 8; i++ { // 800 ms of upload, 100 ms apart
			pw.Write(make([]byte, 16<<10))
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	if code, body := post(t, url, pr); code != 200 || body != fmt.Sprint(8*16<<10) {
		t.Fatalf("steady upload longer than the idle timeout: %d %q", code, body)
	}
	if code, body := post(t, url+"/think", strings.NewReader("x")); code != 200 || body != "1" {
		t.Fatalf("backend thinking longer than the client idle timeout: %d %q", code, body)
	}
	if code, body, _ := get(t, url+"/stream"); code != 200 || body != "0\n1\n2\n3\n4\n5\n6\n7\n" {
		t.Fatalf("steady download longer than the idle timeout: %d %q", code, body)
	}
}

// An upgraded connection (WebSocket) with no bytes either way for
// IdleTimeout is closed, as a tcp-mode one is; traffic in one direction
// alone keeps it open.
func TestUpgradedConnectionIdleTimeout(t *testing.T) {
	// Swallow everything, answer "ping" with "pong": the client alone
	// talks until it pings.
	be := upgradeBackend(t, "echo", func(conn net.Conn, brw *bufio.ReadWriter) {
		buf := make([]byte, 4)
		for {
			if _, err := io.ReadFull(brw, buf[:1]); err != nil {
				return
			}
			if buf[0] == 'p' {
				if _, err := io.ReadFull(brw, buf[1:]); err != nil {
					return
				}
				conn.Write([]byte("pong"))
			}
		}
	})
	const idle = 300 * time.Millisecond
	cfg := DefaultConfig()
	cfg.IdleTimeout = idle
	p, url := startHTTP(t, cfg, []Route{route("a", hostPort(be.URL))}, nil)
	conn, br := dialUpgrade(t, url, "echo")
	// Three idle periods of client-only traffic.
	for end := time.Now().Add(3 * idle); time.Now().Before(end); time.Sleep(idle / 4) {
		if _, err := conn.Write([]byte("x")); err != nil {
			t.Fatalf("tunnel closed while the client was sending: %v", err)
		}
	}
	fmt.Fprint(conn, "ping")
	buf := make([]byte, 4)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("tunnel after one-way traffic: %q %v; want it still open", buf, err)
	}
	// Now silence: the proxy closes the tunnel.
	quiet := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read a byte from a silent tunnel")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("tunnel still open 5 s after going silent (idle timeout %v)", idle)
	}
	if took := time.Since(quiet); took < idle {
		t.Errorf("tunnel closed %v after going silent, before the idle timeout %v", took, idle)
	}
	testutil.Eventually(t, 2*time.Second, "in-flight 0 after the idle tunnel closed", func() bool { return totalInFlight(p) == 0 })
}

// A client that stops reading a tunnel whose backend keeps talking must not
// hold the backend forever: the write to it stalls and the tunnel closes.
func TestUpgradedConnectionClosesWhenClientStopsReading(t *testing.T) {
	be := upgradeBackend(t, "stream", func(conn net.Conn, _ *bufio.ReadWriter) {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := conn.Write(chunk); err != nil {
				return
			}
		}
	})
	cfg := DefaultConfig()
	cfg.IdleTimeout, cfg.ClientIdleTimeout = 300*time.Millisecond, 300*time.Millisecond
	p, url := startHTTP(t, cfg, []Route{route("a", hostPort(be.URL))}, nil)
	dialUpgrade(t, url, "stream")
	if n := totalInFlight(p); n != 1 {
		t.Fatalf("in flight %d with the tunnel open, want 1", n)
	}
	// Read nothing more: the backend's stream fills the buffers.
	testutil.Eventually(t, 10*time.Second, "the tunnel of a client that reads nothing to close", func() bool { return totalInFlight(p) == 0 })
}

// A backend that half-closes a tunnel (finished sending, still reading)
// must still receive what the client sends afterwards.
func TestUpgradedConnectionPassesHalfClose(t *testing.T) {
	got := make(chan string, 1)
	be := upgradeBackend(t, "tcp", func(conn net.Conn, brw *bufio.ReadWriter) {
		conn.Write([]byte("hello"))
		conn.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(brw)
		got <- string(b)
	})
	_, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	conn, br := dialUpgrade(t, url, "tcp")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(br); err != nil || string(b) != "hello" {
		t.Fatalf("backend's output up to its half-close: %q %v", b, err)
	}
	fmt.Fprint(conn, "upload-after-backend-eof")
	conn.(*net.TCPConn).CloseWrite()
	select {
	case b := <-got:
		if b != "upload-after-backend-eof" {
			t.Errorf("backend received %q after its half-close, want the client's upload", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the backend never saw the end of the client's upload")
	}
}
