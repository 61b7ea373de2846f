package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
	"github.com/thebalancer/balancer/pki"
)

// These tests run the real binary as separate processes, so that a node
// can be killed (SIGKILL: no leave, no leadership transfer) and restarted
// from its data directory, as in production.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func balancerBin(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process test: skipped with -short")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "balancer-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "balancer")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// agent is one running `balancer agent` process.
type agent struct {
	t       testing.TB
	name    string
	dataDir string
	args    []string
	cmd     *exec.Cmd
	logs    *testutil.SyncBuffer
	exited  chan error

	Listen, Admin, Gossip, Raft string
}

// startAgent starts a node on 127.0.0.1 ports the OS picks and waits for
// its start line, which names the bound addresses.
func startAgent(t testing.TB, name, dataDir string, args ...string) *agent {
	t.Helper()
	a := &agent{t: t, name: name, dataDir: dataDir, args: args}
	a.start()
	t.Cleanup(a.stop)
	return a
}

func (a *agent) start() {
	t := a.t
	t.Helper()
	all := append([]string{"agent", "-node", a.name, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0",
		"-data-dir", a.dataDir, "-log-format", "json", "-gossip-profile", "local"}, a.args...)
	a.cmd = exec.Command(balancerBin(t), all...)
	a.logs = &testutil.SyncBuffer{}
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			a.logs.Write([]byte(line + "\n"))
			if strings.Contains(line, `"msg":"node started"`) {
				var m map[string]any
				if json.Unmarshal([]byte(line), &m) == nil {
					select {
					case started <- m:
					default:
					}
				}
			}
		}
	}()
	a.exited = make(chan error, 1)
	go func() { a.exited <- a.cmd.Wait() }()
	select {
	case m := <-started:
		a.Listen, _ = m["listen"].(string)
		a.Admin, _ = m["admin"].(string)
		a.Gossip, _ = m["gossip"].(string)
		a.Raft, _ = m["raft"].(string)
	case err := <-a.exited:
		t.Fatalf("%s exited at start: %v\n%s", a.name, err, a.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start\n%s", a.name, a.logs.String())
	}
}

// kill stops the process without any graceful step.
func (a *agent) kill() {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Kill()
	<-a.exited
	a.cmd = nil
}

// stop sends SIGTERM and expects a clean exit.
func (a *agent) stop() {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.exited:
		if err != nil {
			a.t.Errorf("%s: exit after SIGTERM: %v\n%s", a.name, err, tail(a.logs.String(), 20))
		}
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
		a.t.Errorf("%s did not stop on SIGTERM", a.name)
	}
	a.cmd = nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// client talks to the agent's admin API. An agent started with -tls-ca
// is reached over HTTPS with the client.pem that `balancer certs` wrote
// next to the CA.
func (a *agent) client() *admin.Client {
	for i, arg := range a.args {
		if arg == "-tls-ca" && i+1 < len(a.args) {
			dir := filepath.Dir(a.args[i+1])
			pool, err := pki.LoadPool(a.args[i+1])
			if err != nil {
				a.t.Fatal(err)
			}
			cert, err := pki.LoadKeyPair(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"))
			if err != nil {
				a.t.Fatal(err)
			}
			return admin.NewClient(a.Admin, "", admin.WithTLS(pki.ClientConfig(pool, &cert)))
		}
	}
	return admin.NewClient(a.Admin, "")
}

func (a *agent) members(t testing.TB) []admin.Member {
	m, err := a.client().Members(context.Background())
	if err != nil {
		return nil
	}
	return m.Members
}

func (a *agent) config(t testing.TB) admin.Config {
	c, err := a.client().Config(context.Background())
	if err != nil {
		return admin.Config{}
	}
	return c
}

// leaderName is the leader this node reports, or "".
func (a *agent) leaderName(t testing.TB) string {
	for _, m := range a.members(t) {
		if m.Leader {
			return m.Name
		}
	}
	return ""
}

func (a *agent) getBody(t testing.TB, path string) (int, string) {
	resp, err := http.Get("http://" + a.Listen + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// startDemoBackends runs demo backends in-process for the agents to proxy to.
func startDemoBackends(t testing.TB, names ...string) map[string]string {
	t.Helper()
	addrs := map[string]string{}
	for _, n := range names {
		ctx, cancel := context.WithCancel(context.Background())
		out := &testutil.SyncBuffer{}
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"demo-backend", "-name", n, "-listen", "127.0.0.1:0"}, out, io.Discard)
		}()
		testutil.Eventually(t, 5*time.Second, "demo backend "+n, func() bool { return strings.Contains(out.String(), "listening on") })
		f := strings.Fields(out.String())
		for i, w := range f {
			if w == "on" && i+1 < len(f) {
				addrs[n] = f[i+1]
			}
		}
		t.Cleanup(func() { cancel(); <-done })
	}
	return addrs
}

