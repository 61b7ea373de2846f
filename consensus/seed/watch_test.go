package seed_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/thebalancer/balancer/consensus/consultest"
	"github.com/thebalancer/balancer/consensus/seed"
	"github.com/thebalancer/balancer/internal/testutil"
)

// source is what a consumer (the node) needs from either watcher.
type source interface {
	Fetch(ctx context.Context) ([]seed.Backend, uint64, error)
	Watch(ctx context.Context, out func([]seed.Backend)) error
}

var (
	_ source = (*seed.ServiceWatcher)(nil)
	_ source = (*seed.KVWatcher)(nil)
)

// within bounds every wait in these tests.
const within = 10 * time.Second

// logs records what a watcher logs and echoes it to the test log.
type logs struct {
	t  *testing.T
	mu sync.Mutex
	// guarded by mu
	msgs []string
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logs) WithGroup(string) slog.Handler            { return l }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	l.t.Logf("%s %s%s", r.Level, r.Message, b.String())
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}

// count reports how many records have a message starting with prefix.
func (l *logs) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// fast is DefaultConfig with test-sized timers.
func fast(t *testing.T) (seed.Config, *logs) {
	l := &logs{t: t}
	cfg := seed.DefaultConfig()
	cfg.WaitTime = 30 * time.Second // blocking queries wake on change; ctx ends them
	cfg.MinInterval = 10 * time.Millisecond
	cfg.BackoffMin = 20 * time.Millisecond
	cfg.BackoffMax = 160 * time.Millisecond
	cfg.Logger = slog.New(l)
	return cfg, l
}

func newClient(t *testing.T, s *consultest.Server, token string) *api.Client {
	t.Helper()
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	c, err := seed.NewClient(s.URL(), token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs w.Watch until the test ends and returns the sets it delivers.
// Cleanup cancels it and fails the test if Watch errs or does not return.
func start(t *testing.T, w source) <-chan []seed.Backend {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []seed.Backend)
	done := make(chan error, 1)
	go func() {
		done <- w.Watch(ctx, func(b []seed.Backend) {
			select {
			case ch <- b:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v, want nil", err)
			}
		case <-time.After(within):
			t.Errorf("Watch did not return within %v of cancel", within)
		}
	})
	return ch
}

// next returns the next set delivered.
func next(t *testing.T, ch <-chan []seed.Backend) []seed.Backend {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(within):
		t.Fatalf("no backend set within %v", within)
		return nil
	}
}

