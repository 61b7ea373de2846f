package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// connCounter follows a test backend's connections through ConnState.
type connCounter struct{ opened, closed atomic.Int32 }

func (cc *connCounter) open() int32 { return cc.opened.Load() - cc.closed.Load() }

// countedBackend starts a backend whose connections are counted. prep may
// adjust the server before it starts.
func countedBackend(t *testing.T, h http.HandlerFunc, prep func(*http.Server)) (*httptest.Server, *connCounter) {
	t.Helper()
	cc := &connCounter{}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			cc.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			cc.closed.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if prep != nil {
		prep(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, cc
}

// rawBackend serves each connection with handle, which gets every request
// read from it and answers it itself (or returns false to drop the
// connection without answering).
func rawBackend(t *testing.T, handle func(conn int, req *http.Request, w io.Writer) bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(conns.Add(1))
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if !handle(n, req, c) {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func post(t *testing.T, url string, body io.Reader) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/octet-stream", body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A backend with a keep-alive timeout closes the pooled connection; a POST
// with a body that comes later must go out on a fresh one, not fail.
func TestPostAfterBackendClosedIdleConn(t *testing.T) {
	be, cc := countedBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, "ok")
	}, func(s *http.Server) { s.IdleTimeout = 50 * time.Millisecond })
	fc := &fakeCircuit{}
	p, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, func(string) Circuit { return fc })
	if code, _, _ := get(t, url); code != 200 {
		t.Fatalf("GET: %d", code)
	}
	testutil.Eventually(t, 3*time.Second, "the backend closing the idle connection", func() bool { return cc.closed.Load() == 1 })
	if code, body := post(t, url, strings.NewReader("payload")); code != 200 || body != "ok" {
		t.Fatalf("POST after the backend closed the pooled connection: %d %q", code, body)
	}
	if fc.failed.Load() != 0 || p.Stats()[0].Failures != 0 {
		t.Errorf("circuit failures %d, stats failures %d: want none", fc.failed.Load(), p.Stats()[0].Failures)
	}
}

// Pooled connections idle for longer than the pool's idle timeout are not
// used again (reuse within it: TestKeepAliveAcrossResponseKinds).
func TestPooledConnExpires(t *testing.T) {
	be, cc := countedBackend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }, nil)
	p, err := New(DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.SetRoutes([]Route{route("a", hostPort(be.URL))})
	p.http.transport.idleTimeout = time.Nanosecond // every pooled connection is stale
	srv := httptest.NewServer(p)
	defer srv.Close()
	defer p.CloseIdle()
	get(t, srv.URL)
	get(t, srv.URL)
	if n := cc.opened.Load(); n != 2 {
		t.Fatalf("a request after the idle timeout used an expired connection (%d opened, want 2)", n)
	}
	testutil.Eventually(t, 3*time.Second, "the expired connection closed", func() bool { return cc.closed.Load() == 1 })
}

// A request that fails on a reused connection before any answer arrives is
// sent again (once, on a fresh connection) only when that is safe: an
// idempotent method or an idempotency key. A plain POST may have had its
// effect and must not be repeated.
func TestRetryOnReusedConnOnlyWhenReplayable(t *testing.T) {
	cases := []struct {
		name   string
		method string
		header string
		want   int   // status the client gets
		seen   int32 // times the backend saw the request
	}{
		{"GET is retried", "GET", "", 200, 2},
		{"HEAD is retried", "HEAD", "", 200, 2},
		{"POST is not", "POST", "", 502, 1},
		{"DELETE is not", "DELETE", "", 502, 1},
		{"POST with Idempotency-Key is", "POST", "Idempotency-Key", 200, 2},
		{"PUT with X-Idempotency-Key is", "PUT", "X-Idempotency-Key", 200, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var seen atomic.Int32
			// Each connection answers its first request, then drops the
			// connection on the test's request after reading it (a crash
			// or restart after the side effect).
			addr := rawBackend(t, func(conn int, req *http.Request, w io.Writer) bool {
				if req.URL.Path == "/effect" {
					if seen.Add(1) == 1 {
						return false
					}
				}
				io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return true
			})
			fc := &fakeCircuit{}
			_, url := startHTTP(t, DefaultConfig(), []Route{route("a", addr)}, func(string) Circuit { return fc })
			get(t, url) // leaves a pooled connection
			req, _ := http.NewRequest(tc.method, url+"/effect", nil)
			if tc.header != "" {
				req.Header.Set(tc.header, "k-1")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want || seen.Load() != tc.seen {
				t.Fatalf("%s: client got %d, backend saw it %d times; want %d, %d", tc.method, resp.StatusCode, seen.Load(), tc.want, tc.seen)
			}
		})
	}
}

