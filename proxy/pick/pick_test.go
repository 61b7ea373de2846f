package pick

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeRand returns planned values in order and fails the test on an
// unplanned call or a value outside [0, n), so a test states exactly which
// draws a pick makes.
type fakeRand struct {
	t    testing.TB
	vals []int
	ns   []int // the n of each call, for failure messages
}

func (f *fakeRand) IntN(n int) int {
	f.t.Helper()
	if len(f.ns) >= len(f.vals) {
		f.t.Fatalf("unplanned IntN(%d) after %v", n, f.ns)
	}
	v := f.vals[len(f.ns)]
	f.ns = append(f.ns, n)
	if v < 0 || v >= n {
		f.t.Fatalf("planned value %d out of range for IntN(%d) (call %d)", v, n, len(f.ns))
	}
	return v
}

// done fails the test if some planned values were not drawn.
func (f *fakeRand) done() {
	f.t.Helper()
	if len(f.ns) != len(f.vals) {
		f.t.Errorf("drew %d of %d planned values (calls %v)", len(f.ns), len(f.vals), f.ns)
	}
}

// seeded is a reproducible Rand for statistical tests.
func seeded() Rand { return rand.New(rand.NewPCG(1, 2)) }

// cands builds candidates with the given weights and zero counts.
func cands(weights ...int32) []Candidate {
	c := make([]Candidate, len(weights))
	for i, w := range weights {
		c[i] = Candidate{Weight: w, Local: new(atomic.Int64)}
	}
	return c
}

// down marks the given candidates Down and returns c.
func down(c []Candidate, idx ...int) []Candidate {
	for _, i := range idx {
		c[i].Down = true
	}
	return c
}

// skipOf builds a Skip holding idx.
func skipOf(idx ...int) Skip {
	var s Skip
	for _, i := range idx {
		s.Add(i)
	}
	return s
}

func mustNew(t testing.TB, name string, c []Candidate, st *State) Policy {
	t.Helper()
	p, err := New(name, c, st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// count runs n picks of the pick+count cycle and returns how often each
// candidate was chosen; it fails on -1 or an ineligible pick.
func count(t testing.TB, p Policy, c []Candidate, r Rand, skip Skip, n int) []int {
	t.Helper()
	got := make([]int, len(c))
	for range n {
		i := p.Pick(c, r, skip)
		if i < 0 || i >= len(c) || !c[i].Available() || skip.Has(i) {
			t.Fatalf("picked %d: not eligible (skip %v)", i, skip.idx[:skip.n])
		}
		got[i]++
		c[i].Local.Add(1)
		c[i].Local.Add(-1)
	}
	return got
}

func TestNew(t *testing.T) {
	for _, name := range Names() {
		if !Valid(name) {
			t.Errorf("Valid(%q) = false", name)
		}
		if _, err := New(name, nil, new(State)); err != nil {
			t.Errorf("New(%q): %v", name, err)
		}
		if _, err := New(name, nil, nil); err == nil {
			t.Errorf("New(%q, nil State): no error", name)
		}
	}
	if Valid("random") {
		t.Error(`Valid("random") = true`)
	}
	if _, err := New("random", nil, new(State)); err == nil {
		t.Error(`New("random"): no error`)
	}
}

func TestSkip(t *testing.T) {
	s := skipOf(3, 1, 3, 0, 7) // beyond MaxTries is dropped
	if s.Len() != MaxTries {
		t.Fatalf("Len = %d, want %d", s.Len(), MaxTries)
	}
	for i, want := range []bool{true, true, false, true, false, false, false, false} {
		if s.Has(i) != want {
			t.Errorf("Has(%d) = %v, want %v", i, !want, want)
		}
	}
}

// TestNone covers every way to have nothing to pick.
func TestNone(t *testing.T) {
	tests := []struct {
		name string
		c    []Candidate
		skip Skip
	}{
		{"empty", nil, Skip{}},
		{"all weight 0", cands(0, 0, 0), Skip{}},
		{"all down", down(cands(1, 2, 3), 0, 1, 2), Skip{}},
		{"down or drained", down(cands(0, 2, -1), 1), Skip{}},
		{"all skipped", cands(1, 2, 3), skipOf(2, 0, 1)},
		{"rest skipped", down(cands(1, 2, 3, 4), 0, 3), skipOf(1, 2)},
	}
	for _, name := range Names() {
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				p := mustNew(t, name, tt.c, new(State))
				// fakeRand with no values: picking from nothing draws nothing.
				if got := p.Pick(tt.c, &fakeRand{t: t}, tt.skip); got != -1 {
					t.Errorf("Pick = %d, want -1", got)
				}
			})
		}
	}
}