// expect asserts that the next set delivered is want.
func expect(t *testing.T, ch <-chan []seed.Backend, want ...seed.Backend) {
	t.Helper()
	got := next(t, ch)
	if !slices.Equal(got, want) || got == nil {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

// settled waits until the watcher has read the current state of what w
// watches: a query of it is held at the resource's current index (read
// with w.Fetch). A watcher that had not caught up would be held at a lower
// index, or not held at all.
func settled(t *testing.T, s *consultest.Server, w source) {
	t.Helper()
	_, idx, _ := w.Fetch(context.Background()) // an invalid document still reports its index
	testutil.Eventually(t, within, fmt.Sprintf("watcher held at index %d", idx), func() bool { return slices.Contains(s.Held(), idx) })
}

func TestServiceSeedsWithWeights(t *testing.T) {
	s := consultest.New(t)
	s.SetService("web",
		consultest.Instance{ID: "a", Address: "10.0.0.1", Port: 80, Weights: api.AgentWeights{Passing: 10, Warning: 2}},
		consultest.Instance{ID: "b", Address: "10.0.0.2", Port: 80, Weights: api.AgentWeights{Passing: 5, Warning: 3}, Status: consultest.Warning},
		consultest.Instance{ID: "c", Address: "10.0.0.3", Port: 80, Status: consultest.Critical},
		consultest.Instance{ID: "d", Port: 8080, NodeAddress: "10.0.1.4"}, // no weights registered: {1, 1}; node address
		consultest.Instance{ID: "e", Address: "10.0.0.5", Port: 80, Status: consultest.Maintenance},
		consultest.Instance{ID: "f", Address: "::1", Port: 443, Weights: api.AgentWeights{Passing: 50000, Warning: 1}},
	)
	cfg, _ := fast(t)
	w := seed.NewService(newClient(t, s, ""), "web", seed.WithConfig(cfg))
	want := []seed.Backend{
		{ID: "a", Address: "10.0.0.1:80", Weight: 10},
		{ID: "b", Address: "10.0.0.2:80", Weight: 3},
		{ID: "d", Address: "10.0.1.4:8080", Weight: 1},
		{ID: "f", Address: "[::1]:443", Weight: seed.MaxWeight},
	}

	got, idx, err := w.Fetch(context.Background())
	if err != nil || !slices.Equal(got, want) || idx != s.Index() {
		t.Fatalf("Fetch = %v, %d, %v; want %v at %d", got, idx, err, want, s.Index())
	}
	expect(t, start(t, w), want...)
}

func TestServiceChangesReachOut(t *testing.T) {
	s := consultest.New(t)
	a := consultest.Instance{ID: "a", Address: "10.0.0.1", Port: 80, Weights: api.AgentWeights{Passing: 4, Warning: 1}}
	b := consultest.Instance{ID: "b", Address: "10.0.0.2", Port: 80, Weights: api.AgentWeights{Passing: 6, Warning: 2}}
	s.SetService("web", a)
	cfg, _ := fast(t)
	w := seed.NewService(newClient(t, s, ""), "web", seed.WithConfig(cfg))
	ch := start(t, w)
	A := seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 4}
	B := seed.Backend{ID: "b", Address: "10.0.0.2:80", Weight: 6}
	expect(t, ch, A)

	s.AddInstance("web", b) // an instance appears
	expect(t, ch, A, B)

	// Index moves without a change: nothing is delivered, so the next set
	// out sees is the one after the real change below.
	settled(t, s, w)
	s.SetService("web", a, b)
	s.SetService("other", consultest.Instance{ID: "x", Port: 1})
	settled(t, s, w)

	b.Weights.Passing = 9 // weight change
	s.AddInstance("web", b)
	expect(t, ch, A, seed.Backend{ID: "b", Address: "10.0.0.2:80", Weight: 9})

	s.SetStatus("web", "b", consultest.Warning) // warning: Warning weight
	expect(t, ch, A, seed.Backend{ID: "b", Address: "10.0.0.2:80", Weight: 2})

	s.SetStatus("web", "b", consultest.Critical) // critical: excluded
	expect(t, ch, A)

	s.SetStatus("web", "b", consultest.Passing)
	expect(t, ch, A, seed.Backend{ID: "b", Address: "10.0.0.2:80", Weight: 9})

	s.RemoveInstance("web", "a") // an instance disappears
	expect(t, ch, seed.Backend{ID: "b", Address: "10.0.0.2:80", Weight: 9})
	// The last instance going away: TestServiceWithoutInstancesKeepsLastSet.
}

func TestServiceTags(t *testing.T) {
	s := consultest.New(t)
	s.SetService("web",
		consultest.Instance{ID: "a", Port: 80, Tags: []string{"blue", "http"}},
		consultest.Instance{ID: "b", Port: 81, Tags: []string{"green", "http"}},
	)
	cfg, _ := fast(t)
	w := seed.NewService(newClient(t, s, ""), "web", seed.WithConfig(cfg), seed.WithTags("BLUE", "http"))
	expect(t, start(t, w), seed.Backend{ID: "a", Address: "127.0.0.1:80", Weight: 1})
}

const (
	doc1 = `{"backends":[{"id":"a","address":"10.0.0.1:80","weight":5},{"id":"b","address":"10.0.0.2:80"}]}`
	doc2 = `{"backends":[{"id":"a","address":"10.0.0.1:80","weight":7}]}`
	doc3 = `{"backends":[{"id":"c","address":"10.0.0.3:80","weight":2}]}`
	bad  = `{"backends":[{"id":"a","address":"10.0.0.1:80","weight":-1}]}`
)

func TestKVSeedAndChange(t *testing.T) {
	s := consultest.New(t)
	s.PutKV("balancer/backends", []byte(doc1))
	cfg, logs := fast(t)
	w := seed.NewKV(newClient(t, s, ""), "balancer/backends", seed.WithConfig(cfg))
	A5 := seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 5}
	B1 := seed.Backend{ID: "b", Address: "10.0.0.2:80", Weight: 1}

	got, _, err := w.Fetch(context.Background())
	if err != nil || !slices.Equal(got, []seed.Backend{A5, B1}) {
		t.Fatalf("Fetch = %v, %v", got, err)
	}
	ch := start(t, w)
	expect(t, ch, A5, B1)

	s.PutKV("balancer/backends", []byte(doc2))
	expect(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 7})

	// An invalid document is logged once and not delivered: the last good
	// set stays, and the next set out sees is the next valid document.
	s.PutKV("balancer/backends", []byte(bad))
	settled(t, s, w)
	s.PutKV("unrelated", []byte("x")) // KV index moves, same bad document
	settled(t, s, w)
	if n := logs.count("backend document rejected"); n != 1 {
		t.Fatalf("rejection logged %d times, want 1", n)
	}
	if _, idx, err := w.Fetch(context.Background()); !errors.Is(err, seed.ErrInvalidDocument) || idx == 0 ||
		!strings.Contains(err.Error(), "backends[0].weight: -1 out of range") {
		t.Fatalf("Fetch of the bad document: %d, %v", idx, err)
	}
	s.PutKV("balancer/backends", []byte(doc3))
	expect(t, ch, seed.Backend{ID: "c", Address: "10.0.0.3:80", Weight: 2})
	// The key deleted: TestKVKeyMissingKeepsLastSet.
}

