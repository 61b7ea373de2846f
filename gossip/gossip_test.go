package gossip

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// The propagation deadline the cluster tests assert. On loopback a change
// arrives in a few ms (see the benchmarks); the slack absorbs -race and a
// busy 2-CPU machine.
const propagation = 3 * time.Second

func TestClusterMembersSeeEachOther(t *testing.T) {
	nodes := startCluster(t, 4, func(c *Config) {
		c.Meta = map[string]string{"admin": "127.0.0.1:80" + c.Name[len(c.Name)-1:]}
	})
	for _, nd := range nodes {
		ms := nd.Members()
		for i, m := range ms {
			want := nodes[i]
			if m.Name != want.name || m.Addr != want.Addr() || m.Meta["admin"] != "127.0.0.1:80"+fmt.Sprint(i) {
				t.Errorf("%s: member %d = %+v, want %s at %s", nd.name, i, m, want.name, want.Addr())
			}
		}
	}
	// Every node sends its (empty) state at once, so each sees 3 live peers.
	testutil.Eventually(t, propagation, "3 peer reports on every node", func() error {
		for _, nd := range nodes {
			if ps := nd.Peers(); len(ps) != 3 {
				return fmt.Errorf("%s has reports from [%s]", nd.name, names(ps))
			}
			for _, p := range nd.Peers() {
				if p.Node == nd.name {
					return fmt.Errorf("%s lists itself as a peer", nd.name)
				}
			}
		}
		return nil
	})
}

func TestPublishReachesEveryPeer(t *testing.T) {
	nodes := startCluster(t, 5, nil)
	src := nodes[2]
	sub := nodes[0].Subscribe()
	for round, inflight := range []int64{7, 8, 0, 1234} {
		want := []BackendState{
			{ID: "b1", InFlight: inflight, Breaker: Closed},
			{ID: "b2", InFlight: int64(round), Breaker: Open},
		}
		began := time.Now()
		src.Publish(want)
		testutil.Eventually(t, propagation, fmt.Sprintf("round %d visible everywhere", round), func() error {
			for _, nd := range nodes {
				if nd == src {
					continue
				}
				if err := hasState(nd, src.name, want); err != nil {
					return err
				}
			}
			return nil
		})
		t.Logf("round %d: visible on all 4 peers after %v", round, time.Since(began).Round(100*time.Microsecond))
	}
	select {
	case <-sub:
	default:
		t.Error("subscriber got no change signal")
	}
	// Re-publishing the same state sends nothing new.
	before := src.Stats().Rounds
	for range 100 {
		src.Publish([]BackendState{{ID: "b1", InFlight: 1234}, {ID: "b2", InFlight: 3, Breaker: Open}})
	}
	if got := src.Stats().Rounds - before; got > 2 {
		t.Errorf("unchanged publishes caused %d send rounds", got)
	}
}

// A report is one UDP packet that nobody acknowledges. When the packet
// carrying a node's last change is lost, its peers must not stay on the old
// state until the next refresh (ReportTTL/3, 10 s here) while they take the
// silence for "nothing changed": the change is sent a second time.
func TestLostChangeIsRepaired(t *testing.T) {
	nodes := startCluster(t, 2, func(c *Config) {
		c.SendInterval = 20 * time.Millisecond
		c.ReportTTL = 30 * time.Second
		c.PushPullInterval = time.Minute
	})
	a, b := nodes[0], nodes[1]
	first := []BackendState{{ID: "b1", InFlight: 3}}
	a.Publish(first)
	testutil.Eventually(t, propagation, "first state on b", func() error { return hasState(b, a.name, first) })
	// Let the sender go quiet, so the next change leaves in one round at once.
	before := a.Stats().Rounds
	testutil.Eventually(t, propagation, "the first state's rounds done", func() error {
		r := a.Stats().Rounds
		time.Sleep(5 * a.cfg.SendInterval)
		if a.Stats().Rounds != r {
			return fmt.Errorf("still sending (%d rounds since)", r-before)
		}
		return nil
	})

	a.lose.Store(1) // b is the only peer: the change's one packet
	second := []BackendState{{ID: "b1", InFlight: 9}}
	a.Publish(second)
	took := testutil.Eventually(t, 3*time.Second, "the lost change on b", func() error { return hasState(b, a.name, second) })
	t.Logf("the lost change reached b after %v", took.Round(time.Millisecond))
	if n := a.lose.Load(); n != 0 {
		t.Fatalf("%d packets still to lose: the change was never sent", n)
	}
}

