package consensus

import (
	"fmt"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

func TestStatsFollowTheCluster(t *testing.T) {
	c := newCluster(t, 3)
	res := c.apply(Seed(seedSet))
	c.waitApplied(res.Index)
	leader := c.waitLeader()

	ls := leader.Stats()
	if ls.State != "leader" || ls.Term == 0 || ls.LastContact != 0 {
		t.Fatalf("leader stats %+v: want state leader, a term, last contact 0", ls)
	}
	before := ls.ConfigChanges
	if before == 0 {
		t.Fatalf("leader stats %+v: the seed changed the config but no change was counted", ls)
	}
	again := c.apply(SetWeight("a", 7))
	c.waitApplied(again.Index)
	if got := leader.Stats().ConfigChanges; got != before+1 {
		t.Fatalf("config changes %d after one weight change, want %d", got, before+1)
	}
	if ls.CommitIndex < res.Index || ls.AppliedIndex < res.Index || ls.LastLogIndex < res.Index {
		t.Fatalf("leader stats %+v: indexes behind the committed seed at %d", ls, res.Index)
	}
	for _, s := range c.running() {
		if s == leader {
			continue
		}
		// A follower hears heartbeats: its last contact stays well under
		// the election timeout once the cluster is stable.
		testutil.Eventually(t, 5*time.Second, s.ID()+" stats", func() error {
			st := s.Stats()
			if st.State != "follower" || st.Term != ls.Term || st.CommitIndex < res.Index ||
				st.LastContact < 0 || st.LastContact > 2*time.Second {
				return fmt.Errorf("follower stats %+v (leader term %d, seed index %d)", st, ls.Term, res.Index)
			}
			return nil
		})
	}
}