func TestKVMissingKeyThenAppears(t *testing.T) {
	s := consultest.New(t)
	cfg, _ := fast(t)
	w := seed.NewKV(newClient(t, s, ""), "balancer/backends", seed.WithConfig(cfg))
	got, idx, err := w.Fetch(context.Background())
	if !errors.Is(err, seed.ErrKeyNotFound) || got != nil || idx < 1 {
		t.Fatalf("Fetch of a missing key = %v, %d, %v; want ErrKeyNotFound and an index", got, idx, err)
	}
	ch := start(t, w)
	settled(t, s, w) // a missing key is not an empty set: nothing delivered
	s.PutKV("balancer/backends", []byte(doc2))
	expect(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 7})
}

func TestConsulDownAtStart(t *testing.T) {
	s := consultest.New(t)
	s.SetService("web", consultest.Instance{ID: "a", Address: "10.0.0.1", Port: 80})
	s.Stop() // nothing listens: connection refused
	cfg, logs := fast(t)
	ch := start(t, seed.NewService(newClient(t, s, ""), "web", seed.WithConfig(cfg)))

	testutil.Eventually(t, within, "three failed attempts logged", func() bool { return logs.count("consul query failed") >= 3 })
	select {
	case b := <-ch:
		t.Fatalf("delivered %v while Consul was down", b)
	default:
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	expect(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 1})
	testutil.Eventually(t, within, "recovery logged", func() bool { return logs.count("consul query succeeded again") == 1 })
}

