package seed_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/consensus/consultest"
	"github.com/thebalancer/balancer/consensus/seed"
	"github.com/thebalancer/balancer/internal/testutil"
)

// recorded keeps each record's message with its attributes, so a test can
// check what an operator would read, not only that something was logged.
type recorded struct {
	t     *testing.T
	attrs []slog.Attr
	mu    *sync.Mutex
	lines *[]string // guarded by mu
}

func newRecorded(t *testing.T) *recorded {
	return &recorded{t: t, mu: &sync.Mutex{}, lines: new([]string)}
}

func (h *recorded) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorded) WithGroup(string) slog.Handler            { return h }
func (h *recorded) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}
func (h *recorded) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.t.Log(b.String())
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.lines = append(*h.lines, b.String())
	return nil
}

// with returns the records that contain every one of parts.
func (h *recorded) with(parts ...string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
next:
	for _, l := range *h.lines {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

const noSet = "WARN consul has no backend set; keeping the last one"

// quiet waits, like settled, until w's query is held at the current index
// of what it watches, and fails the test at once if w delivers a set on the
// way (out blocks until the set is received, so a watcher that delivers
// never gets to be held).
func quiet(t *testing.T, s *consultest.Server, w source, ch <-chan []seed.Backend, when string) {
	t.Helper()
	_, idx, _ := w.Fetch(context.Background())
	deadline := time.Now().Add(within)
	for !slices.Contains(s.Held(), idx) {
		select {
		case b := <-ch:
			t.Fatalf("%s: delivered %v, want the last set kept", when, b)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: watcher not held at index %d within %v", when, idx, within)
		}
	}
}

// moveIndex makes Consul answer the held query again n times without a
// change to what w watches, each time until w's query is held again.
func moveIndex(t *testing.T, s *consultest.Server, w source, ch <-chan []seed.Backend, n int) {
	t.Helper()
	for i := range n {
		s.PutKV(fmt.Sprintf("unrelated/%d", i), []byte("x"))
		quiet(t, s, w, ch, fmt.Sprintf("unrelated write %d", i))
	}
}

// The audit's repro: the document is served, then the key answers 404. The
// old watcher delivered an empty set, which the node applied as "no
// backends" across the cluster.
func TestKVKeyMissingKeepsLastSet(t *testing.T) {
	s := consultest.New(t)
	const key = "cfg/x"
	s.PutKV(key, []byte(doc1))
	cfg, _ := fast(t)
	log := newRecorded(t)
	cfg.Logger = slog.New(log)
	w := seed.NewKV(newClient(t, s, ""), key, seed.WithConfig(cfg))
	ch := start(t, w)
	expect(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 5}, seed.Backend{ID: "b", Address: "10.0.0.2:80", Weight: 1})

	s.DeleteKV(key)
	quiet(t, s, w, ch, "key deleted")
	moveIndex(t, s, w, ch, 5) // five more polls of the missing key
	warned := log.with(noSet, "consul_kv="+key, "not found", "consul kv put "+key+" @")
	if len(warned) != 1 {
		t.Fatalf("missing key warned %d times over 6 polls, want once naming the key and the fix", len(warned))
	}

	s.PutKV(key, []byte(doc3))
	expect(t, ch, seed.Backend{ID: "c", Address: "10.0.0.3:80", Weight: 2})
	if n := len(log.with("INFO consul source found again", "consul_kv="+key)); n != 1 {
		t.Fatalf("the key's return logged %d times, want once", n)
	}
}

func TestKVKeyMissingWarningRepeatsAtRemind(t *testing.T) {
	s := consultest.New(t)
	cfg, _ := fast(t)
	log := newRecorded(t)
	cfg.Logger = slog.New(log)
	cfg.Remind = 100 * time.Millisecond
	w := seed.NewKV(newClient(t, s, ""), "typo/key", seed.WithConfig(cfg))
	ch := start(t, w)
	// A mistyped key is loud from the first read, not only on /readyz.
	quiet(t, s, w, ch, "key never existed")
	if n := len(log.with(noSet, "consul_kv=typo/key", "consul kv put typo/key @")); n != 1 {
		t.Fatalf("a missing key at start warned %d times, want once naming the key and the fix", n)
	}
	began := time.Now()
	i := 0
	testutil.Eventually(t, within, "a reminder", func() bool {
		i++
		s.PutKV(fmt.Sprintf("unrelated/%d", i), []byte("x"))
		return len(log.with(noSet, "typo/key", "absent_for=")) >= 1
	})
	if d := time.Since(began); d < cfg.Remind/2 {
		t.Fatalf("reminder after %v, want about every %v", d, cfg.Remind)
	}
	// Not one per poll: about one per Remind since the first.
	if n, most := len(log.with(noSet, "typo/key")), 2+int(time.Since(began)/cfg.Remind); n > most {
		t.Fatalf("%d warnings in %v with Remind %v", n, time.Since(began), cfg.Remind)
	}
	quiet(t, s, w, ch, "key never existed")
}

// A document that says "no backends" still means it: only absence is kept
// out.
func TestKVExplicitEmptyDocumentIsDelivered(t *testing.T) {
	s := consultest.New(t)
	s.PutKV("k", []byte(doc2))
	cfg, _ := fast(t)
	ch := start(t, seed.NewKV(newClient(t, s, ""), "k", seed.WithConfig(cfg)))
	expect(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 7})
	s.PutKV("k", []byte(`{"backends": []}`))
	expect(t, ch)
}

func TestServiceWithoutInstancesKeepsLastSet(t *testing.T) {
	s := consultest.New(t)
	a := consultest.Instance{ID: "a", Address: "10.0.0.1", Port: 80}
	s.SetService("web", a)
	cfg, _ := fast(t)
	log := newRecorded(t)
	cfg.Logger = slog.New(log)
	w := seed.NewService(newClient(t, s, ""), "web", seed.WithConfig(cfg))
	ch := start(t, w)
	A := seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 1}
	expect(t, ch, A)

	// Every instance failing its checks: keep routing to the last set and
	// let the circuit breakers judge the backends.
	s.SetStatus("web", "a", consultest.Critical)
	quiet(t, s, w, ch, "every instance critical")
	moveIndex(t, s, w, ch, 3)
	if n := len(log.with(noSet, "consul_service=web", "none of its 1 instances")); n != 1 {
		t.Fatalf("no healthy instance warned %d times, want once", n)
	}

	// The service deregistered: a different reason, warned about too.
	s.DeleteService("web")
	quiet(t, s, w, ch, "service gone")
	if n := len(log.with(noSet, "consul_service=web", "no instances")); n != 1 {
		t.Fatalf("unknown service warned %d times, want once", n)
	}

	b := consultest.Instance{ID: "b", Address: "10.0.0.2", Port: 80}
	s.SetService("web", a, b)
	expect(t, ch, A, seed.Backend{ID: "b", Address: "10.0.0.2:80", Weight: 1})
	if n := len(log.with("INFO consul source found again", "consul_service=web")); n != 1 {
		t.Fatalf("the service's return logged %d times, want once", n)
	}
}
