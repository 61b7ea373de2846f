package consensus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

var seedSet = []Backend{
	{ID: "a", Address: "127.0.0.1:9101", Weight: 3, Source: SourceStatic},
	{ID: "b", Address: "127.0.0.1:9102", Weight: 1, Source: SourceStatic},
}

func sameConfig(stores []*Store) error {
	want := stores[0].Config()
	for _, s := range stores[1:] {
		if got := s.Config(); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("%s has %+v, %s has %+v", s.ID(), got, stores[0].ID(), want)
		}
	}
	return nil
}

// TestCluster walks a 3-node cluster through replication, follower writes,
// leader failure, restart from disk and loss of quorum.
func TestCluster(t *testing.T) {
	c := newCluster(t, 3)

	// Replication: applied on the leader, then on all three.
	res := c.apply(Seed(seedSet))
	if !res.Changed || res.Index == 0 {
		t.Fatalf("seed result %+v", res)
	}
	c.waitApplied(res.Index)
	if err := sameConfig(c.running()); err != nil {
		t.Fatal(err)
	}
	if b, _ := c.stores[2].Config().Backend("a"); b.Weight != 3 || b.SourceWeight != 3 {
		t.Fatalf("replicated a = %+v", b)
	}
	// A second seed, as another node would send it, changes nothing.
	if again := c.apply(Seed(seedSet[:1])); again.Changed || again.Index != res.Index {
		t.Fatalf("second seed %+v, want no change at %d", again, res.Index)
	}

	// A node that joined through AddVoter has state: bootstrapping it is a no-op.
	leader := c.waitLeader()
	var follower *Store
	for _, s := range c.running() {
		if s != leader {
			follower = s
		}
	}
	if err := follower.BootstrapSelf(); err != nil {
		t.Fatalf("bootstrap a joined node: %v", err)
	}
	c.waitStable(3)

	t.Run("follower write is refused with the leader's name", func(t *testing.T) {
		_, err := follower.Apply(ctxTimeout(t, 2*time.Second), SetWeight("a", 9))
		lid, _ := follower.Leader()
		if !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), lid) {
			t.Fatalf("follower Apply = %v, want ErrNotLeader naming %s", err, lid)
		}
		// Validation comes first, on any node.
		if _, err := follower.Apply(context.Background(), SetWeight("a", -1)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("invalid on follower = %v", err)
		}
	})

	t.Run("FSM refusals come back through raft", func(t *testing.T) {
		l := c.waitLeader()
		before := l.AppliedIndex()
		for _, tc := range []struct {
			cmd  Command
			want error
		}{
			{Delete("ghost"), ErrUnknownBackend},
			{SetWeight("a", 5).If(before - 1), ErrConflict},
			{SetWeight("a", MaxWeight+1), ErrInvalid},
		} {
			res, err := l.Apply(ctxTimeout(t, 5*time.Second), tc.cmd)
			if !errors.Is(err, tc.want) {
				t.Fatalf("%+v: err %v, want %v", tc.cmd, err, tc.want)
			}
			if res.Index > before || l.AppliedIndex() != before {
				t.Fatalf("refused command moved the index: %+v", res)
			}
		}
		res, err := l.Apply(ctxTimeout(t, 5*time.Second), SetWeight("a", 5).If(before))
		if err != nil || !res.Changed || res.Index <= before {
			t.Fatalf("conditional write at the current index: %+v %v", res, err)
		}
		c.waitApplied(res.Index)
	})

	// Leader failure: a new leader is elected and accepts writes.
	old := c.waitLeader()
	oldIdx := c.index(old)
	atClose := old.Config()
	killed := time.Now()
	c.stop(oldIdx)
	res = c.apply(SetWeight("b", 42))
	t.Logf("fail-over: kill to first accepted write %v", time.Since(killed).Round(time.Millisecond))
	if nl := c.leader(); nl == nil || nl.ID() == c.opts[oldIdx].NodeID {
		t.Fatalf("no new leader")
	}
	c.waitApplied(res.Index)

	// Restart from the same data dir: state and config come back at once
	// (snapshot taken on Close), no bootstrap, then it catches up.
	s, err := Open(c.opts[oldIdx])
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c.stores[oldIdx] = s
	if has, err := s.HasState(); !has || err != nil {
		t.Fatalf("HasState after restart = %v, %v", has, err)
	}
	if got := s.Config(); !reflect.DeepEqual(got, atClose) {
		t.Fatalf("config right after reopen = %+v, want %+v", got, atClose)
	}
	if s.RaftAddr() != old.RaftAddr() {
		t.Fatalf("port 0 did not reuse the old address: %s vs %s", s.RaftAddr(), old.RaftAddr())
	}
	c.waitApplied(res.Index)
	if b, _ := s.Config().Backend("b"); b.Weight != 42 || !b.Pinned {
		t.Fatalf("restarted node did not catch up: b = %+v", b)
	}
	c.waitStable(3)

	// Quorum loss: stop two of three, keeping the leader as the survivor.
	survivor := c.waitLeader()
	last := c.apply(SetDrain("a", true))
	c.waitApplied(last.Index)
	want := survivor.Config()
	for i, x := range c.stores {
		if x != nil && x != survivor {
			c.stop(i)
		}
	}
	start := time.Now()
	_, err = survivor.Apply(ctxTimeout(t, 5*time.Second), SetWeight("a", 1))
	if !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrNotLeader) {
		t.Fatalf("write without quorum = %v, want ErrNoLeader or ErrNotLeader", err)
	}
	// Proposed to a leader that then lost its quorum, the write may still
	// commit if the others come back: the error must say so.
	if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("write proposed without quorum = %v, want it marked ErrOutcomeUnknown", err)
	}
	t.Logf("write without quorum refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
	testutil.Eventually(t, 5*time.Second, "survivor steps down", func() error {
		if survivor.IsLeader() {
			return errors.New("still leader")
		}
		_, err := survivor.Apply(ctxTimeout(t, time.Second), SetWeight("a", 1))
		if !errors.Is(err, ErrNoLeader) {
			return fmt.Errorf("apply = %v", err)
		}
		if errors.Is(err, ErrOutcomeUnknown) {
			return fmt.Errorf("a write refused by a follower is definitely not applied: %v", err)
		}
		return nil
	})
	if got := survivor.Config(); !reflect.DeepEqual(got, want) {
		t.Fatalf("survivor lost its config: %+v, want %+v", got, want)
	}
	// A read-your-write wait for an index that cannot come honours its deadline.
	err = survivor.WaitIndex(ctxTimeout(t, 100*time.Millisecond), want.Index+1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitIndex without quorum = %v", err)
	}
}

