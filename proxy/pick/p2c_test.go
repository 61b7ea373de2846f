package pick

import (
	"slices"
	"sync/atomic"
	"testing"
)

func TestP2C(t *testing.T) {
	tests := []struct {
		name    string
		weights []int32
		counts  []int64
		peers   []float64
		down    []int
		skip    Skip
		// rand: the weighted draw (over the non-skipped weight), the
		// uniform draw (over the other eligible ones) and, on a tie, the
		// coin over wa+wb.
		rand []int
		want int
	}{
		{name: "second less loaded", weights: []int32{1, 1, 1, 1}, counts: []int64{5, 1, 3, 0}, rand: []int{0, 0}, want: 1},
		{name: "first less loaded", weights: []int32{1, 1, 1, 1}, counts: []int64{5, 1, 3, 4}, rand: []int{2, 2}, want: 2},
		{name: "idle one not sampled", weights: []int32{1, 1, 1, 1}, counts: []int64{5, 1, 3, 0}, rand: []int{2, 0}, want: 2},
		{name: "tie coin first", weights: []int32{1, 1, 1}, rand: []int{1, 0, 0}, want: 1},
		{name: "tie coin second", weights: []int32{1, 1, 1}, rand: []int{1, 0, 1}, want: 0},
		{name: "weighted draw", weights: []int32{3, 1}, counts: []int64{1, 0}, rand: []int{2, 0}, want: 1},
		{name: "weighted coin keeps heavy", weights: []int32{3, 1}, rand: []int{2, 0, 2}, want: 0},
		{name: "weighted coin to light", weights: []int32{3, 1}, rand: []int{2, 0, 3}, want: 1},
		{name: "per weight", weights: []int32{4, 1}, counts: []int64{3, 1}, rand: []int{4, 0}, want: 0},
		{name: "peers count", weights: []int32{1, 1}, counts: []int64{0, 1}, peers: []float64{2, 0}, rand: []int{0, 0}, want: 1},
		// Skipped 0 and 2 are cut out of both draws: x=0 lands on 1 and
		// the only other eligible one is 3.
		{name: "skip", weights: []int32{1, 1, 1, 1}, counts: []int64{0, 9, 0, 5}, skip: skipOf(0, 2), rand: []int{0, 0}, want: 3},
		{name: "skip heavy", weights: []int32{1, 100, 1}, counts: []int64{0, 0, 3}, skip: skipOf(1), rand: []int{1, 0}, want: 0},
		{name: "down never drawn", weights: []int32{1, 1, 1}, counts: []int64{1, 0, 0}, down: []int{1}, rand: []int{1, 0}, want: 2},
		{name: "one eligible draws nothing", weights: []int32{1, 1, 1, 1}, skip: skipOf(0, 1, 3), want: 2},
		{name: "one candidate draws nothing", weights: []int32{7}, counts: []int64{100}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := down(loaded(tt.weights, tt.counts), tt.down...)
			for i, p := range tt.peers {
				c[i].Peers = p
			}
			p := mustNew(t, P2C, c, new(State))
			r := &fakeRand{t: t, vals: tt.rand}
			if got := p.Pick(c, r, tt.skip); got != tt.want {
				t.Errorf("Pick = %d, want %d (draws over %v)", got, tt.want, r.ns)
			}
			r.done()
		})
	}
}

// TestP2CPrefersIdle checks the point of the two choices: the idle
// backend wins every pair it is in.
func TestP2CPrefersIdle(t *testing.T) {
	c := loaded([]int32{1, 1, 1, 1}, []int64{0, 10, 10, 10})
	p := mustNew(t, P2C, c, new(State))
	const n = 100_000
	got := count(t, p, c, seeded(), Skip{}, n)
	// Pair {0,x} comes up with probability 1/2 and 0 wins it; the other
	// half is a tie among busy ones.
	if share := float64(got[0]) / n; share < 0.49 || share > 0.51 {
		t.Errorf("idle share %.4f, want 0.5 ±2%% (counts %v)", share, got)
	}
}

func TestExcluded(t *testing.T) {
	var e excluded
	for _, i := range []int32{5, 1, 5, 3, 0, 9, 7} {
		e.add(i)
	}
	want := []int32{0, 1, 3, 5, 9} // capacity MaxTries+1: 7 dropped
	if got := e.idx[:e.n]; !slices.Equal(got, want) {
		t.Errorf("excluded %v, want %v", got, want)
	}
}

func TestP2CWeighsLoadByLatencyOnlyWhenItClearlyDiffers(t *testing.T) {
	mk := func(load int64, lat float64) Candidate {
		c := Candidate{Weight: 1, Local: new(atomic.Int64), Latency: lat}
		c.Local.Store(load)
		return c
	}
	cases := []struct {
		name string
		a, b Candidate
		want int
	}{
		// b1 idle but 10x slower loses to a fast backend with 3 in flight:
		// (0+1)*50 > (3+1)*5.
		{"slow idle backend avoided", mk(0, 0.050), mk(3, 0.005), 1},
		// ... but not once the fast one is queued deep: (0+1)*50 < (12+1)*5.
		{"slow backend used when the fast one is swamped", mk(0, 0.050), mk(12, 0.005), 0},
		// 1.2 s vs 0.9 s is noise: plain least load.
		{"similar latencies compare by load", mk(1, 1.2), mk(2, 0.9), 0},
		{"unknown latency compares by load", mk(1, 0), mk(2, 0.005), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := []Candidate{tc.a, tc.b}
			p, err := New(P2C, c, &State{})
			if err != nil {
				t.Fatal(err)
			}
			// Two candidates: p2c always compares both.
			for i := 0; i < 20; i++ {
				if got := p.Pick(c, Random{}, Skip{}); got != tc.want {
					t.Fatalf("picked %d, want %d", got, tc.want)
				}
			}
		})
	}
}
