package node

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/consensus"
	"github.com/thebalancer/balancer/gossip"
	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
	"github.com/thebalancer/balancer/proxy"
)

// A node given -join and -bootstrap-expect 1 must not found a raft cluster
// of its own when it finds one already there: two clusters that both hold
// an entry at the same index and term never reconcile, and the newcomer
// would proxy on its own config for good. Here the leader cannot add the
// newcomer (its advertised raft address is dead), which is what a leader
// frozen or busy at the wrong moment looks like; the newcomer must wait.
func TestJoinerWithBootstrapExpectOneWaitsForTheExistingCluster(t *testing.T) {
	first := startClusterWith(t, 1, func(_ int, c *Config) { c.BootstrapExpect = 1 },
		proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1})[0]
	testutil.Eventually(t, 20*time.Second, "n1 leading a seeded config", func() bool {
		return first.store.IsLeader() && first.store.AppliedIndex() > 0
	})
	joiner := startClusterWith(t, 1, func(_ int, c *Config) {
		c.Name = "n2"
		c.BootstrapExpect = 1
		c.Gossip.Join = []string{first.GossipAddr()}
		c.Raft.Advertise = testutil.FreeAddr(t)
	}, proxy.Backend{ID: "rogue", Address: "127.0.0.1:1", Weight: 1})[0]
	testutil.Eventually(t, 10*time.Second, "n2 in n1's gossip view", func() bool {
		m, err := admin.NewClient(first.AdminAddr(), "").Members(context.Background())
		return err == nil && len(m.Members) == 2
	})
	// The leader reconciles on every member event and every 2 s: watch
	// over two rounds that n2 founds nothing.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if has, _ := joiner.store.HasState(); has {
			t.Fatalf("n2 bootstrapped a raft cluster of its own (leader: %v, config %+v)",
				joiner.store.IsLeader(), joiner.store.Config())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A leader that is itself stopping must not shrink the raft configuration:
// when a whole cluster stops at once, the last leader would remove every
// peer that left before it, and those peers, never told, could later
// elect a leader of the old configuration beside it.
func TestStoppingLeaderRemovesNoServer(t *testing.T) {
	nodes := startClusterWith(t, 3, func(i int, c *Config) {
		if i == 0 {
			c.BootstrapExpect = 1
		}
	}, proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1})
	voters := func(n *testNode) map[string]bool {
		v := map[string]bool{}
		s, _ := n.store.Servers()
		for _, x := range s {
			v[x.ID] = true
		}
		return v
	}
	testutil.Eventually(t, 20*time.Second, "three voters", func() bool { return len(voters(nodes[0])) == 3 })
	var leader, leaving *testNode
	testutil.Eventually(t, 10*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if n.store.IsLeader() {
				leader = n
			}
		}
		return leader != nil
	})
	for _, n := range nodes {
		if n != leader {
			leaving = n
		}
	}
	leader.draining.Store(true) // as from the start of its own stop
	leaving.shutdown(t)
	testutil.Eventually(t, 10*time.Second, leaving.Name()+" left, to the leader", func() bool {
		for _, m := range leader.gossip.Members() {
			if m.Name == leaving.Name() {
				return m.State == gossip.StateLeft
			}
		}
		return false
	})
	leader.reconcileVoters(context.Background())
	if !voters(leader)[leaving.Name()] {
		t.Fatalf("a stopping leader removed %s from raft", leaving.Name())
	}
	leader.draining.Store(false) // a leader that stays removes it
	testutil.Eventually(t, 10*time.Second, leaving.Name()+" removed by a leader that is not stopping", func() bool {
		leader.reconcileVoters(context.Background())
		return !voters(leader)[leaving.Name()]
	})
}

// More members than expected that each could found a cluster never
// bootstrap; the operator must hear why, once per set of candidates, not
// every 200 ms look.
func TestTooManyFoundersAreNamedOnce(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	n := &Node{log: slog.New(slog.NewTextHandler(logs, nil))}
	ab := []consensus.Server{{ID: "a"}, {ID: "b"}}
	n.whyNotFounding(1, ab)
	n.whyNotFounding(1, ab)
	if c := strings.Count(logs.String(), "none bootstraps"); c != 1 || !strings.Contains(logs.String(), "candidates=a,b") {
		t.Fatalf("%d warnings for the same candidates, want 1:\n%s", c, logs.String())
	}
	n.whyNotFounding(1, append(ab, consensus.Server{ID: "c"}))
	n.whyNotFounding(1, ab[:1]) // settled: nothing to say
	n.whyNotFounding(1, ab)     // and again
	if c := strings.Count(logs.String(), "none bootstraps"); c != 3 {
		t.Fatalf("%d warnings, want 3 (a,b; a,b,c; a,b again after it settled):\n%s", c, logs.String())
	}
}