// Publish is called from many goroutines at once; the last state wins and
// the sender coalesces: far fewer rounds than publishes.
func TestPublishCoalescesConcurrentChanges(t *testing.T) {
	nodes := startCluster(t, 2, func(c *Config) { c.SendInterval = 50 * time.Millisecond })
	a, b := nodes[0], nodes[1]
	before := a.Stats().Rounds
	done := make(chan struct{})
	for w := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 2000 {
				a.Publish([]BackendState{{ID: "b", InFlight: int64(w*10000 + i)}})
			}
		}()
	}
	for range 4 {
		<-done
	}
	final := []BackendState{{ID: "b", InFlight: -1}}
	a.Publish(final)
	testutil.Eventually(t, propagation, "final state on b", func() error { return hasState(b, a.name, final) })
	if rounds := a.Stats().Rounds - before; rounds > 100 {
		t.Errorf("8001 publishes took %d send rounds; want coalescing", rounds)
	}
}

func TestTwoHundredBackendsReachAPeer(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	want := backends(200, "backend-%03d")
	a.Publish(want)
	testutil.Eventually(t, propagation, "200 backends on b", func() error { return hasState(b, a.name, want) })
	// (b may apply the last chunk before a's sender counts it: poll.)
	testutil.Eventually(t, propagation, "a split round counted", func() error {
		if st := a.Stats(); st.MessagesSent < st.Rounds+2 {
			return fmt.Errorf("%d messages in %d rounds: the 200 backends were not split", st.MessagesSent, st.Rounds)
		}
		return nil
	})
	// And a much bigger state (many chunks) travels too.
	big := backends(2000, "a-rather-long-backend-name-%04d")
	a.Publish(big)
	testutil.Eventually(t, propagation, "2000 backends on b", func() error { return hasState(b, a.name, big) })
}

