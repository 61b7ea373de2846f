package node

import (
	"math"
	"testing"
	"time"

	"github.com/thebalancer/balancer/breaker"
	"github.com/thebalancer/balancer/proxy"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func params() routeParams {
	return routeParams{freshAge: 100 * time.Millisecond, maxAge: 1100 * time.Millisecond, sleepWindow: time.Second, disputeAfter: 3 * time.Second}
}

func backends3() []proxy.Backend {
	return []proxy.Backend{{ID: "a", Address: "h:1", Weight: 1}, {ID: "b", Address: "h:2", Weight: 1}, {ID: "c", Address: "h:3", Weight: 2}}
}

func peer(name string, age time.Duration, counts map[string]int64, open ...string) peerReport {
	pr := peerReport{node: name, age: age, backends: map[string]peerBackend{}}
	for id, n := range counts {
		pr.backends[id] = peerBackend{inflight: n}
	}
	for _, id := range open {
		pb := pr.backends[id]
		pb.open = true
		pr.backends[id] = pb
	}
	return pr
}

func byID(rs []proxy.Route) map[string]proxy.Route {
	m := map[string]proxy.Route{}
	for _, r := range rs {
		m[r.ID] = r
	}
	return m
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestPeerLoadIsSummedPerSlotAndAgeWeighted(t *testing.T) {
	cases := []struct {
		name  string
		peers []peerReport
		want  map[string]float64
	}{
		{"no peers", nil, map[string]float64{"a": 0, "b": 0, "c": 0}},
		{"one fresh peer counts as reported", []peerReport{peer("p1", 50*time.Millisecond, map[string]int64{"a": 4, "b": 0, "c": 2})},
			map[string]float64{"a": 4, "b": 0, "c": 2}},
		{"two peers are summed, not overwritten", []peerReport{
			peer("p1", 0, map[string]int64{"a": 4, "c": 2}),
			peer("p2", 0, map[string]int64{"a": 1, "b": 3})},
			map[string]float64{"a": 5, "b": 3, "c": 2}},
		// Half-way between fresh (100ms) and max (1100ms): half the report,
		// half the peer's total (8) spread by weight 1:1:2.
		{"half-stale report fades toward the weighted share", []peerReport{peer("p1", 600*time.Millisecond, map[string]int64{"a": 8})},
			map[string]float64{"a": 0.5*8 + 0.5*2, "b": 0.5 * 2, "c": 0.5 * 4}},
		{"a stale peer next to a fresh one keeps only its total", []peerReport{
			peer("p1", 5*time.Second, map[string]int64{"a": 8}),
			peer("p2", 0, map[string]int64{"b": 1})},
			map[string]float64{"a": 2, "b": 1 + 2, "c": 4}},
		{"every report stale: local counts only", []peerReport{peer("p1", 5*time.Second, map[string]int64{"a": 8})},
			map[string]float64{"a": 0, "b": 0, "c": 0}},
		{"negative counts from a confused peer count as zero", []peerReport{peer("p1", 0, map[string]int64{"a": -5})},
			map[string]float64{"a": 0, "b": 0, "c": 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := byID(computeRoutes(routeInputs{now: t0, self: "me", backends: backends3(), peers: tc.peers, params: params()}, newRouteState()))
			for id, want := range tc.want {
				if !near(rs[id].Peers, want) {
					t.Errorf("backend %s: peers load %v, want %v", id, rs[id].Peers, want)
				}
				if rs[id].Down {
					t.Errorf("backend %s down without any open circuit", id)
				}
			}
		})
	}
}

func TestLocalCircuitStates(t *testing.T) {
	in := routeInputs{now: t0, self: "me", backends: backends3(), params: params(),
		local: map[string]breaker.State{"a": breaker.Open, "b": breaker.HalfOpen}}
	rs := byID(computeRoutes(in, newRouteState()))
	if !rs["a"].Down || rs["a"].Trial {
		t.Errorf("open: %+v", rs["a"])
	}
	if !rs["b"].Down || !rs["b"].Trial {
		t.Errorf("half-open with no other opener: this node runs the trial: %+v", rs["b"])
	}
	if rs["c"].Down {
		t.Errorf("closed backend down")
	}
}

func TestRemoteOpenStopsTrafficAndOneNodeProbes(t *testing.T) {
	st := newRouteState()
	in := routeInputs{now: t0, self: "n2", backends: backends3(), params: params(),
		local: map[string]breaker.State{"a": breaker.HalfOpen},
		peers: []peerReport{peer("n1", 0, nil, "a", "b"), peer("n3", 0, nil, "b")}}
	rs := byID(computeRoutes(in, st))
	if !rs["b"].Down {
		t.Fatalf("a peer's open circuit must stop traffic here: %+v", rs["b"])
	}
	if rs["b"].Trial || rs["b"].Probe {
		t.Errorf("no trial or probe from a node whose own circuit is closed: %+v", rs["b"])
	}
	if !rs["a"].Down || rs["a"].Trial {
		t.Errorf("n1 (first by name among openers) owns a's trial, not n2: %+v", rs["a"])
	}
	// n1 dies: its reports leave the view; n2 now owns a's trial and b is
	// still open at n3.
	in.peers = []peerReport{peer("n3", 0, nil, "b")}
	rs = byID(computeRoutes(in, st))
	if !rs["a"].Trial {
		t.Errorf("with n1 gone n2 runs a's trial: %+v", rs["a"])
	}
	if !rs["b"].Down {
		t.Errorf("b still open at n3")
	}
	// n3's trial succeeds: its report says closed and b is back here.
	in.peers = []peerReport{peer("n3", 0, map[string]int64{"b": 0})}
	rs = byID(computeRoutes(in, st))
	if rs["b"].Down {
		t.Errorf("b closed everywhere but still down here: %+v", rs["b"])
	}
}

func TestDisputedRemoteOpen(t *testing.T) {
	st := newRouteState()
	p := params()
	in := routeInputs{now: t0, self: "n2", backends: backends3(), params: p,
		peers: []peerReport{peer("n1", 0, nil, "a")}}
	if rs := byID(computeRoutes(in, st)); !rs["a"].Down || rs["a"].Probe {
		t.Fatalf("fresh remote open: down, no probe yet: %+v", rs["a"])
	}
	in.now = t0.Add(p.disputeAfter)
	if rs := byID(computeRoutes(in, st)); !rs["a"].Probe {
		t.Fatalf("remote open older than disputeAfter: this node probes: %+v", rs["a"])
	}
	in.now = in.now.Add(p.sleepWindow / 2)
	if rs := byID(computeRoutes(in, st)); rs["a"].Probe {
		t.Fatalf("at most one probe per sleep window")
	}
	in.now = in.now.Add(p.sleepWindow / 2)
	if rs := byID(computeRoutes(in, st)); !rs["a"].Probe {
		t.Fatalf("next window, next probe")
	}
	// The probe succeeded: the backend answers this node, so n1's open is
	// n1's problem.
	in.lastOK = map[string]time.Time{"a": in.now}
	in.now = in.now.Add(time.Millisecond)
	if rs := byID(computeRoutes(in, st)); rs["a"].Down {
		t.Fatalf("after a success here, a peer's older open must not stop traffic: %+v", rs["a"])
	}
	// A new open from n1 after that success counts again.
	in.peers = []peerReport{peer("n1", 0, map[string]int64{"a": 0})}
	computeRoutes(in, st)
	in.peers = []peerReport{peer("n1", 0, nil, "a")}
	in.now = in.now.Add(time.Second)
	if rs := byID(computeRoutes(in, st)); !rs["a"].Down {
		t.Fatalf("a fresh open after the last success counts: %+v", rs["a"])
	}
}

func TestDrainedBackendGetsNoShare(t *testing.T) {
	bs := backends3()
	bs[2].Drain = true
	rs := byID(computeRoutes(routeInputs{now: t0, self: "me", backends: bs, params: params(),
		peers: []peerReport{peer("p", 600*time.Millisecond, map[string]int64{"a": 4})}}, newRouteState()))
	if rs["c"].Peers != 0 {
		t.Errorf("drained backend got a share of stale load: %v", rs["c"].Peers)
	}
	if !near(rs["b"].Peers, 0.5*2) {
		t.Errorf("the half-stale total spreads over the undrained backends only: b got %v", rs["b"].Peers)
	}
}
