package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/node/admin"
)

// TestFaults runs every fault against one cluster, since a cluster costs
// more to start than most faults take: each fault leaves the cluster as it
// found it (three healthy nodes, every backend up, weights 1), and each
// starts by waiting for that.
func TestFaults(t *testing.T) {
	c := startCluster(t)
	for _, f := range []struct {
		name string
		run  func(t *testing.T, c *cluster)
	}{
		{"Partition", testPartition},
		{"BackendKilled", testBackendKilled},
		{"LeaderKilledDuringWrites", testLeaderKilledDuringWrites},
		{"NodeKilled", testNodeKilled},
		{"RollingRestart", testRollingRestart},
	} {
		t.Run(f.name, func(t *testing.T) {
			c := c.in(t)
			c.waitHealthy(90 * time.Second)
			// A fault that failed half-way may leave a service down: start
			// whatever is stopped, so the next one finds three nodes.
			t.Cleanup(func() { _, _ = c.composeOut("up", "-d") })
			f.run(t, c)
		})
	}
}

// Steady load: 4 clients, one request every 10 ms each (a few hundred
// requests per second on this machine: enough to open circuits and to see
// a failure, little enough for two cores shared with docker).
const (
	loadWorkers = 4
	loadPause   = 10 * time.Millisecond
)

func others(n string) []string {
	return slices.DeleteFunc(slices.Clone(nodes), func(x string) bool { return x == n })
}

// testPartition cuts the leader off the cluster network for longer than
// memberlist remembers dead members. The majority must elect a new leader
// and accept writes, the isolated node must keep proxying on its last
// config and refuse writes with 503, and once reconnected it must catch up
// and merge back into the gossip cluster by itself.
func testPartition(t *testing.T, c *cluster) {
	ctx := context.Background()
	isolated := c.leader(nodes[0])
	majority := others(isolated)
	ld := startLoad(c, nodes, loadWorkers, loadPause)
	ld.waitRequests(t, 200, 30*time.Second)

	c.partition(isolated)
	cut := time.Now()
	healed := false
	t.Cleanup(func() {
		if !healed {
			c.heal(isolated)
		}
	})
	t.Logf("isolated %s (the leader) from the cluster network", isolated)
	toMajority := eventually(t, 30*time.Second, "the majority accepts a weight write", func() error {
		if o, _, msg := c.setWeight(ctx, majority[0], "b1", 7, 2*time.Second); o != acked {
			return fmt.Errorf("%s: %s", o, msg)
		}
		return nil
	})
	toRefuse := eventually(t, 30*time.Second, "the isolated node refuses writes with 503", func() error {
		if o, code, msg := c.setWeight(ctx, isolated, "b1", 9, 5*time.Second); code != http.StatusServiceUnavailable {
			return fmt.Errorf("%s: %s", o, msg)
		}
		return nil
	})
	if o, _, msg := c.setWeight(ctx, majority[1], "b2", 4, 5*time.Second); o != acked {
		t.Fatalf("second write on the majority: %s: %s", o, msg)
	}
	// An acknowledged write is committed, not yet applied everywhere: take
	// the majority's config once both of its nodes agree on it.
	var want admin.Config
	eventually(t, 10*time.Second, "the majority agrees on its config", func() error {
		a, err := c.config(majority[0])
		if err != nil {
			return err
		}
		b, err := c.config(majority[1])
		if err != nil {
			return err
		}
		if a.Index != b.Index || weights(a)["b2"] != 4 {
			return fmt.Errorf("%s at index %d, %s at %d (b2=%d)", majority[0], a.Index, majority[1], b.Index, weights(b)["b2"])
		}
		want = a
		return nil
	})
	stale, err := c.config(isolated)
	if err != nil {
		t.Fatal(err)
	}
	if stale.Index >= want.Index {
		t.Fatalf("isolated node at config index %d, majority at %d: the partition did not hold", stale.Index, want.Index)
	}
	// Traffic through the isolated node, on its last config, under load.
	before := ld.servedVia(isolated)
	ld.waitRequests(t, 300, 30*time.Second)
	if after := ld.servedVia(isolated); after == before {
		t.Errorf("the isolated node served nothing while cut off")
	}

	// Hold the partition until memberlist on the isolated side has
	// forgotten its peers (GossipToTheDeadTime, 30 s): after that only
	// the nodes' own reconnect can merge the gossip cluster again.
	toForget := eventually(t, 90*time.Second, "the isolated node forgets its peers", func() error {
		ms, err := c.members(isolated)
		if err != nil {
			return err
		}
		if len(ms) > 1 {
			return fmt.Errorf("%s still lists %d members", isolated, len(ms))
		}
		return nil
	})
	c.heal(isolated)
	healed = true
	partitioned := time.Since(cut)
	toCatchUp := eventually(t, 60*time.Second, "the isolated node catches up (config index and weights)", func() error {
		got, err := c.config(isolated)
		if err != nil {
			return err
		}
		if got.Index < want.Index || !mapsEqual(weights(got), weights(want)) {
			return fmt.Errorf("index %d weights %v, want index %d weights %v", got.Index, weights(got), want.Index, weights(want))
		}
		return nil
	})
	toMerge := eventually(t, 60*time.Second, "gossip merged again (3 alive members on every node)", func() error {
		for _, n := range nodes {
			ms, err := c.members(n)
			if err != nil {
				return err
			}
			alive := 0
			for _, m := range ms {
				if m.Status == "alive" {
					alive++
				}
			}
			if alive != len(nodes) {
				return fmt.Errorf("%s sees %d alive members", n, alive)
			}
		}
		return nil
	})
	c.waitHealthy(60 * time.Second)
	final, _ := c.config(isolated)
	if w := weights(final); w["b1"] != 7 || w["b2"] != 4 {
		t.Errorf("after healing: weights %v, want b1=7 (majority's write, not the isolated node's 9) and b2=4", w)
	}
	ld.stop()
	ld.requireAllAccepted(t)
	if n := ld.report(t); n > 0 {
		t.Errorf("%d requests failed during the partition; want none (the isolated node keeps proxying)", n)
	}
	t.Logf("partition: majority accepted a write %.2fs after the cut; isolated node refused with 503 after %.2fs; partition held %.1fs, until the isolated node had forgotten its peers (%.1fs after the checks above); after reconnecting: config caught up in %.2fs (index %d -> %d), gossip merged in %.2fs",
		toMajority.Seconds(), toRefuse.Seconds(), partitioned.Seconds(), toForget.Seconds(), toCatchUp.Seconds(), stale.Index, want.Index, toMerge.Seconds())
	restoreWeights(t, c)
}