// TestWaitIndexAndSubscriptions covers read-your-writes waiting, change and
// leadership signals, and what Close does to them.
func TestWaitIndexAndSubscriptions(t *testing.T) {
	s := openStore(t, testOptions(t, "solo", t.TempDir(), testLogger(t)))
	lead := s.SubscribeLeadership()
	<-lead // initial signal
	if err := s.BootstrapSelf(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lead:
	case <-time.After(5 * time.Second):
		t.Fatal("no leadership signal after bootstrap")
	}
	testutil.Eventually(t, 5*time.Second, "leader", func() error {
		if !s.IsLeader() || s.State() != "leader" {
			return errors.New(s.State())
		}
		return nil
	})
	if id, addr := s.Leader(); id != "solo" || addr != s.RaftAddr() {
		t.Fatalf("Leader() = %s %s", id, addr)
	}
	if err := s.Barrier(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}

	changes := s.Subscribe()
	<-changes // initial signal
	if err := s.WaitIndex(context.Background(), 0); err != nil {
		t.Fatalf("WaitIndex(0): %v", err)
	}
	err := s.WaitIndex(ctxTimeout(t, 50*time.Millisecond), 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitIndex before any write = %v", err)
	}

	waited := make(chan error, 1)
	go func() { waited <- s.WaitIndex(ctxTimeout(t, 10*time.Second), 1) }()
	res, err := s.Apply(ctxTimeout(t, 5*time.Second), Seed(seedSet))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if s.AppliedIndex() != res.Index || s.Config().Index != res.Index {
		t.Fatalf("applied %d, result %d", s.AppliedIndex(), res.Index)
	}
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("no change signal")
	}
	// Config() hands out a copy.
	cfg := s.Config()
	cfg.Backends[0].Weight = 9999
	if b, _ := s.Config().Backend("a"); b.Weight == 9999 {
		t.Fatal("Config() shares its slice")
	}

	pending := make(chan error, 1)
	go func() { pending <- s.WaitIndex(context.Background(), res.Index+100) }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := <-pending; !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitIndex across Close = %v", err)
	}
	if _, ok := <-changes; ok {
		t.Fatal("Subscribe channel not closed")
	}
	for range lead { // drain a pending signal, then it must be closed
	}
	_, err = s.Apply(context.Background(), SetWeight("a", 1))
	if !errors.Is(err, ErrNoLeader) || !errors.Is(err, ErrClosed) {
		t.Fatalf("Apply after Close = %v", err)
	}
	if s.State() != "shutdown" {
		t.Fatalf("state after close %q", s.State())
	}
}

