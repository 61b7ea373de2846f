package pick

import (
	"math"
	"testing"
)

// loaded builds candidates with the given weights and in-flight counts.
func loaded(weights []int32, counts []int64) []Candidate {
	c := cands(weights...)
	for i, n := range counts {
		c[i].Local.Store(n)
	}
	return c
}

func TestLeastConn(t *testing.T) {
	ones := func(n int) []int32 {
		w := make([]int32, n)
		for i := range w {
			w[i] = 1
		}
		return w
	}
	tests := []struct {
		name    string
		policy  string
		weights []int32
		counts  []int64
		peers   []float64
		down    []int
		skip    Skip
		rand    []int // planned draws; a tie draws once, no tie never
		want    int
	}{
		{name: "lowest", policy: LeastConnLocal, weights: ones(3), counts: []int64{3, 1, 2}, want: 1},
		{name: "per weight", policy: LeastConnLocal, weights: []int32{4, 1, 1}, counts: []int64{4, 3, 2}, want: 0},
		{name: "per weight, light wins", policy: LeastConnLocal, weights: []int32{4, 1}, counts: []int64{9, 2}, want: 1},
		{name: "tie first", policy: LeastConnLocal, weights: ones(5), counts: []int64{0, 5, 5, 5, 0}, rand: []int{0}, want: 0},
		{name: "tie second", policy: LeastConnLocal, weights: ones(5), counts: []int64{0, 5, 5, 5, 0}, rand: []int{1}, want: 4},
		{name: "tie per weight", policy: LeastConnLocal, weights: []int32{2, 1, 4}, counts: []int64{2, 1, 4}, rand: []int{2}, want: 2},
		{name: "skip lowest", policy: LeastConnLocal, weights: ones(3), counts: []int64{0, 1, 2}, skip: skipOf(0), want: 1},
		{name: "down lowest", policy: LeastConnLocal, weights: ones(3), counts: []int64{0, 2, 1}, down: []int{0}, want: 2},
		{name: "drained lowest", policy: LeastConnLocal, weights: []int32{0, 1, 1}, counts: []int64{0, 2, 1}, want: 2},
		{name: "local ignores peers", policy: LeastConnLocal, weights: ones(2), counts: []int64{1, 2}, peers: []float64{5, 0}, want: 0},
		{name: "negative count reads 0", policy: LeastConnLocal, weights: ones(2), counts: []int64{1, -3}, want: 1},
		// A corrupted counter near MaxInt64 would overflow an int64
		// cross-multiplication; clamped and in float64 the order holds.
		{name: "huge counts", policy: LeastConnLocal, weights: []int32{1, math.MaxInt32}, counts: []int64{math.MaxInt64, 1 << 20}, want: 1},
		{name: "huge weight", policy: LeastConnLocal, weights: []int32{math.MaxInt32, 1}, counts: []int64{1 << 40, 1 << 10}, want: 0},

		{name: "peers count", policy: LeastConn, weights: ones(2), counts: []int64{1, 2}, peers: []float64{5, 0}, want: 1},
		{name: "fractional peers", policy: LeastConn, weights: ones(2), peers: []float64{0.5, 0.25}, want: 1},
		{name: "peers per weight", policy: LeastConn, weights: []int32{4, 1}, counts: []int64{2, 1}, peers: []float64{2, 1}, want: 0},
		{name: "peers tie", policy: LeastConn, weights: ones(3), counts: []int64{1, 0, 2}, peers: []float64{1, 2, 3}, rand: []int{1}, want: 1},
		{name: "NaN peers ignored", policy: LeastConn, weights: ones(2), counts: []int64{1, 0}, peers: []float64{0, math.NaN()}, want: 1},
		{name: "negative peers ignored", policy: LeastConn, weights: ones(2), counts: []int64{1, 2}, peers: []float64{0, -5}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.policy+"/"+tt.name, func(t *testing.T) {
			c := down(loaded(tt.weights, tt.counts), tt.down...)
			for i, p := range tt.peers {
				c[i].Peers = p
			}
			p := mustNew(t, tt.policy, c, new(State))
			r := &fakeRand{t: t, vals: tt.rand}
			if got := p.Pick(c, r, tt.skip); got != tt.want {
				t.Errorf("Pick = %d, want %d", got, tt.want)
			}
			r.done()
		})
	}
}

