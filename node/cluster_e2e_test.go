package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/gossip"
	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
	"github.com/thebalancer/balancer/proxy"
	"github.com/thebalancer/balancer/proxy/pick"
)

type testNode struct {
	*Node
	stop context.CancelFunc
	done chan error
}

// startCluster starts n gossiping nodes in this process; node i joins node 0.
func startCluster(t *testing.T, n int, algorithm string, backends ...proxy.Backend) []*testNode {
	t.Helper()
	return startClusterWith(t, n, func(_ int, c *Config) { c.Proxy.Algorithm = algorithm }, backends...)
}

// startClusterWith is startCluster with each node's config changed by edit.
func startClusterWith(t *testing.T, n int, edit func(i int, c *Config), backends ...proxy.Backend) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := 0; i < n; i++ {
		cfg := testConfig(t, backends...)
		cfg.Name = fmt.Sprintf("n%d", i+1)
		g := gossip.DefaultConfig()
		g.Bind = "127.0.0.1:0"
		g.Profile = gossip.ProfileLocal
		g.ProbeInterval = 100 * time.Millisecond
		g.GossipInterval = 20 * time.Millisecond
		g.PushPullInterval = time.Second
		g.SendInterval = 10 * time.Millisecond
		g.ReportTTL = time.Second
		g.LeaveTimeout = time.Second
		if i > 0 {
			g.Join = []string{nodes[0].GossipAddr()}
		}
		cfg.Gossip = g
		cfg.Routes.Tick = 10 * time.Millisecond
		if edit != nil {
			edit(i, &cfg)
		}
		nd, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		tn := &testNode{Node: nd, stop: cancel, done: make(chan error, 1)}
		go func() { tn.done <- nd.Run(ctx) }()
		nodes = append(nodes, tn)
	}
	t.Cleanup(func() {
		for _, tn := range nodes {
			tn.shutdown(t)
		}
	})
	return nodes
}