// A replayed older chunk from a real peer, over real UDP, is ignored.
func TestStaleSeqIgnored(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	want := []BackendState{{ID: "b1", InFlight: 5}}
	a.Publish(want)
	testutil.Eventually(t, propagation, "b sees a's report", func() error { return hasState(b, a.name, want) })
	p, _ := report(b, a.name)

	staleBefore := b.Stats().StaleIgnored
	old, _ := encodeReport(a.name, p.Seq-1, []BackendState{{ID: "b1", InFlight: 999}}, MaxMessageSize)
	var target []*node
	for _, n := range a.targets() {
		if n.Name == b.name {
			target = append(target, b)
			if err := a.ml.SendBestEffort(&n, old[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(target) != 1 {
		t.Fatal("a does not list b as a target")
	}
	testutil.Eventually(t, propagation, "stale counter", func() error {
		if b.Stats().StaleIgnored == staleBefore {
			return fmt.Errorf("StaleIgnored still %d", staleBefore)
		}
		return nil
	})
	got, _ := report(b, a.name)
	if got.Seq < p.Seq || got.Backends[0].InFlight != 5 {
		t.Fatalf("stale chunk was applied: %+v", got)
	}
}

func TestLeaveRemovesReportAndShowsLeft(t *testing.T) {
	nodes := startCluster(t, 3, func(c *Config) { c.ReportTTL = time.Minute })
	leaver := nodes[2]
	leaver.Publish([]BackendState{{ID: "b1", InFlight: 3}})
	for _, nd := range nodes[:2] {
		testutil.Eventually(t, propagation, "report from leaver", func() error {
			return hasState(nd, leaver.name, []BackendState{{ID: "b1", InFlight: 3}})
		})
	}
	began := time.Now()
	if err := leaver.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// ReportTTL is a minute: only the leave itself can remove the report.
	for _, nd := range nodes[:2] {
		testutil.Eventually(t, propagation, "leaver gone from "+nd.name, func() error {
			if _, ok := report(nd, leaver.name); ok {
				return fmt.Errorf("%s still has the leaver's report", nd.name)
			}
			if s := memberState(nd, leaver.name); s != StateLeft {
				return fmt.Errorf("%s lists the leaver as %s", nd.name, s)
			}
			return nil
		})
	}
	t.Logf("leave seen by both peers after %v", time.Since(began).Round(time.Millisecond))
	// memberlist's own leave arrives too; the state stays "left".
	testutil.Eventually(t, propagation, "memberlist leave event", func() error {
		for _, nd := range nodes[:2] {
			nd.mu.Lock()
			r := nd.nodes[leaver.name]
			state := r.state
			nd.mu.Unlock()
			if state != StateLeft {
				return fmt.Errorf("%s: memberlist state %s", nd.name, state)
			}
		}
		return nil
	})
}

func TestCrashedNodeDeclaredDead(t *testing.T) {
	nodes := startCluster(t, 3, func(c *Config) { c.ReportTTL = time.Minute })
	victim := nodes[2]
	victim.Publish([]BackendState{{ID: "b1", InFlight: 9}})
	for _, nd := range nodes[:2] {
		testutil.Eventually(t, propagation, "report from victim", func() error {
			return hasState(nd, victim.name, []BackendState{{ID: "b1", InFlight: 9}})
		})
	}
	began := time.Now()
	if err := victim.crash(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The TTL is a minute, so only memberlist's failure detector removes it.
	for _, nd := range nodes[:2] {
		testutil.Eventually(t, 30*time.Second, "victim declared dead on "+nd.name, func() error {
			if _, ok := report(nd, victim.name); ok {
				return fmt.Errorf("%s still has the victim's report", nd.name)
			}
			if s := memberState(nd, victim.name); s != StateDead {
				return fmt.Errorf("%s lists the victim as %s", nd.name, s)
			}
			return nil
		})
	}
	t.Logf("declared dead on both peers after %v", time.Since(began).Round(time.Millisecond))
}

// A peer whose reports stop (here: its sender is silenced) leaves the view
// after ReportTTL and is listed as suspect while memberlist still says alive.
func TestReportExpiresAfterTTL(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	a.Publish([]BackendState{{ID: "b1", InFlight: 1}})
	testutil.Eventually(t, propagation, "report", func() error { return hasState(b, a.name, []BackendState{{ID: "b1", InFlight: 1}}) })
	// From now on b treats every report from a as stale, as if a's packets
	// stopped arriving while memberlist still sees a alive.
	b.mu.Lock()
	b.nodes[a.name].seq += 100000 // a's next 100000 rounds are stale
	b.mu.Unlock()
	sub := b.Subscribe()
	began := time.Now()
	testutil.Eventually(t, 3*time.Second, "report expired", func() error {
		if _, ok := report(b, a.name); ok {
			return fmt.Errorf("still live after %v", time.Since(began))
		}
		return nil
	})
	if age := time.Since(began); age < 500*time.Millisecond {
		t.Errorf("report left after %v, before the 1s TTL could pass", age)
	}
	testutil.Eventually(t, 2*time.Second, "expiry signalled and member suspect", func() error {
		select {
		case <-sub:
		default:
			return fmt.Errorf("no signal")
		}
		if s := memberState(b, a.name); s != StateSuspect {
			return fmt.Errorf("a is %s", s)
		}
		if b.Stats().ReportsExpired == 0 {
			return fmt.Errorf("ReportsExpired is 0")
		}
		return nil
	})
}

func TestMismatchedKeysDoNotMerge(t *testing.T) {
	key1 := []byte("0123456789abcdef")
	key2 := []byte("fedcba9876543210fedcba98") // 24 bytes
	a := start(t, func() Config { c := testConfig(t, "a"); c.Key = key1; return c }())
	tests := []struct {
		name string
		key  []byte
		want string
	}{
		{"other key", key2, "-gossip-key differs"},
		{"no key", nil, "seed uses a -gossip-key and we have none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "b-"+strings.ReplaceAll(tc.name, " ", "-"))
			cfg.Key = tc.key
			cfg.Join = []string{a.Addr()}
			cfg.JoinTimeout = 500 * time.Millisecond
			b, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = b.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "-join") {
				t.Fatalf("Run = %v; want a join error saying %q", err, tc.want)
			}
			t.Logf("Run: %v", err)
			if ms := a.Members(); len(ms) != 1 {
				t.Errorf("a merged with a node of another key: %v", ms)
			}
		})
	}
	// The same key works.
	c := testConfig(t, "c")
	c.Key = key1
	c.Join = []string{a.Addr()}
	cn := start(t, c)
	testutil.Eventually(t, propagation, "same key joins", func() error { return wantAlive(cn, []*node{a, cn}) })
}

// A node restarted under the same name, on a new port, rejoins; its new
// reports (higher seq) replace the old ones. Both after a clean leave and
// after a crash (memberlist must first declare the old process dead).
func TestRestartedNodeRejoins(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			nodes := startCluster(t, 3, nil)
			old := nodes[2]
			old.Publish([]BackendState{{ID: "b1", InFlight: 1}})
			var oldSeq uint64
			testutil.Eventually(t, propagation, "old report", func() error {
				if err := hasState(nodes[0], old.name, []BackendState{{ID: "b1", InFlight: 1}}); err != nil {
					return err
				}
				p, _ := report(nodes[0], old.name)
				oldSeq = p.Seq
				return nil
			})
			stop := old.stop
			if crash {
				stop = old.crash
			}
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			cfg := testConfig(t, old.name)
			cfg.Join = []string{nodes[0].Addr(), nodes[1].Addr()}
			began := time.Now()
			nn := start(t, cfg)
			if nn.Addr() == old.Addr() {
				t.Logf("restarted on the same address %s", nn.Addr())
			}
			want := []BackendState{{ID: "b1", InFlight: 2}}
			nn.Publish(want)
			testutil.Eventually(t, 30*time.Second, "restarted node's report everywhere", func() error {
				for _, nd := range nodes[:2] {
					if err := hasState(nd, old.name, want); err != nil {
						return err
					}
					if p, _ := report(nd, old.name); p.Seq <= oldSeq {
						return fmt.Errorf("seq %d not above the old %d", p.Seq, oldSeq)
					}
					if s := memberState(nd, old.name); s != StateAlive {
						return fmt.Errorf("%s lists %s as %s", nd.name, old.name, s)
					}
				}
				for _, m := range nodes[0].Members() {
					if m.Name == old.name && m.Addr != nn.Addr() {
						return fmt.Errorf("address %s, want the new %s", m.Addr, nn.Addr())
					}
				}
				return nil
			})
			t.Logf("rejoined after %v", time.Since(began).Round(time.Millisecond))
		})
	}
}