func TestLeastConnNilCounter(t *testing.T) {
	c := loaded([]int32{1, 1}, []int64{1})
	c[1].Local = nil // reads as idle
	p := mustNew(t, LeastConnLocal, c, new(State))
	if got := p.Pick(c, &fakeRand{t: t}, Skip{}); got != 1 {
		t.Errorf("Pick = %d, want 1", got)
	}
}

// TestLeastConnTieSpread checks that ties are broken uniformly, including
// tied candidates that follow a run of busier ones (a random scan start
// would give index 4 here four times the share of index 0).
func TestLeastConnTieSpread(t *testing.T) {
	for _, name := range []string{LeastConnLocal, LeastConn} {
		t.Run(name, func(t *testing.T) {
			c := loaded([]int32{1, 1, 1, 1, 1}, []int64{0, 5, 5, 5, 0})
			p := mustNew(t, name, c, new(State))
			const n = 100_000
			got := count(t, p, c, seeded(), Skip{}, n)
			for _, i := range []int{0, 4} {
				if share := float64(got[i]) / n; math.Abs(share-0.5) > 0.01 {
					t.Errorf("candidate %d: share %.4f, want 0.5 ±2%% (counts %v)", i, share, got)
				}
			}
		})
	}
}

// TestLeastConnManyTies covers more ties than Pick remembers (tieBuf), where
// it finds the chosen one in a second pass.
func TestLeastConnManyTies(t *testing.T) {
	counts := make([]int64, 50)
	weights := make([]int32, 50)
	for i := range counts {
		counts[i] = int64(i % 2) // the 25 even ones are idle and tied
		weights[i] = 1
	}
	tests := []struct {
		name string
		draw int
		want int
	}{
		{"first", 0, 0},
		{"last remembered", tieBuf - 1, 2 * (tieBuf - 1)},
		{"first of second pass", tieBuf, 2 * tieBuf},
		{"last", 24, 48},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := loaded(weights, counts)
			p := mustNew(t, LeastConnLocal, c, new(State))
			r := &fakeRand{t: t, vals: []int{tt.draw}}
			if got := p.Pick(c, r, Skip{}); got != tt.want {
				t.Errorf("Pick = %d, want %d", got, tt.want)
			}
			r.done()
		})
	}
}

// The echo makes this node's own picks since the last report count for the
// peers too: one local request on a backend whose peers are assumed to have
// done the same outweighs a backend that was really busier in the report.
func TestLeastConnEcho(t *testing.T) {
	c := loaded([]int32{1, 1}, []int64{1, 0})
	c[1].Peers = 3
	st := &State{}
	if got := mustNew(t, LeastConn, c, st).Pick(c, seeded(), Skip{}); got != 0 {
		t.Fatalf("without the echo: picked %d, want 0 (load 1 against 3)", got)
	}
	c[0].Echo = 4 // four peers as busy as this node, fresh reports
	if got := mustNew(t, LeastConn, c, st).Pick(c, seeded(), Skip{}); got != 1 {
		t.Errorf("with the echo: picked %d, want 1 (load 1+4 against 3)", got)
	}
	// A fall in this node's count is not echoed: it would cancel load that
	// peers really reported. And a garbage echo counts as nothing.
	c[0].Local.Store(0)
	c[0].Peers, c[0].EchoBase = 2, 8
	c[1].Peers = 1
	if got := mustNew(t, LeastConn, c, st).Pick(c, seeded(), Skip{}); got != 1 {
		t.Errorf("falling own count: picked %d, want 1 (peers' 2 stands against 1)", got)
	}
	c[0].Peers = 0.5
	c[0].Echo = math.NaN()
	if got := mustNew(t, LeastConn, c, st).Pick(c, seeded(), Skip{}); got != 0 {
		t.Errorf("NaN echo: picked %d, want 0 (load 0.5 against 1)", got)
	}
}
