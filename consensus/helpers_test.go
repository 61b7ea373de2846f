package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

func testLogger(t testing.TB) *slog.Logger {
	// buf collects the raft log; it is printed only on failure.
	var buf testutil.SyncBuffer
	t.Cleanup(func() { // registered first, so it runs after the stores closed
		if t.Failed() {
			t.Logf("raft log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testOptions starts from the defaults and shrinks every timer.
func testOptions(t testing.TB, id, dir string, logger *slog.Logger) Options {
	o := DefaultOptions()
	o.NodeID = id
	o.Bind = "127.0.0.1:0"
	o.DataDir = dir
	o.Logger = logger
	o.HeartbeatTimeout = 250 * time.Millisecond
	o.ElectionTimeout = 250 * time.Millisecond
	o.LeaderLeaseTimeout = 200 * time.Millisecond
	o.CommitTimeout = 20 * time.Millisecond
	return o
}

func openStore(t testing.TB, o Options) *Store {
	t.Helper()
	s, err := Open(o)
	if err != nil {
		t.Fatalf("open %s: %v", o.NodeID, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// testCluster is n real stores on 127.0.0.1 TCP ports with data in temp dirs.
type testCluster struct {
	t      testing.TB
	opts   []Options
	stores []*Store // nil while stopped
}

// newCluster bootstraps node 0 alone and adds the others as voters, the way
// the node grows a cluster from gossip.
func newCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	return newClusterWith(t, n, nil)
}

// newClusterWith is newCluster with each store's options changed by edit.
func newClusterWith(t testing.TB, n int, edit func(i int, o *Options)) *testCluster {
	t.Helper()
	logger := testLogger(t)
	c := &testCluster{t: t}
	for i := range n {
		o := testOptions(t, fmt.Sprintf("n%d", i), t.TempDir(), logger)
		if edit != nil {
			edit(i, &o)
		}
		c.opts = append(c.opts, o)
		c.stores = append(c.stores, openStore(t, o))
	}
	if err := c.stores[0].BootstrapSelf(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "first leader", func() error {
		if !c.stores[0].IsLeader() {
			return errors.New("n0 is " + c.stores[0].State())
		}
		return nil
	})
	for _, s := range c.stores[1:] {
		testutil.Eventually(t, 10*time.Second, "add voter "+s.ID(), func() error {
			return c.leader().AddVoter(ctxTimeout(t, 5*time.Second), s.ID(), s.RaftAddr())
		})
	}
	c.waitStable(n)
	return c
}

// waitStable waits until every running store knows the same leader and a
// configuration of want servers.
func (c *testCluster) waitStable(want int) {
	c.t.Helper()
	testutil.Eventually(c.t, 10*time.Second, "cluster stable", func() error {
		var leader string
		for _, s := range c.running() {
			id, _ := s.Leader()
			if id == "" || leader != "" && id != leader {
				return fmt.Errorf("%s sees leader %q, others %q", s.ID(), id, leader)
			}
			leader = id
			srv, err := s.Servers()
			if err != nil || len(srv) != want {
				return fmt.Errorf("%s: servers %v %v", s.ID(), srv, err)
			}
		}
		return nil
	})
}

func (c *testCluster) running() []*Store {
	var out []*Store
	for _, s := range c.stores {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// leader returns the running store that is leader, or nil.
func (c *testCluster) leader() *Store {
	for _, s := range c.running() {
		if s.IsLeader() {
			return s
		}
	}
	return nil
}

func (c *testCluster) waitLeader() *Store {
	c.t.Helper()
	var l *Store
	testutil.Eventually(c.t, 10*time.Second, "leader", func() error {
		if l = c.leader(); l == nil {
			return errors.New("no leader")
		}
		return nil
	})
	return l
}

// apply proposes cmd on whichever store is leader, retrying while there is
// none (as the node's forwarding does).
func (c *testCluster) apply(cmd Command) Result {
	c.t.Helper()
	var res Result
	testutil.Eventually(c.t, 10*time.Second, fmt.Sprintf("apply %s", cmd.Op), func() error {
		l := c.leader()
		if l == nil {
			return ErrNoLeader
		}
		var err error
		res, err = l.Apply(ctxTimeout(c.t, 5*time.Second), cmd)
		if errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader) {
			return err
		}
		if err != nil {
			c.t.Fatalf("apply %+v: %v", cmd, err)
		}
		return nil
	})
	return res
}

// waitApplied waits until every running store has applied idx.
func (c *testCluster) waitApplied(idx uint64) {
	c.t.Helper()
	for _, s := range c.running() {
		if err := s.WaitIndex(ctxTimeout(c.t, 10*time.Second), idx); err != nil {
			c.t.Fatalf("%s: %v", s.ID(), err)
		}
	}
}

func (c *testCluster) stop(i int) {
	c.t.Helper()
	if err := c.stores[i].Close(); err != nil {
		c.t.Fatalf("close %s: %v", c.opts[i].NodeID, err)
	}
	c.stores[i] = nil
}

func (c *testCluster) index(s *Store) int {
	for i, x := range c.stores {
		if x == s {
			return i
		}
	}
	c.t.Fatalf("store %s not in cluster", s.ID())
	return -1
}
