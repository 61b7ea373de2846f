package pick

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// runs returns the longest run of one candidate in seq, read once
// (linear) and as a repeating cycle (cyclic).
func runs(seq []int32) (linear, cyclic int) {
	if len(seq) == 0 {
		return 0, 0
	}
	run := 0
	for k := range seq {
		if k > 0 && seq[k] == seq[k-1] {
			run++
		} else {
			run = 1
		}
		linear = max(linear, run)
	}
	// Twice around catches runs that wrap; a one-candidate cycle is all run.
	cyclic = linear
	run = 0
	for k := range 2 * len(seq) {
		if k > 0 && seq[k%len(seq)] == seq[(k-1)%len(seq)] {
			run++
		} else {
			run = 1
		}
		cyclic = max(cyclic, min(run, len(seq)))
	}
	return linear, cyclic
}

func TestWeightedRoundRobinSmooth(t *testing.T) {
	tests := []struct {
		name    string
		c       []Candidate
		want    []int32 // one cycle
		linear  int     // longest run allowed in one cycle
		cyclic  int     // longest run allowed when the cycle repeats
		comment string
	}{
		{name: "1:1", c: cands(1, 1), want: []int32{0, 1}, linear: 1, cyclic: 1},
		{name: "7:7 reduced", c: cands(7, 7), want: []int32{0, 1}, linear: 1, cyclic: 1},
		{name: "1:1:1", c: cands(1, 1, 1), want: []int32{0, 1, 2}, linear: 1, cyclic: 1},
		// nginx gives a a b a c a a, whose cycle has a run of 4 across
		// the wrap; 3 is the least possible (5 a's, 2 gaps).
		{name: "5:1:1", c: cands(5, 1, 1), want: []int32{0, 1, 0, 0, 2, 0, 0}, linear: 2, cyclic: 3},
		{name: "2:1:1", c: cands(2, 1, 1), want: []int32{0, 1, 0, 2}, linear: 1, cyclic: 1},
		{name: "3:2", c: cands(3, 2), want: []int32{0, 1, 0, 1, 0}, linear: 1, cyclic: 2},
		{name: "down and drained", c: down(cands(5, 4, 0, 1, 1), 1), want: []int32{0, 3, 0, 0, 4, 0, 0}, linear: 2, cyclic: 3},
		{name: "one", c: cands(0, 3), want: []int32{1}, linear: 1, cyclic: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustNew(t, WeightedRoundRobin, tt.c, new(State)).(*weightedRoundRobin)
			if !slices.Equal(p.sched, tt.want) {
				t.Errorf("schedule %v, want %v", p.sched, tt.want)
			}
			linear, cyclic := runs(p.sched)
			if linear > tt.linear || cyclic > tt.cyclic {
				t.Errorf("longest run %d (cyclic %d), want <= %d (%d)", linear, cyclic, tt.linear, tt.cyclic)
			}
			// Pick follows the schedule, twice around.
			for k := range 2 * len(tt.want) {
				if got := p.Pick(tt.c, nil, Skip{}); got != int(tt.want[k%len(tt.want)]) {
					t.Fatalf("pick %d = %d, want %d", k, got, tt.want[k%len(tt.want)])
				}
			}
		})
	}
}

// TestSmoothLag checks the smoothness bound on many random weight sets: at
// every prefix of the schedule, each candidate has been picked within one
// of its ideal count. This is also the property that keeps smooth's
// "cannot happen" branch unreachable.
func TestSmoothLag(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 305 {
		n, maxW := 1+r.IntN(12), []int64{3, 10, 100}[trial%3]
		if trial >= 300 { // a few large ones
			n, maxW = 100, 1000
		}
		w := make([]int64, n)
		idx := make([]int32, n)
		var total int64
		for k := range w {
			w[k] = 1 + r.Int64N(maxW)
			idx[k] = int32(k)
			total += w[k]
		}
		sched := smooth(idx, w)
		if int64(len(sched)) != total {
			t.Fatalf("weights %v: schedule length %d, want %d", w, len(sched), total)
		}
		got := make([]int64, n)
		for pos, k := range sched {
			got[k]++
			for j := range n {
				ideal := float64(int64(pos+1)*w[j]) / float64(total)
				if lag := float64(got[j]) - ideal; lag <= -1 || lag >= 1 {
					t.Fatalf("weights %v: after %d picks candidate %d has %d, ideal %.2f", w, pos+1, j, got[j], ideal)
				}
			}
		}
	}
}

