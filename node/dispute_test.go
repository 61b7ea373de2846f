package node

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thebalancer/balancer/breaker"
	"github.com/thebalancer/balancer/gossip"
	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/proxy"
	"github.com/thebalancer/balancer/proxy/pick"
)

// With -breaker-dispute-after unset, the bound follows -breaker-sleep. It
// was a fixed 30 s, which kept a recovered backend out of the whole cluster
// that long whenever its circuit's opener got no traffic.
func TestDisputeAfterDefaultsToTwoSleepWindows(t *testing.T) {
	for _, sleep := range []time.Duration{200 * time.Millisecond, 5 * time.Second, time.Minute} {
		if got := DefaultRouteConfig().params(sleep, gossip.Config{}).disputeAfter; got != 2*sleep {
			t.Errorf("-breaker-sleep %v: dispute after %v, want %v", sleep, got, 2*sleep)
		}
	}
	c := DefaultRouteConfig()
	c.DisputeAfter = 7 * time.Second
	if got := c.params(5*time.Second, gossip.Config{}).disputeAfter; got != 7*time.Second {
		t.Errorf("an explicit -breaker-dispute-after: %v, want 7s", got)
	}
}

func TestDisputeAfterValidation(t *testing.T) {
	cases := []struct {
		dispute, sleep time.Duration
		ok             bool
	}{
		{0, 5 * time.Second, true},
		{5 * time.Second, 5 * time.Second, true},
		{time.Minute, 5 * time.Second, true},
		{4 * time.Second, 5 * time.Second, false}, // peers would try before the opener's trial
		{-time.Second, 5 * time.Second, false},
	}
	for _, tc := range cases {
		cfg := testConfig(t)
		cfg.Routes.DisputeAfter, cfg.Breaker.SleepWindow = tc.dispute, tc.sleep
		err := cfg.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("dispute %v, sleep %v: err %v, want ok=%v", tc.dispute, tc.sleep, err, tc.ok)
		}
		if err != nil && !tc.ok && !strings.Contains(err.Error(), "-breaker-dispute-after") {
			t.Errorf("error %q does not name the flag", err)
		}
	}
}

// A peer's open circuit keeps the backend from this node for disputeAfter
// as seen here; from then on this node sends its own single request per
// sleep window: a probe while its circuit is closed, its own trial while
// half-open. A fresh open elsewhere takes the lead back.
func TestDisputeAroundTheBound(t *testing.T) {
	p := params() // sleep window 1s
	p.disputeAfter = 2 * p.sleepWindow
	cases := []struct {
		name  string
		own   breaker.State
		peers func(age time.Duration) []peerReport // the open as reported at age
		age   time.Duration                        // how long n1's open has been seen here
		down  bool
		probe bool
		trial bool
	}{
		{"closed here, fresh remote open", breaker.Closed, n1Open, 0, true, false, false},
		{"closed here, just before the bound", breaker.Closed, n1Open, p.disputeAfter - time.Millisecond, true, false, false},
		{"closed here, at the bound", breaker.Closed, n1Open, p.disputeAfter, true, true, false},
		{"closed here, long after", breaker.Closed, n1Open, 30 * p.disputeAfter, true, true, false},

		// The audit's case: n1 opened first and gets no traffic, so its
		// trial never runs; n2's own circuit is half-open too.
		{"half-open here, opener first by name, fresh", breaker.HalfOpen, n1Open, 0, true, false, false},
		{"half-open here, just before the bound", breaker.HalfOpen, n1Open, p.disputeAfter - time.Millisecond, true, false, false},
		{"half-open here, at the bound: own trial", breaker.HalfOpen, n1Open, p.disputeAfter, true, false, true},
		{"half-open here, long after: own trial", breaker.HalfOpen, n1Open, 30 * p.disputeAfter, true, false, true},
		{"open here (sleeping): no trial yet", breaker.Open, n1Open, 30 * p.disputeAfter, true, false, false},

		// n1's open is old, but n0 opened just now: n0 runs the trial.
		{"half-open here, old opener and a fresh one", breaker.HalfOpen, func(time.Duration) []peerReport {
			return []peerReport{peer("n0", 0, nil, "a"), peer("n1", 0, nil, "a")}
		}, 30 * p.disputeAfter, true, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := newRouteState()
			in := routeInputs{now: t0, self: "n2", backends: backends3(), params: p,
				local: map[string]breaker.State{"a": tc.own}, peers: n1Open(0)}
			computeRoutes(in, st) // n1's open is first seen at t0
			in.now, in.peers = t0.Add(tc.age), tc.peers(tc.age)
			r := byID(computeRoutes(in, st))["a"]
			if r.Down != tc.down || r.Probe != tc.probe || r.Trial != tc.trial {
				t.Errorf("n1 open for %v, own %v: down=%v probe=%v trial=%v; want %v %v %v",
					tc.age, tc.own, r.Down, r.Probe, r.Trial, tc.down, tc.probe, tc.trial)
			}
		})
	}
}

