package gossip

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// testConfig is a loopback config with every timer shortened, in the
// spirit of serf's testConfig.
func testConfig(t testing.TB, name string) Config {
	c := DefaultConfig()
	c.Name = name
	c.Bind = "127.0.0.1:0"
	c.Profile = ProfileLocal
	c.ProbeInterval = 100 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.SendInterval = 10 * time.Millisecond
	c.ReportTTL = time.Second
	c.JoinTimeout = 10 * time.Second
	c.LeaveTimeout = 2 * time.Second
	c.Logger = testLogger(t)
	return c
}

// testLogger collects the logs of a test (memberlist's included) and prints
// them only if the test fails. Writes after the test ended are harmless.
func testLogger(t testing.TB) *slog.Logger {
	l, _ := testLogs(t)
	return l
}

// testLogs is testLogger that also returns a function reading the logs so
// far, for tests that assert what was (or was not) logged.
func testLogs(t testing.TB) (*slog.Logger, func() string) {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("GOSSIP_TEST_LOGS") != "" {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("logs:\n%s", buf.String())
		}
	})
	read := func() string {
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
	return slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug})), read
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// node is one running Gossip in a test.
type node struct {
	*Gossip
	name   string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start creates and runs a Gossip; the test's cleanup stops it.
func start(t testing.TB, cfg Config) *node {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{Gossip: g, name: cfg.Name, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- g.Run(ctx) }()
	t.Cleanup(func() {
		if err := n.stop(); err != nil {
			t.Errorf("node %s: Run: %v", n.name, err)
		}
	})
	return n
}

// stop cancels Run and waits (bounded) for it to return its error.
func (n *node) stop() error {
	n.once.Do(func() {
		n.cancel()
		select {
		case n.err = <-n.done:
		case <-time.After(15 * time.Second):
			n.err = fmt.Errorf("Run did not return within 15s of cancel")
		}
	})
	return n.err
}

// crash stops the node without a bye or memberlist Leave, like a kill.
func (n *node) crash() error {
	n.noLeave.Store(true)
	return n.stop()
}

// startCluster starts n nodes; each joins every node started before it
// (joining all known addresses avoids waiting for push-pull, see
// LIBRARIES.md), then waits until every node lists every other as alive.
func startCluster(t testing.TB, n int, tweak func(*Config)) []*node {
	t.Helper()
	var nodes []*node
	var addrs []string
	for i := range n {
		cfg := testConfig(t, fmt.Sprintf("node-%d", i))
		cfg.Join = append([]string(nil), addrs...)
		if tweak != nil {
			tweak(&cfg)
		}
		nd := start(t, cfg)
		nodes = append(nodes, nd)
		addrs = append(addrs, nd.Addr())
	}
	// Stop in reverse order, each after the others saw the previous one go:
	// a Leave racing with the last peer's own leave waits out LeaveTimeout
	// (memberlist no longer gossips to a left node, so its broadcast never
	// completes). Cleanups run last-in first-out, so this runs before the
	// per-node ones registered by start.
	t.Cleanup(func() {
		for i := len(nodes) - 1; i >= 0; i-- {
			nodes[i].stop()
			deadline := time.Now().Add(2 * time.Second)
			for _, o := range nodes[:i] {
				for memberState(o, nodes[i].name) == StateAlive && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}
	})
	testutil.Eventually(t, 20*time.Second, "all members alive everywhere", func() error {
		for _, nd := range nodes {
			if err := wantAlive(nd, nodes); err != nil {
				return err
			}
		}
		return nil
	})
	return nodes
}

// wantAlive checks that nd lists exactly the given nodes, all alive.
func wantAlive(nd *node, nodes []*node) error {
	ms := nd.Members()
	if len(ms) != len(nodes) {
		return fmt.Errorf("%s sees %d members: %v", nd.name, len(ms), ms)
	}
	for _, m := range ms {
		if m.State != StateAlive {
			return fmt.Errorf("%s sees %s as %s", nd.name, m.Name, m.State)
		}
	}
	return nil
}

// report returns nd's view of from's report, if live.
func report(nd *node, from string) (PeerReport, bool) {
	for _, p := range nd.Peers() {
		if p.Node == from {
			return p, true
		}
	}
	return PeerReport{}, false
}

// hasState checks that nd's view of from holds exactly want.
func hasState(nd *node, from string, want []BackendState) error {
	p, ok := report(nd, from)
	if !ok {
		return fmt.Errorf("%s has no live report from %s", nd.name, from)
	}
	if len(p.Backends) != len(want) {
		return fmt.Errorf("%s sees %d backends from %s, want %d", nd.name, len(p.Backends), from, len(want))
	}
	for i := range want {
		if p.Backends[i] != want[i] {
			return fmt.Errorf("%s sees %s backend %d = %+v, want %+v", nd.name, from, i, p.Backends[i], want[i])
		}
	}
	return nil
}

func memberState(nd *node, name string) string {
	for _, m := range nd.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return "absent"
}

func names(ps []PeerReport) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Node)
	}
	return strings.Join(s, ",")
}
