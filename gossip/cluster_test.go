package gossip

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// clusterConfig is testConfig for a member of the cluster named id ("" for
// a node that has no ID yet), advertising it the way the node does.
func clusterConfig(t testing.TB, name, id string) Config {
	c := testConfig(t, name)
	c.Cluster = func() string { return id }
	if id != "" {
		c.Meta = map[string]string{MetaCluster: id}
	}
	// Anti-entropy often, so the observation windows below see push-pulls
	// (NotifyMerge is not consulted for those, only NotifyAlive).
	c.PushPullInterval = 200 * time.Millisecond
	return c
}

// startPair starts two members of cluster id, named prefix0 and prefix1.
func startPair(t *testing.T, prefix, id string) []*node {
	t.Helper()
	first := start(t, clusterConfig(t, prefix+"0", id))
	cfg := clusterConfig(t, prefix+"1", id)
	cfg.Join = []string{first.Addr()}
	second := start(t, cfg)
	pair := []*node{first, second}
	testutil.Eventually(t, 10*time.Second, prefix+" pair formed", func() error {
		for _, nd := range pair {
			if err := wantAlive(nd, pair); err != nil {
				return err
			}
		}
		return nil
	})
	return pair
}

// foreign returns the first member nd lists whose name starts with prefix.
func foreign(nd *node, prefix string) string {
	for _, m := range nd.Members() {
		if strings.HasPrefix(m.Name, prefix) {
			return m.Name + " (" + m.State + ")"
		}
	}
	return ""
}

// noneCross fails if a member of one cluster ever lists a member of the
// other during d.
func noneCross(t *testing.T, d time.Duration, as, bs []*node) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for _, a := range as {
			if f := foreign(a, "b"); f != "" {
				t.Fatalf("%s lists %s of the other cluster", a.name, f)
			}
		}
		for _, b := range bs {
			if f := foreign(b, "a"); f != "" {
				t.Fatalf("%s lists %s of the other cluster", b.name, f)
			}
		}
	}
}

func TestJoinAcrossClustersIsRefused(t *testing.T) {
	const idA, idB = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	logA, readA := testLogs(t)
	cfg := clusterConfig(t, "a0", idA)
	cfg.Logger = logA
	a0 := start(t, cfg)
	cfg = clusterConfig(t, "a1", idA)
	cfg.Join = []string{a0.Addr()}
	a1 := start(t, cfg)
	as := []*node{a0, a1}
	testutil.Eventually(t, 10*time.Second, "a pair formed", func() error { return wantAlive(a1, as) })
	bs := startPair(t, "b", idB)

	// A running member of B joins A (what a re-tried remembered address
	// does): its Join fails, naming the other cluster, and nothing merges.
	_, err := bs[0].ml.Join([]string{a0.Addr()})
	if err == nil || !strings.Contains(err.Error(), otherCluster) {
		t.Fatalf("b0 joining a0: %v, want a refusal naming another cluster", err)
	}

	// A new member of B started with -join into A gives up at once with
	// that reason rather than retrying for JoinTimeout.
	cfg = clusterConfig(t, "b2", idB)
	cfg.Join = []string{a1.Addr()}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	err = g.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), otherCluster) || ctx.Err() != nil {
		t.Fatalf("b2 with -join into A: Run = %v after %v, want a refusal at once", err, time.Since(began))
	}
	if g.joinAttempts.Load() != 1 {
		t.Errorf("b2 tried %d times, want 1", g.joinAttempts.Load())
	}

	// A member of B that remembers a0 from an earlier run finds its own
	// cluster and keeps out of A.
	cfg = clusterConfig(t, "b3", idB)
	cfg.Join = []string{bs[0].Addr()}
	cfg.Rejoin = map[string]string{"a0": a0.Addr()}
	b3 := start(t, cfg)
	bs = append(bs, b3)
	testutil.Eventually(t, 10*time.Second, "a0 refused b3's rejoin", func() error {
		if a0.Stats().OtherCluster == 0 || b3.Stats().OtherCluster == 0 {
			return fmt.Errorf("refusals: a0 %d, b3 %d", a0.Stats().OtherCluster, b3.Stats().OtherCluster)
		}
		return nil
	})

	// A node with no ID yet joins both; it is admitted by each, but its
	// gossip and push-pulls carry the other cluster's members to them,
	// which only NotifyAlive stops.
	f := start(t, func() Config {
		c := clusterConfig(t, "fresh", "")
		c.Join = []string{a0.Addr(), bs[0].Addr()}
		return c
	}())
	testutil.Eventually(t, 10*time.Second, "fresh admitted by both clusters", func() error {
		for _, nd := range append(append([]*node{}, as...), bs...) {
			if st := memberState(nd, "fresh"); st != StateAlive {
				return fmt.Errorf("%s sees fresh as %s", nd.name, st)
			}
		}
		if len(f.Members()) != 1+len(as)+len(bs) {
			return fmt.Errorf("fresh lists %d members", len(f.Members()))
		}
		return nil
	})
	noneCross(t, 2*time.Second, as, bs)

	logs := readA()
	if n := strings.Count(logs, "peer=b0 "); n != 1 || !strings.Contains(logs, "refusing a gossip peer of another balancer cluster") {
		t.Errorf("a0 warned about b0 %d times, want once:\n%s", n, logs)
	}
	if strings.Contains(logs, "level=WARN msg=\"ignoring alive message") {
		t.Error("memberlist's line per refused alive message is logged at WARN")
	}
}

// Until a node knows its own ID, and for peers that advertise none, the
// check admits everyone: a node joins before raft names its cluster.
func TestClusterCheckAdmitsNodesWithoutID(t *testing.T) {
	const idA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	as := startPair(t, "a", idA)

	cfg := clusterConfig(t, "b-new", "")
	cfg.Join = []string{as[0].Addr()}
	cfg.Meta = map[string]string{"admin": "x"}
	fresh := start(t, cfg)
	cfg = testConfig(t, "b-old") // an older version: no check, no ID
	cfg.Join = []string{as[1].Addr()}
	old := start(t, cfg)
	all := append(as, fresh, old)
	testutil.Eventually(t, 10*time.Second, "all four alive everywhere", func() error {
		for _, nd := range all {
			if err := wantAlive(nd, all); err != nil {
				return err
			}
		}
		return nil
	})
	for _, nd := range all {
		if n := nd.Stats().OtherCluster; n != 0 {
			t.Errorf("%s refused %d", nd.name, n)
		}
	}
}