// TestBootstrapGuard shows why bootstrapping is guarded by HasState: a
// restarted node has state, rejoins by itself, and BootstrapSelf (even with
// a different server list) changes nothing.
func TestBootstrapGuard(t *testing.T) {
	o := testOptions(t, "g", t.TempDir(), testLogger(t))
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if has, err := s.HasState(); has || err != nil {
		t.Fatalf("fresh node HasState = %v, %v", has, err)
	}
	if err := s.BootstrapSelf(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "leader", func() error {
		if !s.IsLeader() {
			return errors.New(s.State())
		}
		return nil
	})
	res, err := s.Apply(ctxTimeout(t, 5*time.Second), Seed(seedSet))
	if err != nil {
		t.Fatal(err)
	}
	addr := s.RaftAddr()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, o)
	if has, err := s.HasState(); !has || err != nil {
		t.Fatalf("restarted node HasState = %v, %v", has, err)
	}
	if s.Config().Index != res.Index {
		t.Fatalf("config not restored on open: index %d, want %d", s.Config().Index, res.Index)
	}
	// Both bootstraps are no-ops: the stored configuration stays.
	if err := s.BootstrapSelf(); err != nil {
		t.Fatalf("BootstrapSelf with state: %v", err)
	}
	if err := s.Bootstrap([]Server{{ID: "g", Address: addr, Voter: true}, {ID: "other", Address: "127.0.0.1:1", Voter: true}}); err != nil {
		t.Fatalf("Bootstrap with state: %v", err)
	}
	srv, err := s.Servers()
	if err != nil || len(srv) != 1 || srv[0] != (Server{ID: "g", Address: addr, Voter: true}) {
		t.Fatalf("servers after guarded bootstraps = %+v %v", srv, err)
	}
	// It elects itself from its stored configuration and takes writes.
	testutil.Eventually(t, 5*time.Second, "leader after restart", func() error {
		if !s.IsLeader() {
			return errors.New(s.State())
		}
		return nil
	})
	r2, err := s.Apply(ctxTimeout(t, 5*time.Second), SetWeight("a", 7))
	if err != nil || r2.Index <= res.Index {
		t.Fatalf("apply after restart: %+v %v", r2, err)
	}
}