// startRaftCluster starts n agents with -bootstrap-expect n; nodes 2..n join node 1.
func startRaftCluster(t testing.TB, n int, backends map[string]string, extra ...string) []*agent {
	t.Helper()
	var flags []string
	for id, addr := range backends {
		flags = append(flags, "-backend", id+"="+addr)
	}
	base := t.TempDir()
	var agents []*agent
	for i := 1; i <= n; i++ {
		args := append([]string{"-gossip", "127.0.0.1:0", "-raft", "127.0.0.1:0", "-bootstrap-expect", fmt.Sprint(n)}, flags...)
		args = append(args, extra...)
		if i > 1 {
			args = append(args, "-join", agents[0].Gossip)
		}
		agents = append(agents, startAgent(t, fmt.Sprintf("n%d", i), filepath.Join(base, fmt.Sprintf("n%d", i)), args...))
	}
	testutil.Eventually(t, 20*time.Second, "one leader seen by every node, config seeded everywhere", func() bool {
		l := agents[0].leaderName(t)
		if l == "" {
			return false
		}
		for _, a := range agents {
			if a.leaderName(t) != l || a.config(t).Index == 0 {
				return false
			}
		}
		return true
	})
	return agents
}

func TestProcClusterBootstrapsExactlyOnce(t *testing.T) {
	backends := startDemoBackends(t, "a", "b")
	for round := 0; round < 3; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			agents := startRaftCluster(t, 3, backends)
			leader := agents[0].leaderName(t)
			idx := agents[0].config(t).Index
			for _, a := range agents {
				voters := 0
				for _, m := range a.members(t) {
					if m.RaftRole == "voter" {
						voters++
					}
				}
				if voters != 3 {
					t.Errorf("%s sees %d voters, want 3 (one cluster)", a.name, voters)
				}
				if got := a.leaderName(t); got != leader {
					t.Errorf("%s follows %q, n1 follows %q: two clusters", a.name, got, leader)
				}
				testutil.Eventually(t, 5*time.Second, a.name+" to apply the seed", func() bool { return a.config(t).Index == idx })
			}
		})
	}
}

func TestProcKilledNodeRestartsWithConfig(t *testing.T) {
	backends := startDemoBackends(t, "a", "b")
	agents := startRaftCluster(t, 3, backends)
	var follower *agent
	for _, a := range agents {
		if a.leaderName(t) != a.name {
			follower = a
		}
	}
	before := follower.config(t)
	testutil.Eventually(t, 10*time.Second, "the applied config to be snapshotted on disk", func() bool {
		return snapshotIndex(follower.dataDir) >= before.Index
	})
	follower.kill()
	follower.start()
	after := follower.config(t)
	if after.Index != before.Index || len(after.Backends) != len(before.Backends) {
		t.Fatalf("restarted node's config %+v, before the kill %+v", after, before)
	}
	if code, body := follower.getBody(t, "/"); code != 200 {
		t.Fatalf("restarted node does not proxy: %d %s", code, body)
	}
	testutil.Eventually(t, 20*time.Second, "the restarted node to rejoin and follow the leader", func() bool {
		l := follower.leaderName(t)
		return l != "" && l != follower.name
	})
}

func TestProcMinorityKeepsProxying(t *testing.T) {
	backends := startDemoBackends(t, "a", "b")
	agents := startRaftCluster(t, 3, backends)
	agents[1].kill()
	agents[2].kill()
	survivor := agents[0]
	for i := 0; i < 10; i++ {
		if code, body := survivor.getBody(t, "/"); code != 200 {
			t.Fatalf("survivor of a minority must keep proxying on its last config: %d %s", code, body)
		}
	}
	testutil.Eventually(t, 20*time.Second, "the survivor to report no leader", func() bool { return survivor.leaderName(t) == "" })
}