func TestJoinRetriesUntilASeedAppears(t *testing.T) {
	addr := testutil.FreeAddr(t)
	b := start(t, func() Config {
		c := testConfig(t, "late-joiner")
		c.Join = []string{addr}
		return c
	}())
	// Let b fail a few attempts, then start the seed on that address.
	testutil.Eventually(t, 5*time.Second, "three failed attempts", func() error {
		if n := b.joinAttempts.Load(); n < 3 {
			return fmt.Errorf("%d attempts", n)
		}
		return nil
	})
	c := testConfig(t, "seed")
	c.Bind = addr
	a := start(t, c)
	testutil.Eventually(t, 10*time.Second, "joined after retries", func() error { return wantAlive(b, []*node{a, b}) })
}

func TestJoinGivesUpAfterTimeout(t *testing.T) {
	cfg := testConfig(t, "lonely")
	cfg.Join = []string{testutil.FreeAddr(t)}
	cfg.JoinTimeout = 400 * time.Millisecond
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	err = g.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "-join") || !strings.Contains(err.Error(), "gave up after 400ms") {
		t.Fatalf("Run = %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("gave up after %v", took)
	}
	// Cancelling during the retries is a clean stop.
	cfg.Name, cfg.JoinTimeout = "patient", time.Minute
	g2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := g2.Run(ctx); err != nil {
		t.Errorf("Run after cancel during join = %v, want nil", err)
	}
}

