package breaker

import (
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// A dead backend that the balancer mostly steers around gets few requests:
// far fewer than MinRequests in the window. A streak of failures with no
// success between them opens its circuit anyway; a success breaks the
// streak, and 0 turns the rule off.
func TestConsecutiveFailuresOpenBelowTheVolumeThreshold(t *testing.T) {
	cfg := testConfig()
	cfg.MinRequests = 1000 // the volume rule cannot trip in this test
	cfg.ConsecutiveFailures = 5
	s, _ := startSet(t, "n1", cfg)

	broken := s.Circuit("broken")
	for range 4 {
		broken.Done(false, false)
	}
	broken.Done(false, true) // a success between: no streak
	for range 4 {
		broken.Done(false, false)
	}
	settle(t, cfg)
	if st := broken.State(); st != Closed {
		t.Fatalf("4 failures, a success, 4 failures: %v, want closed", st)
	}

	dead := s.Circuit("dead")
	for range 5 {
		dead.Done(false, false)
	}
	testutil.Eventually(t, within, "5 failures in a row to open the circuit", func() bool { return dead.State() == Open })
	trial(t, dead)
	dead.Done(true, true)
	if st := dead.State(); st != Closed {
		t.Fatalf("after a successful trial: %v, want closed", st)
	}

	off := cfg
	off.ConsecutiveFailures = 0
	s2, _ := startSet(t, "n2", off)
	c := s2.Circuit("b")
	for range 50 {
		c.Done(false, false)
	}
	settle(t, off)
	if st := c.State(); st != Closed {
		t.Fatalf("the streak rule turned off: %v after 50 failures below the volume threshold", st)
	}
}

// settle waits for a few flushes, so that what the flusher would do it has
// done.
func settle(t *testing.T, cfg Config) {
	t.Helper()
	deadline := time.Now().Add(10 * cfg.FlushInterval)
	for time.Now().Before(deadline) {
		time.Sleep(cfg.FlushInterval)
	}
}