func followerOf(t testing.TB, agents []*agent) (leader, follower *agent) {
	name := agents[0].leaderName(t)
	for _, a := range agents {
		if a.name == name {
			leader = a
		} else if follower == nil {
			follower = a
		}
	}
	if leader == nil || follower == nil {
		t.Fatalf("no leader/follower among %d agents (leader %q)", len(agents), name)
	}
	return leader, follower
}

func TestProcWeightSetThroughFollowerChangesSplit(t *testing.T) {
	backends := startDemoBackends(t, "a", "b")
	agents := startRaftCluster(t, 3, backends, "-algorithm", "weighted-round-robin")
	_, follower := followerOf(t, agents)
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"weights", "set", "b", "0", "-admin", follower.Admin}, &out, &errb)
	if err != nil {
		t.Fatalf("weights set through a follower: %v %s", err, errb.String())
	}
	if !strings.Contains(out.String(), "applied on every node") {
		t.Fatalf("weights set answer: %q", out.String())
	}
	for _, a := range agents {
		cfg := a.config(t)
		for _, b := range cfg.Backends {
			if b.ID == "b" && (b.Weight != 0 || !b.Pinned) {
				t.Fatalf("%s applies b=%+v after the change", a.name, b)
			}
		}
		for i := 0; i < 20; i++ {
			if code, body := a.getBody(t, "/"); code != 200 || body != "a" {
				t.Fatalf("%s: with b at weight 0 all traffic goes to a; got %d %q", a.name, code, body)
			}
		}
	}
	// Bad input changes nothing.
	idx := agents[0].config(t).Index
	err = run(context.Background(), []string{"weights", "set", "nope", "3", "-admin", follower.Admin}, &out, &errb)
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("unknown backend: %v", err)
	}
	if got := agents[0].config(t).Index; got != idx {
		t.Fatalf("a refused write moved the index %d -> %d", idx, got)
	}
}

func TestProcLeaderKilledNewLeaderAcceptsWrites(t *testing.T) {
	backends := startDemoBackends(t, "a", "b")
	agents := startRaftCluster(t, 3, backends)
	leader, follower := followerOf(t, agents)
	killed := time.Now()
	leader.kill()
	var res admin.WriteResult
	testutil.Eventually(t, 30*time.Second, "a write accepted after the leader's death", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := follower.client().SetWeight(ctx, "a", 7)
		res = r
		return err == nil
	})
	t.Logf("leader killed -> first accepted write: %v (new leader %s)", time.Since(killed).Round(time.Millisecond), res.Leader)
	if res.Leader == leader.name {
		t.Fatalf("write answered by the dead leader %s", res.Leader)
	}
}

func TestProcMinorityRefusesWrites(t *testing.T) {
	backends := startDemoBackends(t, "a", "b")
	agents := startRaftCluster(t, 3, backends)
	agents[1].kill()
	agents[2].kill()
	survivor := agents[0]
	testutil.Eventually(t, 20*time.Second, "the survivor to refuse writes with 503", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, err := survivor.client().SetWeight(ctx, "a", 5)
		var ae *admin.Error
		return errors.As(err, &ae) && ae.Status == 503
	})
	if code, body := survivor.getBody(t, "/"); code != 200 {
		t.Fatalf("survivor stopped proxying: %d %s", code, body)
	}
}

// snapshotIndex is the highest raft index snapshotted in dataDir
// (snapshots/<term>-<index>-<millis>/).
func snapshotIndex(dataDir string) uint64 {
	entries, _ := os.ReadDir(filepath.Join(dataDir, "snapshots"))
	var best uint64
	for _, e := range entries {
		parts := strings.Split(e.Name(), "-")
		if len(parts) != 3 || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		var idx uint64
		if _, err := fmt.Sscan(parts[1], &idx); err == nil && idx > best {
			best = idx
		}
	}
	return best
}