// TestNeverUnavailable checks that weight 0 (drained), negative weights and
// Down candidates never get traffic, whatever the loads.
func TestNeverUnavailable(t *testing.T) {
	mk := func() []Candidate {
		c := down(cands(3, 0, 1, 5, -2, 2, 0), 3)
		// The unavailable ones look idle, which load-based policies would
		// love; the available ones are equally busy per weight, so all of
		// them should get picks.
		c[0].Local.Store(30)
		c[2].Local.Store(10)
		c[5].Local.Store(20)
		return c
	}
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			c := mk()
			p := mustNew(t, name, c, new(State))
			got := count(t, p, c, seeded(), Skip{}, 10_000)
			if got[0] == 0 || got[2] == 0 || got[5] == 0 {
				t.Errorf("an available candidate never picked: %v", got)
			}
		})
	}
}

// TestSkipHonoured checks every policy against every skip set over the
// same candidates, including a skip list with duplicates, unavailable and
// out-of-range entries.
func TestSkipHonoured(t *testing.T) {
	tests := []struct {
		name string
		skip Skip
		only int // the single eligible candidate, or -1 if several
	}{
		{"none", Skip{}, -1},
		{"one", skipOf(0), -1},
		{"heaviest", skipOf(4), -1},
		{"two", skipOf(1, 3), -1},
		{"duplicates", skipOf(2, 2, 2), -1},
		{"unavailable and out of range", skipOf(5, 99, -1), -1},
		{"all but one", skipOf(0, 2, 3, 4), 1},
	}
	for _, name := range Names() {
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				c := down(cands(1, 2, 3, 1, 20, 4), 5)
				p := mustNew(t, name, c, new(State))
				got := count(t, p, c, seeded(), tt.skip, 5_000)
				if tt.only >= 0 && got[tt.only] != 5_000 {
					t.Errorf("picks %v, want all on %d", got, tt.only)
				}
			})
		}
	}
}

// TestDistribution checks long-run shares against weights with equal
// (zero) loads. Tolerance: ±2% of each share, relative. round-robin and
// weighted-round-robin are deterministic and exact; for p2c 10^6 draws put
// the smallest share here (0.1) six standard deviations inside the bound.
func TestDistribution(t *testing.T) {
	tests := []struct {
		name    string
		policy  string
		weights []int32
		down    []int
		want    []float64 // shares
		picks   int
	}{
		{"rr equal", RoundRobin, []int32{1, 1, 1, 1}, nil, []float64{.25, .25, .25, .25}, 100_000},
		{"rr ignores weight", RoundRobin, []int32{1, 5, 10}, nil, []float64{1. / 3, 1. / 3, 1. / 3}, 99_999},
		{"rr with down", RoundRobin, []int32{1, 1, 1, 1}, []int{1}, []float64{1. / 3, 0, 1. / 3, 1. / 3}, 99_999},
		{"wrr 1:2:3:4", WeightedRoundRobin, []int32{1, 2, 3, 4}, nil, []float64{.1, .2, .3, .4}, 100_000},
		{"wrr 5:1:1 with down", WeightedRoundRobin, []int32{5, 9, 1, 1}, []int{1}, []float64{5. / 7, 0, 1. / 7, 1. / 7}, 100_002},
		{"p2c equal", P2C, []int32{1, 1, 1, 1}, nil, []float64{.25, .25, .25, .25}, 1_000_000},
		{"p2c 1:2:3:4", P2C, []int32{1, 2, 3, 4}, nil, []float64{.1, .2, .3, .4}, 1_000_000},
		{"p2c 3:1", P2C, []int32{3, 1}, nil, []float64{.75, .25}, 1_000_000},
		{"p2c with down", P2C, []int32{2, 7, 1, 1}, []int{1}, []float64{.5, 0, .25, .25}, 1_000_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := down(cands(tt.weights...), tt.down...)
			p := mustNew(t, tt.policy, c, new(State))
			got := count(t, p, c, seeded(), Skip{}, tt.picks)
			for i, want := range tt.want {
				share := float64(got[i]) / float64(tt.picks)
				if math.Abs(share-want) > 0.02*want || want == 0 && got[i] != 0 {
					t.Errorf("candidate %d: share %.4f, want %.4f ±2%% (counts %v)", i, share, want, got)
				}
			}
		})
	}
}

