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
// but not the others'. It returns how many of the nodes*burst new requests
// landed on each backend.
func herdBurst(policy string, nodes, backends, burst int, busy float64, seed uint64) []int {
	got := make([]int, backends)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for n := 0; n < nodes; n++ {
		cands := make([]Candidate, backends)
		for i := range cands {
			cands[i] = Candidate{Weight: 1, Local: new(atomic.Int64)}
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
// Argmin over the shared stale view (least-conn) sends every node's first
// five requests there: 25. P2C only picks it when it is sampled.
func TestP2CHerdsLessThanArgminOnStaleView(t *testing.T) {
	const nodes, backends, burst, busy = 5, 10, 10, 5.0
	var lc, p2c int
	const trials = 200
	for s := uint64(0); s < trials; s++ {
		lc += herdBurst(LeastConn, nodes, backends, burst, busy, s)[0]
		p2c += herdBurst(P2C, nodes, backends, burst, busy, s)[0]
	}
	lcMean, p2cMean := float64(lc)/trials, float64(p2c)/trials
	t.Logf("new requests on the stale-idle backend, of %d: least-conn %.1f, p2c %.1f (ideal ≈ 10)", nodes*burst, lcMean, p2cMean)
	if lcMean < 24 {
		t.Errorf("least-conn herding model broken: %.1f on the idle backend, expected every node to send 5", lcMean)
	}
	if p2cMean > 14 {
		t.Errorf("p2c herds: %.1f of %d new requests on one backend (ideal ≈ 10)", p2cMean, nodes*burst)
	}
}

// BenchmarkHerding reports the herding of each cluster-wide policy as a
// metric: new requests on the stale-idle backend per burst (ideal ≈ 10).
func BenchmarkHerding(b *testing.B) {
	for _, policy := range []string{LeastConn, P2C, RoundRobin} {
		b.Run(policy, func(b *testing.B) {
			total := 0
			for i := 0; i < b.N; i++ {
				total += herdBurst(policy, 5, 10, 10, 5, uint64(i))[0]
			}
			b.ReportMetric(float64(total)/float64(b.N), "on-idle/50")
		})
	}
}