// TestWeightedRoundRobinScaled covers weight sets whose reduced sum exceeds
// maxSchedule: the schedule stays near the cap, no nonzero weight drops
// out, and large weights keep their share within the documented precision.
func TestWeightedRoundRobinScaled(t *testing.T) {
	tests := []struct {
		name    string
		weights []int32
	}{
		{"huge and tiny", []int32{1 << 30, 1<<30 - 1, 1}},
		{"primes", []int32{1_000_003, 999_983, 500_009, 7}},
		{"many", func() []int32 {
			w := make([]int32, 1000)
			for i := range w {
				w[i] = int32(1 + i)
			}
			return w
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustNew(t, WeightedRoundRobin, cands(tt.weights...), new(State)).(*weightedRoundRobin)
			if len(p.sched) > maxSchedule+len(tt.weights) {
				t.Errorf("schedule length %d, cap %d + %d", len(p.sched), maxSchedule, len(tt.weights))
			}
			got := make([]int, len(tt.weights))
			for _, i := range p.sched {
				got[i]++
			}
			var sum float64
			for _, w := range tt.weights {
				sum += float64(w)
			}
			for i, w := range tt.weights {
				if got[i] == 0 {
					t.Fatalf("candidate %d (weight %d) dropped out", i, w)
				}
				// Rounding costs at most half a slot per candidate.
				want := float64(w) / sum * float64(len(p.sched))
				if math.Abs(float64(got[i])-want) > 0.5+want*float64(len(tt.weights))/maxSchedule && got[i] != 1 {
					t.Errorf("candidate %d: %d slots, want %.1f", i, got[i], want)
				}
			}
		})
	}
}

// TestWeightedRoundRobinSkip pins down how retries share out: roughly by
// weight, with the bias of the forward walk documented on Pick.
func TestWeightedRoundRobinSkip(t *testing.T) {
	tests := []struct {
		name    string
		weights []int32
		skip    Skip
		want    []int // counts over the picks
		picks   int
	}{
		// Schedule a b a a c a a. With a skipped, each a slot goes to the
		// next of b and c: 4:3 per cycle where 1:1 would be ideal.
		{"heavy skipped", []int32{5, 1, 1}, skipOf(0), []int{0, 8, 6}, 14},
		// With b skipped its slot goes to a: 6:1 instead of 5:1.
		{"light skipped", []int32{5, 1, 1}, skipOf(1), []int{12, 0, 2}, 14},
		// The walk (maxWalk) mostly runs out inside the heavy run and
		// the even fallback takes over.
		{"walk exhausted", []int32{1000, 1, 1}, skipOf(0), []int{0, 501, 501}, 1002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cands(tt.weights...)
			p := mustNew(t, WeightedRoundRobin, c, new(State))
			if got := count(t, p, c, nil, tt.skip, tt.picks); !slices.Equal(got, tt.want) {
				t.Errorf("counts %v, want %v", got, tt.want)
			}
		})
	}
}

func TestScale(t *testing.T) {
	tests := []struct {
		name  string
		w     []int64
		limit int64
		want  []int64
	}{
		{"fits", []int64{3, 4}, 7, []int64{3, 4}},
		{"halved", []int64{4, 8, 2}, 7, []int64{2, 4, 1}},
		{"tiny kept", []int64{1, 1000}, 10, []int64{1, 10}},
		{"rounded", []int64{15, 5}, 10, []int64{8, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := slices.Clone(tt.w)
			scale(w, tt.limit)
			if !slices.Equal(w, tt.want) {
				t.Errorf("scale(%v, %d) = %v, want %v", tt.w, tt.limit, w, tt.want)
			}
		})
	}
}

// TestWeightedRoundRobinReuse checks that a rebuild with unchanged weights
// and availability reuses the schedule (loads and peers do not matter),
// and that any change to them builds a new one.
func TestWeightedRoundRobinReuse(t *testing.T) {
	var st State
	build := func(c []Candidate) *weightedRoundRobin {
		return mustNew(t, WeightedRoundRobin, c, &st).(*weightedRoundRobin)
	}
	first := build(cands(5, 1, 1))
	tests := []struct {
		name  string
		c     []Candidate
		reuse bool
	}{
		{"same weights, new loads", func() []Candidate {
			c := cands(5, 1, 1)
			c[0].Local.Store(7)
			c[1].Peers = 3
			return c
		}(), true},
		{"weight changed", cands(5, 2, 1), false},
		{"down", down(cands(5, 1, 1), 2), false},
		{"candidate added", cands(5, 1, 1, 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st.wrr.Store(first.wrrSchedule)
			p := build(tt.c)
			if reused := p.wrrSchedule == first.wrrSchedule; reused != tt.reuse {
				t.Errorf("reused = %v, want %v", reused, tt.reuse)
			}
			count(t, p, tt.c, nil, Skip{}, 20)
		})
	}
}