// The one retry goes out on a fresh connection: a request that kills every
// connection it arrives on must not walk the whole idle pool.
func TestRetryUsesFreshConnNotPool(t *testing.T) {
	var hits atomic.Int32
	release := make(chan struct{})
	var waiting atomic.Int32
	be, _ := countedBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			hits.Add(1)
			panic(http.ErrAbortHandler)
		}
		waiting.Add(1)
		<-release
		fmt.Fprint(w, "ok")
	}, nil)
	_, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	// Fill the pool with 20 idle connections.
	const n = 20
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{}}
			if r, err := c.Get(url); err == nil {
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
			}
		}()
	}
	testutil.Eventually(t, 5*time.Second, "20 requests at the backend", func() bool { return waiting.Load() == n })
	close(release)
	wg.Wait()
	for _, method := range []string{"GET", "POST"} {
		hits.Store(0)
		req, _ := http.NewRequest(method, url+"/panic", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := int32(1)
		if method == "GET" {
			want = 2
		}
		if resp.StatusCode != 502 || hits.Load() != want {
			t.Errorf("%s to a handler that drops the connection: %d, handler ran %d times; want 502, %d", method, resp.StatusCode, hits.Load(), want)
		}
	}
}

// ResponseTimeout bounds the wait for the answer once the request is out,
// not the upload, however slow the client sends.
func TestSlowUploadNotBoundByResponseTimeout(t *testing.T) {
	stuck := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/stuck" {
			<-stuck
		}
		fmt.Fprint(w, n)
	}))
	defer be.Close()
	defer close(stuck) // before Close, which waits for the handler
	cfg := DefaultConfig()
	cfg.ResponseTimeout = 300 * time.Millisecond
	fc := &fakeCircuit{}
	_, url := startHTTP(t, cfg, []Route{route("a", hostPort(be.URL))}, func(string) Circuit { return fc })
	upload := func() io.Reader {
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < 8; i++ { // 800 ms of steady progress
				pw.Write(bytes.Repeat([]byte("x"), 64<<10))
				time.Sleep(100 * time.Millisecond)
			}
			pw.Close()
		}()
		return pr
	}
	if code, body := post(t, url, upload()); code != 200 || body != fmt.Sprint(8*64<<10) {
		t.Fatalf("upload slower than ResponseTimeout: %d %q", code, body)
	}
	// Once the upload is in, the timeout applies.
	start := time.Now()
	if code, _ := post(t, url+"/stuck", strings.NewReader("x")); code != http.StatusGatewayTimeout {
		t.Fatalf("backend silent after the upload: %d, want 504", code)
	}
	if d := time.Since(start); d < cfg.ResponseTimeout {
		t.Errorf("504 after %v, before the response timeout", d)
	}
	if fc.failed.Load() != 1 {
		t.Errorf("circuit failures %d, want 1 (the timeout only)", fc.failed.Load())
	}
}

// A backend that answers without reading a large upload (413, 401): the
// answer reaches the client, and the connection is not reused.
func TestEarlyAnswerDuringUploadReachesClient(t *testing.T) {
	be, cc := countedBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/upload" {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		fmt.Fprint(w, "ok")
	}, nil)
	p, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	code, body := post(t, url+"/upload", bytes.NewReader(make([]byte, 32<<20)))
	if code != 413 || strings.TrimSpace(body) != "too large" {
		t.Fatalf("backend's early 413 became %d %q", code, body)
	}
	testutil.Eventually(t, 3*time.Second, "in-flight 0", func() bool { return totalInFlight(p) == 0 })
	if code, _, _ := get(t, url); code != 200 {
		t.Fatalf("next request: %d", code)
	}
	if n := cc.opened.Load(); n != 2 {
		t.Errorf("%d backend connections, want 2: the one with a half-sent body must not be reused", n)
	}
}

// A full-duplex backend answers while it reads; the request body must keep
// flowing while the answer streams back.
func TestFullDuplexBackendStreamsWhileUploading(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		io.Copy(w, r.Body)
	}))
	defer be.Close()
	cfg := DefaultConfig()
	cfg.ResponseTimeout = 2 * time.Second
	_, url := startHTTP(t, cfg, []Route{route("a", hostPort(be.URL))}, nil)
	client := &http.Client{Timeout: 20 * time.Second}
	const size = 16 << 20
	resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(make([]byte, size)))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || n != size || err != nil {
		t.Fatalf("full-duplex echo: %d, %d of %d bytes, %v", resp.StatusCode, n, size, err)
	}
}

// A 101 answer that switches to a protocol the client did not ask for (or
// to any, unasked) is refused; the slot, the connection and the circuit's
// outcome are not leaked.
func TestUpgradeMismatchReleasesSlot(t *testing.T) {
	be, cc := countedBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(io.Discard, conn)
	}, nil)
	fc := &fakeCircuit{}
	p, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, func(string) Circuit { return fc })
	for _, hdr := range []string{"Connection: Upgrade\r\nUpgrade: websocket\r\n", ""} {
		conn, err := net.Dial("tcp", hostPort(url))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\n%s\r\n", hdr)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("upgrade request %q answered with another protocol: %d, want 502", hdr, resp.StatusCode)
		}
		conn.Close()
	}
	testutil.Eventually(t, 3*time.Second, "in-flight 0", func() bool { return totalInFlight(p) == 0 })
	testutil.Eventually(t, 3*time.Second, "backend connections closed", func() bool { return cc.open() == 0 })
	if fc.failed.Load() != 2 {
		t.Errorf("circuit failures %d, want 2", fc.failed.Load())
	}
}