func n1Open(time.Duration) []peerReport { return []peerReport{peer("n1", 0, nil, "a")} }

// flaky is a backend whose answers can be switched between 200 and 500.
type flaky struct {
	*httptest.Server
	failing atomic.Bool
	served  atomic.Int64 // 200s
}

func startFlaky(t *testing.T, name string) *flaky {
	f := &flaky{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if f.failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		f.served.Add(1)
		fmt.Fprintln(w, name)
	}))
	t.Cleanup(f.Close)
	return f
}

// The audit's repro in one process: n1's circuit for b3 opens, b3
// recovers, and from then on only n2 gets traffic, in sparse requests. n1
// stays half-open with nothing to try; b3 must still come back through n2
// within a few sleep windows (here 200 ms), not after a fixed 30 s.
func TestRecoveredBackendReturnsWhereTheTrafficIs(t *testing.T) {
	b1, b2 := startBackend(t, "b1", "http"), startBackend(t, "b2", "http")
	b3 := startFlaky(t, "b3")
	nodes := startCluster(t, 3, pick.RoundRobin,
		proxy.Backend{ID: "b1", Address: b1.Addr(), Weight: 1},
		proxy.Backend{ID: "b2", Address: b2.Addr(), Weight: 1},
		proxy.Backend{ID: "b3", Address: b3.Listener.Addr().String(), Weight: 1})
	n1, n2 := nodes[0], nodes[1]
	sleep := n2.cfg.Breaker.SleepWindow
	for _, n := range nodes {
		testutil.Eventually(t, 10*time.Second, n.Name()+" to see both peers", func() bool { return len(n.load(t)["b3"].Peers) == 2 })
	}

	b3.failing.Store(true)
	testutil.Eventually(t, 10*time.Second, "n1's circuit for b3 to open", func() bool {
		n1.get(t, "/")
		return n1.load(t)["b3"].Breaker["n1"] == "open"
	})
	testutil.Eventually(t, 5*time.Second, "n2 to learn n1's open circuit", func() bool {
		return n2.load(t)["b3"].Breaker["n1"] != "closed"
	})
	b3.failing.Store(false)
	recovered := time.Now()

	// Requests 50 ms apart: several routing tables (10 ms tick) go by
	// between two of them, as with any sparse traffic.
	bound := 10*sleep + 2*time.Second // 2 windows to the dispute, 1 to the probe, slack for -race on 2 cores
	served := b3.served.Load()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for b3.served.Load() == served {
		if time.Since(recovered) > bound {
			t.Fatalf("b3 got no request from n2 within %v of recovering (n1's circuit: %s)",
				bound, n2.load(t)["b3"].Breaker["n1"])
		}
		<-tick.C
		if code, body := n2.get(t, "/"); code != 200 {
			t.Fatalf("n2: client saw %d %s", code, body)
		}
	}
	t.Logf("b3 answered n2 %v after recovering", time.Since(recovered).Round(time.Millisecond))
	if st := n1.load(t)["b3"].Breaker["n1"]; st == "closed" {
		t.Fatalf("n1's circuit closed: the test no longer shows recovery without the opener")
	}
	// After the probe's success n2 routes to b3 like any backend.
	testutil.Eventually(t, 5*time.Second, "n2 to send b3 normal traffic", func() bool {
		before := b3.served.Load()
		for range 6 {
			n2.get(t, "/")
		}
		return b3.served.Load()-before >= 2
	})
}
