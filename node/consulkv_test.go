package node

import (
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

// lineLog records every log line a node writes, attributes included.
type lineLog struct {
	mu    sync.Mutex
	lines []string // guarded by mu
}

func (l *lineLog) handler() slog.Handler {
	return slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

// count is the number of lines that contain every one of parts.
func (l *lineLog) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(s, p)
		}
		if ok {
			n++
		}
	}
	return n
}

// The audit's repro of a deleted -consul-kv key: the document is served,
// then the key answers 404. The node used to apply that as an empty set
// ("synced backends from Consul backends=0") and answer 503 to everything.
func TestConsulKVKeyDeletedKeepsConfig(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	consul := consultest.New(t)
	web1, web2 := startBackend(t, "web-1", "http"), startBackend(t, "web-2", "http")
	const key = "cfg/x"
	doc := func(id, addr string) []byte {
		return []byte(fmt.Sprintf(`{"backends": [{"id": %q, "address": %q}]}`, id, addr))
	}
	consul.PutKV(key, doc("web-1", web1.Addr()))

	logs := &lineLog{}
	cfg := testConfig(t)
	cfg.Logger = slog.New(logs.handler())
	cfg.Consul = ConsulConfig{KV: key, Addr: consul.URL(), Seed: seed.Config{
		WaitTime: 2 * time.Second, MinInterval: 10 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}}
	n, _ := startNode(t, cfg)
	tn := &testNode{Node: n}
	testutil.Eventually(t, 10*time.Second, "web-1 from the KV document", func() bool { _, ok := backendOf(n, "web-1"); return ok })
	testutil.Eventually(t, 5*time.Second, "traffic to web-1", func() bool { code, body := tn.get(t, "/"); return code == 200 && body == "web-1" })
	index := n.store.Config().Index

	consul.DeleteKV(key)
	// The leader's watcher has read the 404 once its query is held at the
	// KV index after the delete; then a few unrelated writes, each a poll.
	held := func(what string) {
		t.Helper()
		idx := consul.Index()
		testutil.Eventually(t, 10*time.Second, what, func() bool { return slices.Contains(consul.Held(), idx) })
	}
	held("the watcher to read the deleted key")
	for i := range 3 {
		consul.PutKV(fmt.Sprintf("unrelated/%d", i), []byte("x"))
		held("the watcher to read an unrelated write")
	}
	if c := n.store.Config(); c.Index != index || len(c.Backends) != 1 {
		t.Fatalf("config after the key was deleted: index %d (was %d), %d backends; want it unchanged", c.Index, index, len(c.Backends))
	}
	if code, body := tn.get(t, "/"); code != 200 || body != "web-1" {
		t.Fatalf("traffic after the key was deleted: %d %s", code, body)
	}
	if w := logs.count("level=WARN", key, "not found", "consul kv put "+key); w != 1 {
		t.Fatalf("the missing key warned %d times over 4 polls, want once naming the key and the fix", w)
	}

	consul.PutKV(key, doc("web-2", web2.Addr()))
	testutil.Eventually(t, 10*time.Second, "the restored key's document applied", func() bool {
		_, has1 := backendOf(n, "web-1")
		_, has2 := backendOf(n, "web-2")
		return !has1 && has2
	})
	testutil.Eventually(t, 5*time.Second, "traffic to web-2", func() bool { code, body := tn.get(t, "/"); return code == 200 && body == "web-2" })
}
