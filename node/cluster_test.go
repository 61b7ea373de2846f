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

func sample(at time.Time, counts map[string]int64) ownSample {
	s := ownSample{at: at, inflight: counts}
	for _, n := range counts {
		s.total += n
	}
	return s
}

// The echo carries a report forward with this node's own counts, scaled by
// the peer's activity relative to this node's when the report arrived and by
// trust in the report; the proxy then scores Peers + max(0, Echo×Local − EchoBase).
func TestEchoExtrapolatesPeersFromOwnCounts(t *testing.T) {
	own := []ownSample{
		sample(t0.Add(-300*time.Millisecond), map[string]int64{"a": 5}),
		sample(t0.Add(-40*time.Millisecond), map[string]int64{"a": 1, "b": 0}),
		sample(t0.Add(-20*time.Millisecond), map[string]int64{"a": 2, "b": 1}),
	}
	// p1's report arrived 30 ms ago: this node had 1 in flight then (the
	// -40ms sample) and p1 had 3, so p1 is taken to be twice as busy.
	in := routeInputs{now: t0, self: "me", backends: backends3(), params: params(), own: own,
		peers: []peerReport{peer("p1", 30*time.Millisecond, map[string]int64{"a": 3})}}
	rs := byID(computeRoutes(in, newRouteState()))
	if a := rs["a"]; !near(a.Echo, 2) || !near(a.EchoBase, 2) || !near(a.Peers, 3) {
		t.Errorf("a: Peers %v Echo %v EchoBase %v, want 3, 2, 2×1", a.Peers, a.Echo, a.EchoBase)
	}
	if b := rs["b"]; !near(b.Echo, 2) || !near(b.EchoBase, 0) {
		t.Errorf("b: Echo %v EchoBase %v, want 2, 0", b.Echo, b.EchoBase)
	}
	// What the policy scores: with a at 2 here now (1 more than when p1
	// reported), p1 is assumed to have added 2 as well.
	a := rs["a"]
	if got := a.Peers + a.Echo*2 - a.EchoBase; !near(got, 5) {
		t.Errorf("extrapolated peer load on a: %v, want 3 + 2×(2-1) = 5", got)
	}

	// A half-stale report echoes half as much; no history, no echo.
	in.peers = []peerReport{peer("p1", 600*time.Millisecond, map[string]int64{"a": 3})}
	if a := byID(computeRoutes(in, newRouteState()))["a"]; !near(a.Echo, 0.5*(3+1)/(5+1)) {
		t.Errorf("half-stale echo %v, want trust 0.5 × pace 4/6 (the oldest sample is the floor)", a.Echo)
	}
	in.own = nil
	if a := byID(computeRoutes(in, newRouteState()))["a"]; a.Echo != 0 || a.EchoBase != 0 {
		t.Errorf("echo without history: %+v", a)
	}
}

func TestOwnHistoryKeepsOneSampleBeyondTheWindow(t *testing.T) {
	var h []ownSample
	for i := 0; i < 100; i++ {
		h = appendOwn(h, t0.Add(time.Duration(i)*20*time.Millisecond), []proxy.BackendStats{{ID: "a", InFlight: int64(i)}}, time.Second)
	}
	now := t0.Add(99 * 20 * time.Millisecond)
	if len(h) > 52 || now.Sub(h[0].at) <= time.Second || now.Sub(h[1].at) > time.Second {
		t.Fatalf("history of %d samples spanning %v; want the last second plus one older floor", len(h), now.Sub(h[0].at))
	}
	if s := ownAt(h, now.Add(-45*time.Millisecond)); s.inflight["a"] != 96 {
		t.Errorf("sample 45ms back: %d in flight, want the 60ms-old tick's 96", s.inflight["a"])
	}
	if s := ownAt(h, now.Add(-time.Hour)); s != &h[0] {
		t.Errorf("a time before the history must give the oldest sample")
	}
}

// Peers send on every change (within a send interval) and otherwise only
// every heartbeat, so a quiet peer's report stays current until its
// heartbeat is overdue; then it is as stale as it is old.
func TestQuietPeerReportStaysCurrentUntilItsHeartbeatIsOverdue(t *testing.T) {
	p := params()
	p.sendInterval, p.heartbeat = 50*time.Millisecond, time.Second
	for _, tc := range []struct {
		age  time.Duration
		want float64 // peer load on a: reported 8 of a total 8, weights 1:1:2
	}{
		{30 * time.Millisecond, 8},   // fresh
		{600 * time.Millisecond, 8},  // quiet: nothing changed since
		{1040 * time.Millisecond, 8}, // heartbeat due, within slack
		{1100 * time.Millisecond, 2}, // overdue and as old as maxAge: only the total, spread 1:1:2
	} {
		in := routeInputs{now: t0, self: "me", backends: backends3(), params: p,
			peers: []peerReport{peer("p1", tc.age, map[string]int64{"a": 8})}}
		if got := byID(computeRoutes(in, newRouteState()))["a"].Peers; !near(got, tc.want) {
			t.Errorf("report aged %v: peer load %v, want %v", tc.age, got, tc.want)
		}
	}
}