// TestForeignSlice covers a caller that passes Pick a slice other than the
// one the policy was built for: the answer may be poor but is never out of
// range, down or skipped.
func TestForeignSlice(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			p := mustNew(t, name, cands(1, 1, 1, 1, 1), new(State))
			for _, c := range [][]Candidate{
				down(cands(1, 0, 1, 1), 0),
				down(cands(1, 1, 1, 1, 1), 0, 1, 2, 3),
				down(cands(1, 1, 1, 1, 1, 1, 1), 6),
			} {
				count(t, p, c, seeded(), skipOf(2), 100)
			}
			if got := p.Pick(nil, seeded(), Skip{}); got != -1 {
				t.Errorf("Pick(nil) = %d, want -1", got)
			}
			if got := p.Pick(down(cands(1, 1, 1), 0, 1), seeded(), skipOf(2)); got != -1 {
				t.Errorf("Pick(none eligible) = %d, want -1", got)
			}
		})
	}
}

// TestPickAllocs proves that Pick allocates nothing, with and without a
// skip list and with loads that force tie-breaking and coin flips.
func TestPickAllocs(t *testing.T) {
	c := down(cands(5, 1, 1, 3, 0, 2, 2, 2, 1, 1), 3)
	for _, name := range Names() {
		for _, skip := range []Skip{{}, skipOf(0, 5)} {
			t.Run(fmt.Sprintf("%s/skip%d", name, skip.Len()), func(t *testing.T) {
				p := mustNew(t, name, c, new(State))
				var r Rand = Random{}
				if allocs := testing.AllocsPerRun(1000, func() {
					i := p.Pick(c, r, skip)
					c[i].Local.Add(1)
					c[i].Local.Add(-1)
				}); allocs != 0 {
					t.Errorf("Pick allocates %.1f times", allocs)
				}
			})
		}
	}
}

// TestConcurrentPick runs many goroutines against one policy (run with
// -race). The rotating policies share one atomic counter, so even under
// contention every slot is used exactly once and the shares are exact.
func TestConcurrentPick(t *testing.T) {
	const (
		goroutines = 16
		each       = 2_100 // a multiple of every cycle length below
	)
	tests := []struct {
		policy string
		want   []int // exact counts, or nil to check eligibility only
	}{
		{RoundRobin, []int{11_200, 11_200, 0, 11_200}},
		{WeightedRoundRobin, []int{16_800, 11_200, 0, 5_600}},
		{LeastConnLocal, nil},
		{LeastConn, nil},
		{P2C, nil},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			c := down(cands(3, 2, 1, 1), 2)
			c[1].Peers = 1.5
			p := mustNew(t, tt.policy, c, new(State))
			var wg sync.WaitGroup
			counts := make([][]int, goroutines)
			for g := range goroutines {
				wg.Go(func() {
					got := make([]int, len(c))
					for range each {
						i := p.Pick(c, Random{}, Skip{})
						if i < 0 || !c[i].Available() {
							t.Errorf("picked %d", i)
							return
						}
						got[i]++
						c[i].Local.Add(1)
						c[i].Local.Add(-1)
					}
					counts[g] = got
				})
			}
			wg.Wait()
			total := make([]int, len(c))
			for _, got := range counts {
				for i, n := range got {
					total[i] += n
				}
			}
			for i := range c {
				if c[i].Local.Load() != 0 {
					t.Errorf("candidate %d: %d left in flight", i, c[i].Local.Load())
				}
				if tt.want != nil && total[i] != tt.want[i] {
					t.Errorf("counts %v, want %v", total, tt.want)
					break
				}
			}
		})
	}
}
