package proxy

import (
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// TestLimitBoundsGoroutinesUnderAFlood opens many silent connections at a
// listener whose limit is full: the ones answered politely are capped
// (maxRefusing), the rest are closed at once, every one is counted, and
// the goroutines the flood costs stay bounded and then go away.
func TestLimitBoundsGoroutinesUnderAFlood(t *testing.T) {
	const limit, flood = 5, 300
	be := namedBackend(t, "a")
	cfg := DefaultConfig()
	cfg.MaxConns = limit
	p, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.SetRoutes([]Route{route("a", hostPort(be.URL))})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := p.Limit(raw)
	srv := &http.Server{Handler: p, ReadHeaderTimeout: time.Minute}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done; p.CloseIdle() })

	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", raw.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for range limit {
		_, _ = io.WriteString(dial(), "GET / HTTP/1.1\r\n") // never finished
	}
	testutil.Eventually(t, 5*time.Second, "the limit filled", func() bool { return p.ConnsOpen() == limit })
	// The server starts a held connection's goroutine after the listener
	// counted it: take the base once the count has held still for a while,
	// or a slow machine measures it one short.
	var base int
	testutil.Eventually(t, 5*time.Second, "a steady goroutine count", func() bool {
		before := runtime.NumGoroutine()
		time.Sleep(100 * time.Millisecond)
		base = runtime.NumGoroutine()
		return base == before
	})

	var conns []net.Conn
	for range flood {
		conns = append(conns, dial()) // silent: a refusal waits for its request
	}
	peak := runtime.NumGoroutine()
	testutil.Eventually(t, 5*time.Second, "every flood connection refused", func() bool { return p.ConnsRefused() == flood })
	if peak > base+maxRefusing+2 {
		t.Errorf("%d goroutines while %d connections flooded a full listener (%d before): want at most %d more", peak, flood, base, maxRefusing+2)
	}
	// Every flood connection ends: answered and closed, or closed at once.
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("a refused connection was not closed: %v", err)
		}
	}
	// The count is process-wide, so a loaded machine gets a generous bound,
	// and a failure shows who is still there.
	var after int
	deadline := time.Now().Add(15 * time.Second)
	for after = runtime.NumGoroutine(); after > base && time.Now().Before(deadline); after = runtime.NumGoroutine() {
		time.Sleep(testutil.Interval)
	}
	if after > base {
		var stacks strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		t.Fatalf("%d goroutines 15s after the flood, %d before it:\n%s", after, base, stacks.String())
	}
	t.Logf("goroutines: %d with the limit full, %d during a flood of %d, %d after", base, peak, flood, after)
}