// TestBootstrapIdenticalList starts three founders that all call Bootstrap
// with the same list (in different orders, concurrently), as
// -bootstrap-expect 3 does, several times: exactly one cluster forms.
func TestBootstrapIdenticalList(t *testing.T) {
	logger := testLogger(t)
	for round := range 3 {
		var stores []*Store
		var list []Server
		for i := range 3 {
			s := openStore(t, testOptions(t, fmt.Sprintf("f%d", i), t.TempDir(), logger))
			stores = append(stores, s)
			list = append(list, Server{ID: s.ID(), Address: s.RaftAddr(), Voter: true})
		}
		var wg sync.WaitGroup
		for i, s := range stores {
			mine := append([]Server(nil), list[i:]...)
			mine = append(mine, list[:i]...) // each founder discovered the others in another order
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Bootstrap(mine); err != nil {
					t.Errorf("bootstrap %s: %v", s.ID(), err)
				}
			}()
		}
		wg.Wait()
		c := &testCluster{t: t, stores: stores}
		c.waitStable(3)
		leaders := 0
		for _, s := range stores {
			if s.IsLeader() {
				leaders++
			}
		}
		if leaders != 1 {
			t.Fatalf("round %d: %d leaders", round, leaders)
		}
		res := c.apply(Seed(seedSet))
		c.waitApplied(res.Index)
		if err := sameConfig(stores); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, s := range stores {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestUnguardedBootstrapDiverges documents the failure the guard and the
// bootstrap rules prevent: two nodes that each bootstrapped alone form two
// clusters, and adding one to the other does not merge them. Each keeps the
// change it made in its own cluster, silently and for good.
func TestUnguardedBootstrapDiverges(t *testing.T) {
	logger := testLogger(t)
	a := openStore(t, testOptions(t, "a", t.TempDir(), logger))
	b := openStore(t, testOptions(t, "b", t.TempDir(), logger))
	for _, s := range []*Store{a, b} {
		if err := s.BootstrapSelf(); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 5*time.Second, s.ID()+" leader", func() error {
			if !s.IsLeader() {
				return errors.New(s.State())
			}
			return nil
		})
		set := []Backend{{ID: "from-" + s.ID(), Address: "127.0.0.1:80", Weight: 1, Source: SourceStatic}}
		if _, err := s.Apply(ctxTimeout(t, 5*time.Second), Seed(set)); err != nil {
			t.Fatal(err)
		}
	}
	// The mistake: treat b as a fresh node and add it to a's cluster.
	err := a.AddVoter(ctxTimeout(t, 3*time.Second), b.ID(), b.RaftAddr())
	t.Logf("AddVoter of a node from another cluster: %v", err)
	// Give replication a bounded window to "fix" it: a's later entries may
	// even reach b, but the entries b already applied are never replaced.
	if a.IsLeader() {
		_, _ = a.Apply(ctxTimeout(t, 2*time.Second), Upsert("later", "127.0.0.1:81", nil, false))
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, ok := b.Config().Backend("later"); ok {
			break
		}
	}
	_, bLater := b.Config().Backend("later")
	_, bHasA := b.Config().Backend("from-a")
	_, bHasB := b.Config().Backend("from-b")
	_, aHasB := a.Config().Backend("from-b")
	t.Logf("a: %+v\nb: %+v", a.Config().Backends, b.Config().Backends)
	if bHasA || !bHasB || aHasB {
		t.Fatalf("expected divergence: b has from-a=%v from-b=%v; a has from-b=%v", bHasA, bHasB, aHasB)
	}
	t.Logf("diverged for good (b got a's later entry: %v): this is why a node that joins must never bootstrap", bLater)
}

// The leader knows from raft itself which servers it cannot reach: the
// evidence the node wants before reaping a server gossip calls dead.
func TestLeaderSeesUnreachableServers(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.waitLeader()
	var followers []*Store
	for _, s := range c.running() {
		if s != leader {
			followers = append(followers, s)
		}
	}
	gone, alive := followers[0], followers[1]
	if leader.Unreachable(gone.ID()) || leader.Unreachable(alive.ID()) {
		t.Fatal("a healthy follower counts as unreachable")
	}
	c.stop(c.index(gone))
	testutil.Eventually(t, 10*time.Second, "the leader to see the stopped follower unreachable", func() error {
		if !leader.Unreachable(gone.ID()) {
			return errors.New("not yet")
		}
		return nil
	})
	if leader.Unreachable(alive.ID()) {
		t.Error("the running follower counts as unreachable")
	}
	if alive.Unreachable(gone.ID()) {
		t.Error("a follower has no heartbeat evidence and must say false")
	}
}

// A server nobody can connect to would only enlarge the quorum: AddVoter
// refuses it on plain TCP too, and the configuration stays as it was.
func TestAddVoterRefusesUnreachableServer(t *testing.T) {
	c := newCluster(t, 1)
	leader := c.waitLeader()
	addr := testutil.FreeAddr(t)
	if err := leader.AddVoter(ctxTimeout(t, 5*time.Second), "gone", addr); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("adding a server nobody listens for: %v; want connection refused", err)
	}
	servers, err := leader.Servers()
	if err != nil || len(servers) != 1 {
		t.Fatalf("servers after the refusal: %+v %v; want the leader alone", servers, err)
	}
}