func TestUpdateMetaReachesPeers(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	if err := a.UpdateMeta(map[string]string{"raft": "127.0.0.1:9000"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, propagation, "meta on b", func() error {
		for _, m := range b.Members() {
			if m.Name == a.name && m.Meta["raft"] == "127.0.0.1:9000" {
				return nil
			}
		}
		return fmt.Errorf("members %+v", b.Members())
	})
	big := map[string]string{"x": strings.Repeat("y", 600)}
	if err := a.UpdateMeta(big, time.Second); err == nil {
		t.Error("oversized meta accepted")
	}
}

func TestLifecycle(t *testing.T) {
	g, err := New(testConfig(t, "solo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Run(context.Background()); err == nil {
		t.Error("Run after Close succeeded")
	}
	if err := g.UpdateMeta(nil, time.Second); err == nil {
		t.Error("UpdateMeta after Close succeeded")
	}

	n := start(t, testConfig(t, "solo2"))
	testutil.Eventually(t, 5*time.Second, "Run started", func() error {
		n.lifeMu.Lock()
		defer n.lifeMu.Unlock()
		if n.life != lifeRunning {
			return fmt.Errorf("life %d", n.life)
		}
		return nil
	})
	if err := n.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
	if err := n.stop(); err != nil {
		t.Errorf("Run = %v, want nil on a clean stop", err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("Close after Run: %v", err)
	}
	if ms := n.Members(); len(ms) != 1 || ms[0].Name != "solo2" {
		t.Errorf("members of a lone node: %+v", ms)
	}

	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "-node") {
		t.Errorf("New(Config{}) = %v", err)
	}
}

// memberlist's own log lines arrive through slog, not on stderr.
func TestMemberlistLogsGoToSlog(t *testing.T) {
	var buf lockedWriter
	buf.mu = new(sync.Mutex)
	buf.b = new(bytes.Buffer)
	cfg := testConfig(t, "logger")
	cfg.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	buf.mu.Lock()
	out := buf.b.String()
	buf.mu.Unlock()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "component=memberlist") ||
		!strings.Contains(out, "Using dynamic bind port") {
		t.Errorf("memberlist's startup line not in slog output:\n%s", out)
	}
}

// A member declared dead and then forgotten (a partition that outlasted
// GossipToTheDeadTime) is joined again once it answers: here it comes back
// on its address knowing no one, as the far side of a healed partition
// does, and only the others' reconnect can merge the two.
func TestReconnectAfterForgotten(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out memberlist's GossipToTheDeadTime (15 s)")
	}
	nodes := startCluster(t, 2, nil)
	victim := nodes[1]
	addr := victim.Addr()
	if err := victim.crash(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	testutil.Eventually(t, 60*time.Second, "the victim declared dead and then forgotten", func() error {
		for _, m := range nodes[0].Members() {
			if m.Name == victim.name {
				return fmt.Errorf("still listed as %s", m.State)
			}
		}
		return nil
	})
	cfg := testConfig(t, victim.name)
	cfg.Bind = addr
	back := start(t, cfg)
	began := time.Now()
	testutil.Eventually(t, 30*time.Second, "the victim alive again on both sides", func() error {
		if s := memberState(nodes[0], victim.name); s != StateAlive {
			return fmt.Errorf("%s lists %s as %q", nodes[0].name, victim.name, s)
		}
		if s := memberState(back, nodes[0].name); s != StateAlive {
			return fmt.Errorf("%s lists %s as %q", victim.name, nodes[0].name, s)
		}
		return nil
	})
	t.Logf("merged %v after the victim came back", time.Since(began).Round(time.Millisecond))
}

// lostNames lists the members nd still tries to reconnect to.
func lostNames(nd *node) []string {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	var out []string
	for name := range nd.lost {
		out = append(out, name)
	}
	return out
}

// A dead member's address taken by another node (a container that got the
// dead one's IP:port) is not re-joined: the lost entry goes as soon as the
// newcomer is a member, and no "reconnected" is logged for the dead name.
func TestReconnectStopsWhenAnotherNodeHoldsTheAddress(t *testing.T) {
	logger, logs := testLogs(t)
	nodes := startCluster(t, 2, func(c *Config) { c.Logger = logger })
	a, victim := nodes[0], nodes[1]
	addr := victim.Addr()
	if err := victim.crash(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	testutil.Eventually(t, 30*time.Second, "the victim declared dead", func() error {
		if s := memberState(a, victim.name); s != StateDead {
			return fmt.Errorf("%s lists %s as %s", a.name, victim.name, s)
		}
		if l := lostNames(a); len(l) != 1 || l[0] != victim.name {
			return fmt.Errorf("lost %v, want [%s]", l, victim.name)
		}
		return nil
	})

	cfg := testConfig(t, "newcomer")
	cfg.Logger = logger
	cfg.Bind = addr
	cfg.Join = []string{a.Addr()}
	start(t, cfg)
	testutil.Eventually(t, 10*time.Second, "the newcomer alive", func() error {
		if s := memberState(a, "newcomer"); s != StateAlive {
			return fmt.Errorf("%s lists newcomer as %s", a.name, s)
		}
		return nil
	})
	// The reconnect loop ticks every 5 probe intervals (500 ms here): a
	// second is enough for the join event to have dropped the entry.
	testutil.Eventually(t, time.Second, "the dead member's entry dropped", func() error {
		if l := lostNames(a); len(l) != 0 {
			return fmt.Errorf("%s still reconnects to %v", a.name, l)
		}
		return nil
	})
	if s := logs(); strings.Contains(s, "reconnected") {
		t.Errorf("logged a reconnect to %s, which did not come back", victim.name)
	}
}

// frozenPeer listens on TCP, accepts and never answers: a SIGSTOPped
// process, whose kernel still completes connects. It returns the address
// and a channel closed once a connection sends data (memberlist's
// push-pull; the reconnect loop's probe dial sends nothing).
func frozenPeer(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	spoke := make(chan struct{})
	var once sync.Once
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				if n, _ := c.Read(make([]byte, 1)); n > 0 {
					once.Do(func() { close(spoke) })
				}
			}()
		}
	}()
	return ln.Addr().String(), spoke
}

// Stopping does not wait on a re-join in flight to a frozen dead member:
// memberlist's Join would hold it for TCPTimeout (10 s on a LAN), most of
// docker stop's grace period.
func TestStopDoesNotWaitForReconnectToFrozenMember(t *testing.T) {
	addr, spoke := frozenPeer(t)
	cfg := testConfig(t, "stopper")
	cfg.Profile = ProfileLAN // TCPTimeout 10 s; the local profile's is 1 s
	n := start(t, cfg)
	n.mu.Lock()
	n.lost["frozen"] = lostMember{addr: addr, since: time.Now()}
	n.mu.Unlock()
	select {
	case <-spoke:
	case <-time.After(10 * time.Second):
		t.Fatal("no re-join to the frozen member within 10s")
	}

	began := time.Now()
	done := make(chan error, 1)
	go func() { done <- n.stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("Run still running 3s after cancel: it waits on the re-join")
	}
	t.Logf("stopped in %v with a re-join in flight", time.Since(began).Round(time.Millisecond))
}