func TestOutageKeepsLastSet(t *testing.T) {
	s := consultest.New(t)
	s.PutKV("k", []byte(doc2))
	cfg, logs := fast(t)
	w := seed.NewKV(newClient(t, s, ""), "k", seed.WithConfig(cfg))
	ch := start(t, w)
	expect(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 7})

	// 500 No cluster leader, held query included.
	settled(t, s, w)
	s.SetDown(true)
	testutil.Eventually(t, within, "errors logged", func() bool { return logs.count("consul query failed") >= 2 })
	s.PutKV("k", []byte(doc1))
	s.SetDown(false)
	expect(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 5}, seed.Backend{ID: "b", Address: "10.0.0.2:80", Weight: 1})

	// Connection refused, held query dropped.
	settled(t, s, w)
	s.Stop()
	before := logs.count("consul query failed")
	testutil.Eventually(t, within, "errors logged", func() bool { return logs.count("consul query failed") >= before+2 })
	s.PutKV("k", []byte(doc3))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	expect(t, ch, seed.Backend{ID: "c", Address: "10.0.0.3:80", Weight: 2})
}

func TestNoBusyLoop(t *testing.T) {
	const window = time.Second

	t.Run("index does not move", func(t *testing.T) {
		s := consultest.New(t)
		s.PutKV("k", []byte(doc2))
		cfg, _ := fast(t)
		cfg.WaitTime = 20 * time.Millisecond // every query times out quickly
		cfg.MinInterval = 100 * time.Millisecond
		ch := start(t, seed.NewKV(newClient(t, s, ""), "k", seed.WithConfig(cfg)))
		expect(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 7})
		n := requestsOver(t, s.Requests, window)
		if max := int64(window/cfg.MinInterval) + 2; n > max || n < 2 {
			t.Fatalf("%d requests in %v, want 2..%d (one per MinInterval)", n, window, max)
		}
	})

	t.Run("consul fails", func(t *testing.T) {
		s := consultest.New(t)
		s.SetDown(true)
		cfg, logs := fast(t)
		cfg.BackoffMin = 50 * time.Millisecond
		cfg.BackoffMax = 200 * time.Millisecond
		start(t, seed.NewService(newClient(t, s, ""), "web", seed.WithConfig(cfg)))
		testutil.Eventually(t, within, "first failure", func() bool { return s.Requests() > 0 })
		logged := logs.count("consul query failed")
		n := requestsOver(t, s.Requests, window)
		// Backoff 50, 100, 200, 200, ... ms: at most 1 + window/50ms even
		// if it never grew; a busy loop would send thousands.
		if n > int64(window/cfg.BackoffMin)+1 || n < 2 {
			t.Fatalf("%d requests in %v while failing", n, window)
		}
		if l := int64(logs.count("consul query failed") - logged); l > n+1 {
			t.Fatalf("%d error lines for %d failed requests: want at most one per attempt", l, n)
		}
	})

	t.Run("no X-Consul-Index", func(t *testing.T) {
		// A proxy that strips X-Consul-Index: LastIndex is 0. The watcher
		// must send index=1 (blocking), never index=0 in a loop.
		var reqs, zero atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if reqs.Add(1) > 1 && r.URL.Query().Get("index") != "1" {
				zero.Add(1)
			}
			w.Header().Set("X-Consul-LastContact", "0")
			w.Header().Set("X-Consul-KnownLeader", "true")
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte("[]"))
		}))
		t.Cleanup(srv.Close)
		t.Setenv("CONSUL_HTTP_ADDR", "")
		t.Setenv("CONSUL_HTTP_TOKEN", "")
		c, err := seed.NewClient(srv.URL, "")
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := fast(t)
		cfg.MinInterval = 100 * time.Millisecond
		// Every reply is an empty service, which is never delivered.
		start(t, seed.NewService(c, "web", seed.WithConfig(cfg)))
		testutil.Eventually(t, within, "a first query", func() bool { return reqs.Load() > 0 })
		n := requestsOver(t, reqs.Load, window)
		if max := int64(window/cfg.MinInterval) + 2; n > max {
			t.Fatalf("%d requests in %v, want at most %d", n, window, max)
		}
		if zero.Load() != 0 {
			t.Fatalf("%d queries after the first did not carry index=1", zero.Load())
		}
	})
}