// shutdown stops the node once and checks it stopped cleanly.
func (tn *testNode) shutdown(t *testing.T) {
	t.Helper()
	if tn.stop == nil {
		return
	}
	tn.stop()
	tn.stop = nil
	select {
	case err := <-tn.done:
		if err != nil {
			t.Errorf("%s: Run: %v", tn.Name(), err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not stop", tn.Name())
	}
}

func (tn *testNode) load(t *testing.T) map[string]admin.BackendLoad {
	t.Helper()
	l, err := admin.NewClient(tn.AdminAddr(), "").Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]admin.BackendLoad{}
	for _, b := range l.Backends {
		m[b.ID] = b
	}
	return m
}

func (tn *testNode) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + tn.Addr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func peerCount(bl admin.BackendLoad, node string) (int64, bool) {
	for _, p := range bl.Peers {
		if p.Node == node {
			return p.Count, true
		}
	}
	return 0, false
}

func TestClusterMembersSeeEachOther(t *testing.T) {
	nodes := startCluster(t, 3, pick.LeastConn)
	for _, n := range nodes {
		testutil.Eventually(t, 10*time.Second, n.Name()+" to see 3 alive members", func() bool {
			m, err := admin.NewClient(n.AdminAddr(), "").Members(context.Background())
			if err != nil || len(m.Members) != 3 {
				return false
			}
			for _, mb := range m.Members {
				if mb.Status != "alive" || mb.AdminAddr == "" || mb.GossipAddr == "" {
					return false
				}
			}
			return true
		})
	}
}

func TestClusterCountsTravelAndVanishOnLeave(t *testing.T) {
	slow := startBackend(t, "slow", "http")
	nodes := startCluster(t, 3, pick.LeastConn, proxy.Backend{ID: "slow", Address: slow.Addr(), Weight: 1})
	for _, n := range nodes {
		testutil.Eventually(t, 10*time.Second, "peers' reports in "+n.Name()+"'s view", func() bool {
			_, ok2 := peerCount(n.load(t)["slow"], nodes[(indexOf(nodes, n)+1)%3].Name())
			return ok2
		})
	}
	// Hold 4 requests on n1.
	held := make(chan struct{})
	for i := 0; i < 4; i++ {
		go func() {
			defer func() { held <- struct{}{} }()
			resp, err := http.Get("http://" + nodes[0].Addr() + "/?sleep=1500ms")
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	for _, n := range nodes[1:] {
		testutil.Eventually(t, 5*time.Second, n.Name()+" to see n1's 4 in-flight requests", func() bool {
			bl := n.load(t)["slow"]
			c, _ := peerCount(bl, "n1")
			return c == 4 && bl.Cluster == 4
		})
	}
	for i := 0; i < 4; i++ {
		<-held
	}
	for _, n := range nodes[1:] {
		testutil.Eventually(t, 5*time.Second, n.Name()+" to see n1 back at 0", func() bool {
			c, ok := peerCount(n.load(t)["slow"], "n1")
			return ok && c == 0
		})
	}
	// n1 leaves: its slot leaves every view.
	nodes[0].shutdown(t)
	for _, n := range nodes[1:] {
		testutil.Eventually(t, 5*time.Second, "n1's report to leave "+n.Name()+"'s view", func() bool {
			_, ok := peerCount(n.load(t)["slow"], "n1")
			return !ok
		})
		testutil.Eventually(t, 5*time.Second, n.Name()+" to list n1 as left", func() bool {
			m, _ := admin.NewClient(n.AdminAddr(), "").Members(context.Background())
			for _, mb := range m.Members {
				if mb.Name == "n1" {
					return mb.Status == "left"
				}
			}
			return false
		})
	}
}

func indexOf(nodes []*testNode, n *testNode) int {
	for i, x := range nodes {
		if x == n {
			return i
		}
	}
	return -1
}

// When one node's circuit for a failing backend opens, the others stop
// sending to it before paying for failures themselves.
func TestSharedCircuitStopsPeersFromSending(t *testing.T) {
	bad := startBackend(t, "bad", "http")
	good1, good2 := startBackend(t, "good1", "http"), startBackend(t, "good2", "http")
	// What is checked here holds until the dispute bound (2 × the 200 ms
	// sleep by default); pin it far away so a slow run does not cross it.
	nodes := startClusterWith(t, 3, func(_ int, c *Config) {
		c.Proxy.Algorithm = pick.RoundRobin
		c.Routes.DisputeAfter = time.Minute
	},
		proxy.Backend{ID: "bad", Address: bad.Addr(), Weight: 1},
		proxy.Backend{ID: "good1", Address: good1.Addr(), Weight: 1},
		proxy.Backend{ID: "good2", Address: good2.Addr(), Weight: 1})
	for _, n := range nodes {
		testutil.Eventually(t, 10*time.Second, n.Name()+" to see both peers", func() bool { return len(n.load(t)["bad"].Peers) == 2 })
	}
	// bad starts failing: only n1 carries traffic until its circuit opens.
	bad.Close()
	testutil.Eventually(t, 10*time.Second, "n1's circuit for bad to open", func() bool {
		nodes[0].get(t, "/")
		return nodes[0].load(t)["bad"].Breaker["n1"] == "open"
	})
	for _, n := range nodes[1:] {
		testutil.Eventually(t, 5*time.Second, n.Name()+" to learn n1's open circuit", func() bool {
			return n.load(t)["bad"].Breaker["n1"] == "open"
		})
	}
	before := map[string]uint64{}
	for _, n := range nodes[1:] {
		before[n.Name()] = n.load(t)["bad"].Requests
	}
	for _, n := range nodes[1:] {
		for i := 0; i < 60; i++ {
			if code, body := n.get(t, "/"); code != 200 {
				t.Fatalf("%s: client saw %d %s", n.Name(), code, body)
			}
		}
	}
	// The bound: no request at all (the dispute probe comes only after
	// DisputeAfter).
	for _, n := range nodes[1:] {
		if got := n.load(t)["bad"].Requests - before[n.Name()]; got != 0 {
			t.Errorf("%s sent %d requests to a backend whose circuit is open on n1", n.Name(), got)
		}
		if st := n.load(t)["bad"].Breaker[n.Name()]; st != "closed" {
			t.Errorf("%s paid for failures itself: its own circuit is %s", n.Name(), st)
		}
	}
}