func mapsEqual(a, b map[string]int32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// restoreWeights sets every backend's weight back to 1 for the next fault.
func restoreWeights(t *testing.T, c *cluster) {
	t.Helper()
	for _, b := range backends {
		if o, _, msg := c.setWeight(context.Background(), nodes[0], b, 1, 10*time.Second); o != acked {
			t.Fatalf("restore %s weight: %s: %s", b, o, msg)
		}
	}
}

// backendErrorBound is what a backend's sudden death may cost clients: the
// requests it held when it died (a connect failure is retried on another
// backend, so only those are lost). At most 1% of the requests and never
// more than 20.
func backendErrorBound(sent int64) int64 {
	return min(20, max(1, sent/100))
}

// testBackendKilled SIGKILLs a backend under load: its circuit must open
// on every node (by the node's own failures or a peer's gossiped open),
// clients must see at most a handful of errors, and traffic must return to
// it when it is back.
func testBackendKilled(t *testing.T, c *cluster) {
	const victim = "b2"
	ld := startLoad(c, nodes, loadWorkers, loadPause)
	ld.waitRequests(t, 300, 30*time.Second)
	if total(ld.servedBy(victim)) == 0 {
		t.Fatalf("%s got no traffic before the fault", victim)
	}
	c.kill(victim)
	openOn := make(map[string]string)
	toOpen := eventually(t, 30*time.Second, victim+"'s circuit open on every node", func() error {
		for _, n := range nodes {
			l, err := c.load(n)
			if err != nil {
				return err
			}
			for _, b := range l.Backends {
				if b.ID != victim {
					continue
				}
				for by, st := range b.Breaker {
					if st == "open" {
						openOn[n] = by
					}
				}
			}
			if openOn[n] == "" {
				return fmt.Errorf("%s sees no open circuit for %s", n, victim)
			}
		}
		return nil
	})
	ld.waitRequests(t, 300, 30*time.Second)
	during := ld.servedBy(victim)

	c.start(victim)
	// Back means: answering clients again, and no node holding its circuit
	// open. Which nodes send it how much is p2c's business (it weighs the
	// backends' response times, so a backend that was slow gets little
	// until it proves itself again).
	toReturn := eventually(t, 60*time.Second, "traffic returns to "+victim+" and its circuit closes on every node", func() error {
		if total(ld.servedBy(victim)) <= total(during) {
			return fmt.Errorf("no answer from %s yet", victim)
		}
		for _, n := range nodes {
			l, err := c.load(n)
			if err != nil {
				return err
			}
			for _, b := range l.Backends {
				for by, st := range b.Breaker {
					if b.ID == victim && st != "closed" {
						return fmt.Errorf("%s sees %s's circuit %s on %s", n, victim, st, by)
					}
				}
			}
		}
		return nil
	})
	ld.stop()
	failedN := ld.report(t)
	ld.requireAllAccepted(t)
	t.Logf("backend killed: circuit open on every node %.2fs after the kill (open on: %v); traffic back and every circuit closed %.2fs after docker start",
		toOpen.Seconds(), openOn, toReturn.Seconds())
	if bound := backendErrorBound(ld.sent.Load()); failedN > bound {
		t.Errorf("%d requests failed; the bound is %d (1%% of %d, at most 20)", failedN, bound, ld.sent.Load())
	}
	c.waitHealthy(30 * time.Second)
}

func total(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}

// write is one weight write of testLeaderKilledDuringWrites's history.
type write struct {
	backend string
	weight  int32 // unique per backend, increasing: the writer's sequence
	node    string
	outcome writeOutcome
	msg     string
	end     time.Time
}

// testLeaderKilledDuringWrites SIGKILLs the leader while three clients
// write weights (one per backend, each value unique and increasing) through
// every node in turn. Every acknowledged write must survive: each backend's
// final weight, on every node, is its last acknowledged write or a later
// write whose outcome the client could not know.
func testLeaderKilledDuringWrites(t *testing.T, c *cluster) {
	leader := c.leader(nodes[0])
	ld := startLoad(c, others(leader), loadWorkers, loadPause)

	// The writers keep the addresses they start with: the killed node's
	// refuses connections, as it would for a real client.
	bases := make(map[string]string)
	for _, n := range nodes {
		bases[n] = c.admin(n)
	}
	var mu sync.Mutex
	var history []write // guarded by mu
	var kill time.Time  // guarded by mu
	acksAfterKill := 0  // guarded by mu
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, b := range backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				n := nodes[(i+k)%len(nodes)]
				w := int32(k + 2) // 1 is the starting weight
				o, _, msg := c.setWeightAt(context.Background(), bases[n], b, w, 20*time.Second)
				mu.Lock()
				history = append(history, write{backend: b, weight: w, node: n, outcome: o, msg: msg, end: time.Now()})
				if o == acked && !kill.IsZero() {
					acksAfterKill++
				}
				mu.Unlock()
				if w >= 9999 {
					return
				}
			}
		}()
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopWriters)

	countAcked := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range history {
			if w.outcome == acked {
				n++
			}
		}
		return n
	}
	eventually(t, 30*time.Second, "30 acknowledged writes before the kill", func() error {
		if n := countAcked(); n < 30 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})
	c.kill(leader)
	mu.Lock()
	kill = time.Now()
	mu.Unlock()
	t.Logf("killed the leader %s", leader)
	eventually(t, 60*time.Second, "30 acknowledged writes after the kill", func() error {
		mu.Lock()
		defer mu.Unlock()
		if acksAfterKill < 30 {
			return fmt.Errorf("%d acknowledged", acksAfterKill)
		}
		return nil
	})
	stopWriters()
	ld.stop()
	failedN := ld.report(t)
	ld.requireAllAccepted(t)

	c.start(leader)
	c.waitHealthy(90 * time.Second)

	mu.Lock()
	defer mu.Unlock()
	var counts [3]int
	firstAck := time.Duration(0)
	for _, w := range history {
		counts[w.outcome]++
		if w.outcome == acked && w.end.After(kill) && firstAck == 0 {
			firstAck = w.end.Sub(kill)
		}
	}
	t.Logf("writes: %d acknowledged, %d failed (definite), %d indeterminate; first acknowledged write %.2fs after the kill",
		counts[acked], counts[failed], counts[indeterminate], firstAck.Seconds())
	shown := 0
	for _, w := range history {
		if w.outcome != acked && shown < 5 {
			t.Logf("  e.g. %s %s=%d via %s: %s", w.outcome, w.backend, w.weight, w.node, w.msg)
			shown++
		}
	}
	for _, n := range nodes {
		cfg, err := c.config(n)
		if err != nil {
			t.Fatal(err)
		}
		got := weights(cfg)
		for _, b := range backends {
			allowed := allowedFinal(history, b)
			if !slices.Contains(allowed, got[b]) {
				t.Errorf("%s: final weight of %s is %d; the last acknowledged write or a later indeterminate one allows only %v", n, b, got[b], allowed)
			}
		}
	}
	if failedN > 0 {
		t.Errorf("%d requests failed through the surviving nodes; want none", failedN)
	}
	restoreWeights(t, c)
}