// requestsOver counts how much counter grows over window. The window is
// the measurement itself, not a wait for something to happen.
func requestsOver(t *testing.T, counter func() int64, window time.Duration) int64 {
	t.Helper()
	before := counter()
	time.Sleep(window)
	return counter() - before
}

func TestIndexGoesBackwards(t *testing.T) {
	s := consultest.New(t)
	for range 20 {
		s.PutKV("k", []byte(doc1))
	}
	s.PutKV("k", []byte(doc2))
	cfg, logs := fast(t)
	cfg.WaitTime = 300 * time.Millisecond // the held query sees the restore when it times out
	w := seed.NewKV(newClient(t, s, ""), "k", seed.WithConfig(cfg))
	ch := start(t, w)
	expect(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 7})

	settled(t, s, w)
	s.ResetIndex(2) // a snapshot restore: every index is now far below the watcher's
	testutil.Eventually(t, within, "reset logged", func() bool { return logs.count("consul index went backwards") >= 1 })
	s.PutKV("k", []byte(doc3)) // index 3: lower than before the restore, still seen
	expect(t, ch, seed.Backend{ID: "c", Address: "10.0.0.3:80", Weight: 2})
}

func TestToken(t *testing.T) {
	s := consultest.New(t)
	s.SetToken("s3cret")
	s.PutKV("k", []byte(doc2))
	want := seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 7}

	cfg, _ := fast(t)
	expect(t, start(t, seed.NewKV(newClient(t, s, "s3cret"), "k", seed.WithConfig(cfg))), want)

	// Without the token: 403, logged and retried until the ACL allows it.
	cfg, logs := fast(t)
	ch := start(t, seed.NewKV(newClient(t, s, ""), "k", seed.WithConfig(cfg)))
	testutil.Eventually(t, within, "403 logged", func() bool { return logs.count("consul query failed") >= 2 })
	s.SetToken("")
	expect(t, ch, want)
}

func TestNewClientFromEnvironment(t *testing.T) {
	s := consultest.New(t)
	s.SetToken("env-token")
	s.PutKV("k", []byte(doc2))

	t.Setenv("CONSUL_HTTP_ADDR", s.URL())
	t.Setenv("CONSUL_HTTP_TOKEN", "env-token")
	c, err := seed.NewClient("", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := seed.NewKV(c, "k").Fetch(context.Background()); err != nil || len(got) != 1 {
		t.Fatalf("client from environment: %v, %v", got, err)
	}

	// Explicit arguments override the environment.
	t.Setenv("CONSUL_HTTP_ADDR", "127.0.0.1:1")
	t.Setenv("CONSUL_HTTP_TOKEN", "wrong")
	s.SetToken("arg-token")
	c, err = seed.NewClient(s.Addr(), "arg-token")
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := seed.NewKV(c, "k").Fetch(context.Background()); err != nil || len(got) != 1 {
		t.Fatalf("client from arguments: %v, %v", got, err)
	}
	var se api.StatusError
	c, _ = seed.NewClient(s.Addr(), "")
	if _, _, err := seed.NewKV(c, "k").Fetch(context.Background()); !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("env token wrong: err %v, want 403", err)
	}
}

func TestWatchStopsWithContext(t *testing.T) {
	s := consultest.New(t)
	cfg, _ := fast(t)
	w := seed.NewService(newClient(t, s, ""), "web", seed.WithConfig(cfg))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	got := make(chan []seed.Backend, 1)
	go func() { done <- w.Watch(ctx, func(b []seed.Backend) { got <- b }) }()
	testutil.Eventually(t, within, "query held", func() bool { return s.Waiting() == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch = %v, want nil", err)
		}
	case <-time.After(within):
		t.Fatal("Watch did not return after cancel")
	}
	testutil.Eventually(t, within, "held query released", func() bool { return s.Waiting() == 0 })
}
