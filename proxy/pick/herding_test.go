package pick

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// herdBurst simulates the failure that shared load information invites:
// `nodes` balancers hold the same stale view of the other nodes' load (the
// last gossip reports: backend 0 looked idle, the rest had `busy` requests
// each), and before the next report arrives each sends `burst` new
// requests. Every node counts its own picks at once (its Local counter),
// but not the others'. With echo, each node assumes, as the node package
// tells it to, that every peer changed its counts as it did itself since
// the report (Candidate.Echo = nodes-1: equally busy peers, fresh reports).
// It returns how many of the nodes*burst new requests landed on each backend.
func herdBurst(policy string, echo bool, nodes, backends, burst int, busy float64, seed uint64) []int {
	got := make([]int, backends)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for n := 0; n < nodes; n++ {
		cands := make([]Candidate, backends)
		for i := range cands {
			cands[i] = Candidate{Weight: 1, Local: new(atomic.Int64)}
			if echo {
				cands[i].Echo = float64(nodes - 1)
			}
			if i > 0 {
				// The other nodes' load as reported; this node's own share
				// of it is already in its Local counters in real life, but
				// starting from zero keeps the comparison simple.
				cands[i].Peers = busy
			}
		}
		var st State
		p, err := New(policy, cands, &st)
		if err != nil {
			panic(err)
		}
		for k := 0; k < burst; k++ {
			i := p.Pick(cands, r, Skip{})
			cands[i].Local.Add(1)
			got[i]++
		}
	}
	return got
}

// With 5 nodes and 10 backends, the 50 new requests should mostly fill the
// idle backend up to the others' level (5) and then spread: an ideal
// balancer with a live global view puts about 5 + 45/10 ≈ 10 on it.
// Argmin over the shared stale view (least-conn without the echo) sends
// every node's first five requests there: 25. With the echo, a node's
// first pick of the idle backend stands for every node's, so it fills it
// only to the others' level. P2C only picks it when it is sampled.
func TestClusterPoliciesDoNotHerdOnStaleView(t *testing.T) {
	const nodes, backends, burst, busy = 5, 10, 10, 5.0
	const trials = 200
	mean := func(policy string, echo bool) float64 {
		sum := 0
		for s := uint64(0); s < trials; s++ {
			sum += herdBurst(policy, echo, nodes, backends, burst, busy, s)[0]
		}
		return float64(sum) / trials
	}
	argmin, lc, p2c := mean(LeastConn, false), mean(LeastConn, true), mean(P2C, true)
	t.Logf("new requests on the stale-idle backend, of %d: argmin on the stale view %.1f, least-conn %.1f, p2c %.1f (ideal ≈ 10)", nodes*burst, argmin, lc, p2c)
	if argmin < 24 {
		t.Errorf("herding model broken: argmin put %.1f on the idle backend, expected every node to send 5", argmin)
	}
	for name, got := range map[string]float64{"least-conn": lc, "p2c": p2c} {
		if got > 14 {
			t.Errorf("%s herds: %.1f of %d new requests on one backend (ideal ≈ 10)", name, got, nodes*burst)
		}
		if got < 6 {
			t.Errorf("%s shuns the idle backend: %.1f of %d new requests (ideal ≈ 10)", name, got, nodes*burst)
		}
	}
}

// BenchmarkHerding reports the herding of each cluster-wide policy as a
// metric: new requests on the stale-idle backend per burst (ideal ≈ 10).
func BenchmarkHerding(b *testing.B) {
	for _, c := range []struct {
		name, policy string
		echo         bool
	}{{"argmin-stale", LeastConn, false}, {LeastConn, LeastConn, true}, {P2C, P2C, true}, {RoundRobin, RoundRobin, false}} {
		b.Run(c.name, func(b *testing.B) {
			total := 0
			for i := 0; i < b.N; i++ {
				total += herdBurst(c.policy, c.echo, 5, 10, 10, 5, uint64(i))[0]
			}
			b.ReportMetric(float64(total)/float64(b.N), "on-idle/50")
		})
	}
}