// A node that joins later is added as a voter by the leader; when it leaves
// gracefully it is removed again, so the cluster's quorum does not count it.
func TestProcLateJoinerBecomesVoterAndLeaves(t *testing.T) {
	backends := startDemoBackends(t, "a")
	agents := startRaftCluster(t, 3, backends)
	late := startAgent(t, "n4", filepath.Join(t.TempDir(), "n4"),
		"-gossip", "127.0.0.1:0", "-raft", "127.0.0.1:0", "-join", agents[0].Gossip)
	voters := func(a *agent) map[string]bool {
		v := map[string]bool{}
		for _, m := range a.members(t) {
			if m.RaftRole == "voter" {
				v[m.Name] = true
			}
		}
		return v
	}
	testutil.Eventually(t, 20*time.Second, "n4 to be added as a voter and to apply the config", func() bool {
		return voters(agents[0])["n4"] && late.config(t).Index > 0
	})
	if code, body := late.getBody(t, "/"); code != 200 || body != "a" {
		t.Fatalf("the late joiner does not proxy on the replicated config: %d %q", code, body)
	}
	late.stop()
	testutil.Eventually(t, 20*time.Second, "n4 removed from the raft configuration after leaving", func() bool {
		v := voters(agents[0])
		return !v["n4"] && len(v) == 3
	})
}

// A node lost for good must stop counting towards quorum once a replacement
// has joined: otherwise the replacement makes four voters with one dead, and
// the cluster can no longer lose another node.
func TestProcDeadNodeIsReapedOnceAReplacementJoins(t *testing.T) {
	backends := startDemoBackends(t, "a")
	agents := startRaftCluster(t, 3, backends, "-raft-reap-after", "1s")
	leader, lost := followerOf(t, agents)
	lost.kill()
	// Three voters is the floor: the leader keeps the dead one and says so.
	testutil.Eventually(t, 30*time.Second, "the leader to keep the dead voter for want of a replacement", func() bool {
		return strings.Contains(leader.logs.String(), "kept until a replacement joins") &&
			strings.Contains(leader.logs.String(), `"member":"`+lost.name+`"`)
	})
	voters := func() map[string]bool {
		v := map[string]bool{}
		for _, m := range leader.members(t) {
			if m.RaftRole == "voter" {
				v[m.Name] = true
			}
		}
		return v
	}
	if v := voters(); !v[lost.name] || len(v) != 3 {
		t.Fatalf("voters %v: the dead node must stay while only three voters exist", v)
	}
	repl := startAgent(t, "n4", filepath.Join(t.TempDir(), "n4"),
		"-gossip", "127.0.0.1:0", "-raft", "127.0.0.1:0", "-join", leader.Gossip)
	testutil.Eventually(t, 30*time.Second, "the replacement to be a voter and the dead node reaped", func() bool {
		v := voters()
		return v["n4"] && !v[lost.name] && len(v) == 3
	})
	// Back at three live voters, the cluster survives one more loss.
	var other *agent
	for _, a := range agents {
		if a != leader && a != lost {
			other = a
		}
	}
	other.kill()
	testutil.Eventually(t, 30*time.Second, "a write accepted with one of the three remaining voters down", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := repl.client().SetWeight(ctx, "a", 9)
		return err == nil
	})
}

// A replacement started on a dead node's raft address (the same host and
// port, a new name) proves the old server gone; the old one must make way
// at once, or the replacement could never join (raft refuses a second
// server at one address).
func TestProcReplacementOnTheSameRaftAddressTakesOver(t *testing.T) {
	backends := startDemoBackends(t, "a")
	agents := startRaftCluster(t, 3, backends)
	leader, lost := followerOf(t, agents)
	lost.kill()
	testutil.Eventually(t, 30*time.Second, lost.name+" declared dead", func() bool {
		for _, m := range leader.members(t) {
			if m.Name == lost.name {
				return m.Status == "dead"
			}
		}
		return true
	})
	repl := startAgent(t, "n4", filepath.Join(t.TempDir(), "n4"),
		"-gossip", "127.0.0.1:0", "-raft", lost.Raft, "-join", leader.Gossip)
	testutil.Eventually(t, 30*time.Second, "the replacement to be a voter in the old server's place", func() bool {
		v := map[string]bool{}
		for _, m := range leader.members(t) {
			if m.RaftRole == "voter" {
				v[m.Name] = true
			}
		}
		return v["n4"] && !v[lost.name] && len(v) == 3
	})
	// Being a voter comes before the leader's log reaches it: wait for the
	// config to be applied, not only for the membership.
	testutil.Eventually(t, 10*time.Second, "the replacement proxies on the replicated config", func() error {
		if code, body := repl.getBody(t, "/"); code != 200 || body != "a" {
			return fmt.Errorf("%d %q", code, body)
		}
		return nil
	})
}
