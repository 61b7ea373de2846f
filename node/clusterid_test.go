package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/gossip"
	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/proxy"
)

// Two single-node clusters must stay two clusters whatever gossip path
// connects them: a gossip member of neither that joins both (an older or
// fresh node, the bridge here), the node of one restarted with -join to the
// other, and restarted with the other's address among its remembered
// members (peers.json, as on a dev host reusing ports). Without cluster IDs
// gossip merges them, and each leader adds the other as a raft voter.
func TestTwoClustersNeverMerge(t *testing.T) {
	single := func(name, dir string, join ...string) func(int, *Config) {
		return func(_ int, c *Config) {
			c.Name, c.BootstrapExpect = name, 1
			c.Gossip.Join = join
			if dir != "" {
				c.DataDir = dir
			}
		}
	}
	a := startClusterWith(t, 1, single("a1", ""), proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1})[0]
	b := startClusterWith(t, 1, single("b1", ""), proxy.Backend{ID: "b", Address: "127.0.0.1:1", Weight: 1})[0]
	for _, n := range []*testNode{a, b} {
		testutil.Eventually(t, 20*time.Second, n.Name()+" leads a named, seeded cluster and advertises its ID", func() error {
			if !n.store.IsLeader() || n.store.AppliedIndex() == 0 || n.store.ClusterID() == "" {
				return fmt.Errorf("leader %v, index %d, cluster %q", n.store.IsLeader(), n.store.AppliedIndex(), n.store.ClusterID())
			}
			if got := advertisedCluster(n.Node, n.Name()); got != n.store.ClusterID() {
				return fmt.Errorf("advertises cluster %q", got)
			}
			return nil
		})
	}
	idA, idB := a.store.ClusterID(), b.store.ClusterID()
	if idA == idB {
		t.Fatalf("two clusters got the same ID %s", idA)
	}

	// The bridge admits both, and its gossip carries each one's member to
	// the other.
	bc := gossip.DefaultConfig()
	bc.Name, bc.Bind, bc.Profile = "bridge", "127.0.0.1:0", gossip.ProfileLocal
	bc.ProbeInterval, bc.GossipInterval, bc.PushPullInterval = 100*time.Millisecond, 20*time.Millisecond, 300*time.Millisecond
	bc.Join = []string{a.GossipAddr(), b.GossipAddr()}
	bridge, err := gossip.New(bc)
	if err != nil {
		t.Fatal(err)
	}
	bctx, stopBridge := context.WithCancel(context.Background())
	bridgeDone := make(chan error, 1)
	go func() { bridgeDone <- bridge.Run(bctx) }()
	defer func() {
		stopBridge()
		select {
		case <-bridgeDone:
		case <-time.After(10 * time.Second):
			t.Error("bridge did not stop")
		}
	}()
	testutil.Eventually(t, 10*time.Second, "the bridge lists both clusters, and a1 refused b1", func() error {
		if n := len(bridge.Members()); n != 3 {
			return fmt.Errorf("bridge lists %d members", n)
		}
		if a.gossip.Stats().OtherCluster == 0 {
			return fmt.Errorf("a1 refused nothing yet")
		}
		return nil
	})
	apart(t, a, b, idA, idB)

	// b1 restarted from its data dir with -join to a1 fails to start and
	// says why. Its ID comes from its snapshot, before any election.
	dir := b.cfg.DataDir
	b.shutdown(t)
	cfg := testConfig(t)
	cfg.Gossip = a.cfg.Gossip
	single("b1", dir, a.GossipAddr())(0, &cfg)
	nb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := nb.store.ClusterID(); got != idB {
		t.Fatalf("restarted b1 has cluster ID %q before raft runs, want %q", got, idB)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = nb.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "another balancer cluster") || ctx.Err() != nil {
		t.Fatalf("b1 restarted with -join to a1: Run = %v, want a refusal at once", err)
	}

	// b1 restarted without -join but remembering a1 runs, and stays apart.
	if err := savePeers(dir, map[string]knownPeer{"a1": {Addr: a.GossipAddr(), Seen: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	before := a.gossip.Stats().OtherCluster
	b = startClusterWith(t, 1, single("b1", dir))[0]
	testutil.Eventually(t, 20*time.Second, "restarted b1 leads and a1 refused its rejoin", func() error {
		if !b.store.IsLeader() {
			return fmt.Errorf("b1 is %s", b.store.State())
		}
		if a.gossip.Stats().OtherCluster == before {
			return fmt.Errorf("a1 refused nothing new")
		}
		return nil
	})
	apart(t, a, b, idA, idB)
}

// apart watches for ~3 s that neither node lists the other in gossip or in
// its raft configuration, and that each keeps its ID and config.
func apart(t *testing.T, a, b *testNode, idA, idB string) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, c := range []struct {
			n         *testNode
			other, id string
			backend   string
		}{{a, b.Name(), idA, "a"}, {b, a.Name(), idB, "b"}} {
			for _, m := range c.n.gossip.Members() {
				if m.Name == c.other {
					t.Fatalf("%s lists %s (%s) in gossip", c.n.Name(), c.other, m.State)
				}
			}
			servers, err := c.n.store.Servers()
			if err != nil {
				t.Fatal(err)
			}
			if len(servers) != 1 || servers[0].ID != c.n.Name() {
				t.Fatalf("%s's raft configuration is %+v", c.n.Name(), servers)
			}
			if got := c.n.store.ClusterID(); got != c.id {
				t.Fatalf("%s's cluster ID changed to %q from %q", c.n.Name(), got, c.id)
			}
			cfg := c.n.store.Config()
			ids := make([]string, len(cfg.Backends))
			for i, be := range cfg.Backends {
				ids[i] = be.ID
			}
			if !slices.Equal(ids, []string{c.backend}) {
				t.Fatalf("%s's config holds %v", c.n.Name(), ids)
			}
		}
	}
}

func advertisedCluster(n *Node, name string) string {
	for _, m := range n.gossip.Members() {
		if m.Name == name {
			return m.Meta[gossip.MetaCluster]
		}
	}
	return ""
}