// allowedFinal lists the weights backend b may end with: its last
// acknowledged write (or the starting 1 when none was), or any later
// indeterminate write.
func allowedFinal(history []write, b string) []int32 {
	last := int32(1)
	for _, w := range history {
		if w.backend == b && w.outcome == acked && w.weight > last {
			last = w.weight
		}
	}
	allowed := []int32{last}
	for _, w := range history {
		if w.backend == b && w.outcome == indeterminate && w.weight > last {
			allowed = append(allowed, w.weight)
		}
	}
	return allowed
}

// testNodeKilled SIGKILLs a follower: clients of the other two nodes must
// see no failed request, and its counts must leave their view of the
// cluster's load.
func testNodeKilled(t *testing.T, c *cluster) {
	victim := others(c.leader(nodes[0]))[0]
	survivors := others(victim)
	ld := startLoad(c, survivors, loadWorkers, loadPause)
	ld.waitRequests(t, 300, 30*time.Second)
	// inView reports which survivors still hold a report of the victim's.
	inView := func() ([]string, error) {
		var holders []string
		for _, s := range survivors {
			l, err := c.load(s)
			if err != nil {
				return nil, err
			}
			for _, b := range l.Backends {
				if slices.ContainsFunc(b.Peers, func(p admin.PeerLoad) bool { return p.Node == victim }) {
					holders = append(holders, s)
					break
				}
			}
		}
		return holders, nil
	}
	// The check below must be able to fail: first the victim's report is
	// in every survivor's view.
	eventually(t, 30*time.Second, victim+"'s report in every survivor's /v1/load", func() error {
		h, err := inView()
		if err == nil && len(h) != len(survivors) {
			err = fmt.Errorf("only %v hold it", h)
		}
		return err
	})
	killed := time.Now()
	c.kill(victim)
	t.Logf("killed %s (a follower)", victim)
	eventually(t, 30*time.Second, victim+"'s counts leave the survivors' /v1/load", func() error {
		h, err := inView()
		if err == nil && len(h) > 0 {
			err = fmt.Errorf("%v still count %s's report", h, victim)
		}
		return err
	})
	toLeaveView := time.Since(killed)
	toDead := eventually(t, 60*time.Second, victim+" declared dead by the survivors", func() error {
		for _, s := range survivors {
			ms, err := c.members(s)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if m.Name == victim && m.Status != "dead" {
					return fmt.Errorf("%s sees %s as %s", s, victim, m.Status)
				}
			}
		}
		return nil
	})
	ld.waitRequests(t, 300, 30*time.Second)
	ld.stop()
	failedN := ld.report(t)
	ld.requireAllAccepted(t)
	t.Logf("node killed: its counts left the survivors' view %.2fs after the kill, declared dead after %.2fs", toLeaveView.Seconds(), toDead.Seconds())
	if failedN > 0 {
		t.Errorf("%d requests through the surviving nodes failed; want none", failedN)
	}
	start := time.Now()
	c.start(victim)
	c.waitHealthy(90 * time.Second)
	t.Logf("restarted %s: back in the cluster after %.2fs", victim, time.Since(start).Seconds())
}

