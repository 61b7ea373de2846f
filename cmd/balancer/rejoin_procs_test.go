package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
)

// voterSet is the raft voters a node reports.
func voterSet(t testing.TB, a *agent) map[string]bool {
	v := map[string]bool{}
	for _, m := range a.members(t) {
		if m.RaftRole == "voter" {
			v[m.Name] = true
		}
	}
	return v
}

// The README's quick start starts the first node without -join. Stopped
// gracefully, it leaves and the leader removes it from raft; restarted with
// the very same command it must find its cluster again by itself, from the
// members it saw last, and become a voter again.
func TestProcFounderRestartedWithoutJoinFindsItsCluster(t *testing.T) {
	backends := startDemoBackends(t, "a")
	agents := startRaftCluster(t, 3, backends)
	founder := agents[0] // started without -join
	saved := filepath.Join(founder.dataDir, "peers.json")
	testutil.Eventually(t, 10*time.Second, "the founder to remember both peers", func() error {
		b, err := os.ReadFile(saved)
		if err != nil {
			return err
		}
		var doc struct {
			Members map[string]struct{ Addr string }
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return err
		}
		if len(doc.Members) != 2 {
			return fmt.Errorf("%s holds %v", saved, doc.Members)
		}
		return nil
	})
	founder.stop()
	testutil.Eventually(t, 20*time.Second, "the founder removed from raft after leaving", func() bool {
		v := voterSet(t, agents[1])
		return !v[founder.name] && len(v) == 2
	})

	founder.start() // the same flags: still no -join
	took := testutil.Eventually(t, 30*time.Second, "the founder back as a voter, following the leader", func() error {
		if v := voterSet(t, agents[1]); !v[founder.name] || len(v) != 3 {
			return fmt.Errorf("voters on %s: %v", agents[1].name, v)
		}
		if l := founder.leaderName(t); l == "" {
			return fmt.Errorf("%s knows no leader", founder.name)
		}
		return nil
	})
	t.Logf("the founder was a voter again %v after its restart", took.Round(time.Millisecond))
	if code, body := founder.getBody(t, "/"); code != 200 || body != "a" {
		t.Fatalf("the restarted founder does not proxy: %d %q", code, body)
	}
}

// ?wait=applied must not report "applied everywhere" while a voter that
// cannot be heard from may still proxy on the old config.
func TestProcWaitAppliedNamesAServerThatCannotBeHeard(t *testing.T) {
	backends := startDemoBackends(t, "a")
	agents := startRaftCluster(t, 3, backends)
	leader, frozen := followerOf(t, agents)
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Registered after startAgent's stop, so it runs before it.
	t.Cleanup(func() { frozen.cmd.Process.Signal(syscall.SIGCONT) })
	testutil.Eventually(t, 30*time.Second, frozen.name+" no longer alive to the leader", func() error {
		for _, m := range leader.members(t) {
			if m.Name == frozen.name && m.Status == "alive" {
				return fmt.Errorf("%s still %s", m.Name, m.Status)
			}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := leader.client().SetWeight(ctx, "a", 4, admin.WaitAppliedFor(time.Second))
	if err != nil {
		t.Fatalf("write with a majority up: %v", err)
	}
	if res.AppliedEverywhere || !strings.Contains(res.WaitError, frozen.name) {
		t.Fatalf("answer %+v: want applied_everywhere false and %s named", res, frozen.name)
	}
	t.Logf("wait_error: %s", res.WaitError)
}
