package gossip

import (
	"fmt"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// A node restarted without -join finds its cluster through the members it
// remembers, and does so in the background: with none of them up yet, Run
// neither blocks nor fails, and the first one to appear is found.
func TestRejoinFindsRememberedMembersInTheBackground(t *testing.T) {
	addrA := testutil.FreeAddr(t)
	cfgB := testConfig(t, "b")
	cfgB.Rejoin = map[string]string{"a": addrA, "b": "127.0.0.1:1"} // its own name is skipped
	b := start(t, cfgB)
	select {
	case <-b.Joined():
	case <-time.After(5 * time.Second):
		t.Fatal("Joined not closed: remembered members must not hold up the start")
	}
	if got := memberState(b, "a"); got != "absent" {
		t.Fatalf("a is %s on b before it started", got)
	}

	cfgA := testConfig(t, "a")
	cfgA.Bind = addrA
	a := start(t, cfgA)
	began := time.Now()
	testutil.Eventually(t, 20*time.Second, "a and b alive on both", func() error {
		for _, nd := range []*node{a, b} {
			for _, name := range []string{"a", "b"} {
				if st := memberState(nd, name); st != StateAlive {
					return fmt.Errorf("%s sees %s as %s", nd.name, name, st)
				}
			}
		}
		return nil
	})
	t.Logf("b rejoined a %v after a started", time.Since(began).Round(time.Millisecond))
}