// testRollingRestart restarts every node in turn (SIGTERM, wait for the
// exit, start, wait until it is ready and caught up) under load sent to
// all of them: no request that a node accepted may fail, and the config
// must be intact.
func testRollingRestart(t *testing.T, c *cluster) {
	leader := c.leader(nodes[0])
	before, err := c.config(leader)
	if err != nil {
		t.Fatal(err)
	}
	ld := startLoad(c, nodes, loadWorkers, loadPause)
	ld.waitRequests(t, 200, 30*time.Second)
	order := append(others(leader), leader) // the leader last: one hand-over
	for _, n := range order {
		start := time.Now()
		c.stop(n)
		stopped := time.Since(start)
		c.start(n)
		c.waitHealthy(90 * time.Second)
		ld.setTarget(n, c.traffic(n))
		t.Logf("restarted %s: graceful stop %.2fs, back and caught up %.2fs after the stop began", n, stopped.Seconds(), time.Since(start).Seconds())
		ld.waitRequests(t, 200, 30*time.Second)
	}
	ld.stop()
	failedN := ld.report(t)
	if failedN > 0 {
		t.Errorf("%d requests failed during the rolling restart; want none", failedN)
	}
	for _, n := range nodes {
		cfg, err := c.config(n)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Index < before.Index || !mapsEqual(weights(cfg), weights(before)) {
			t.Errorf("%s after the rolling restart: index %d weights %v; before: index %d weights %v", n, cfg.Index, weights(cfg), before.Index, weights(before))
		}
	}
}