// 103 Early Hints (and other interim answers) reach the client before the
// final answer.
func TestEarlyHintsForwarded(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		fmt.Fprint(w, "ok")
	}))
	defer be.Close()
	_, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	conn, err := net.Dial("tcp", hostPort(url))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusEarlyHints || resp.Header.Get("Link") != "</style.css>; rel=preload" {
		t.Fatalf("first answer %d %v, want 103 with the Link header", resp.StatusCode, resp.Header)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("final answer %d %q", resp.StatusCode, b)
	}
}

// A faulty backend cannot make the proxy buffer without bound: at most 5
// interim answers, at most 1 MiB of headers.
func TestBackendHeaderLimits(t *testing.T) {
	cases := []struct {
		name   string
		answer string
	}{
		{"six interim answers", strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"2 MiB of headers", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\nContent-Length: 0\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawBackend(t, func(_ int, _ *http.Request, w io.Writer) bool {
				io.WriteString(w, tc.answer)
				return false
			})
			p, url := startHTTP(t, DefaultConfig(), []Route{route("a", addr)}, nil)
			if code, _, _ := get(t, url); code != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", code)
			}
			testutil.Eventually(t, 3*time.Second, "in-flight 0", func() bool { return totalInFlight(p) == 0 })
		})
	}
}

// A backend that leaves the table takes its idle connections with it, and
// its busy ones are closed when their request ends.
func TestRemovedBackendConnsClosed(t *testing.T) {
	release := make(chan struct{})
	var waiting atomic.Int32
	be, cc := countedBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			waiting.Add(1)
			<-release
		}
		fmt.Fprint(w, "ok")
	}, nil)
	p, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	const n = 10
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{}}
			if r, err := c.Get(url + "/hold"); err == nil {
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
			}
		}()
	}
	testutil.Eventually(t, 5*time.Second, "10 requests at the backend", func() bool { return waiting.Load() == n })
	// Nine return to the pool; one is still busy when the backend goes.
	var busy sync.WaitGroup
	busy.Add(1)
	go func() {
		defer busy.Done()
		get(t, url+"/hold")
	}()
	testutil.Eventually(t, 5*time.Second, "the 11th request at the backend", func() bool { return waiting.Load() == n+1 })
	p.SetRoutes(nil)
	close(release)
	wg.Wait()
	busy.Wait()
	testutil.Eventually(t, 3*time.Second, "every backend connection closed", func() bool { return cc.open() == 0 })
}

// Connections are reused across every kind of complete answer, and not
// after an answer the client abandoned halfway.
func TestKeepAliveAcrossResponseKinds(t *testing.T) {
	be, cc := countedBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "100")
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.Header().Set("Etag", `"x"`)
			w.WriteHeader(304)
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			fmt.Fprint(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Sum", "42")
		case "/big":
			w.Write(make([]byte, 1<<20))
		default:
			fmt.Fprint(w, "plain")
		}
	}, nil)
	p, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	do := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for i := 0; i < 3; i++ {
		if r, b := do("HEAD", "/head"); r.StatusCode != 200 || b != "" {
			t.Errorf("HEAD %d %q", r.StatusCode, b)
		}
		if r, _ := do("GET", "/204"); r.StatusCode != 204 {
			t.Errorf("204: %d", r.StatusCode)
		}
		if r, _ := do("GET", "/304"); r.StatusCode != 304 {
			t.Errorf("304: %d", r.StatusCode)
		}
		if r, b := do("GET", "/trailer"); b != "body" || r.Trailer.Get("X-Sum") != "42" {
			t.Errorf("trailer: %q %v", b, r.Trailer)
		}
		if _, b := do("GET", "/plain"); b != "plain" {
			t.Errorf("plain: %q", b)
		}
	}
	if n := cc.opened.Load(); n != 1 {
		t.Errorf("15 sequential requests used %d backend connections, want 1", n)
	}
	resp, err := http.Get(url + "/big")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 1000))
	resp.Body.Close()
	testutil.Eventually(t, 3*time.Second, "in-flight 0 after the abandoned answer", func() bool { return totalInFlight(p) == 0 })
	for i := 0; i < 5; i++ {
		if _, b := do("GET", "/plain"); b != "plain" {
			t.Errorf("after an abandoned answer: %q", b)
		}
	}
	testutil.Eventually(t, 3*time.Second, "in-flight 0", func() bool { return totalInFlight(p) == 0 })
}

// jsonError decodes the proxy's {"error": ...} answers.
func jsonError(t *testing.T, body string) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("want a JSON error, got %q", body)
	}
	return e.Error
}
