package pick

import (
	"fmt"
	"testing"
)

// benchCands builds n candidates with mixed weights (1..10), so the
// weighted policies do real work.
func benchCands(n int) []Candidate {
	w := make([]int32, n)
	for i := range w {
		w[i] = int32(1 + i%10)
	}
	return cands(w...)
}

// BenchmarkPick measures the proxy's hot path: pick, then count the
// request in and out. Loads are back to zero at every pick, so the
// load-based policies always break a full tie (their worst case: two
// passes and a draw); least-conn is an O(n) scan by design.
func BenchmarkPick(b *testing.B) {
	for _, name := range Names() {
		for _, n := range []int{10, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				c := benchCands(n)
				p := mustNew(b, name, c, new(State))
				var r Rand = Random{}
				b.ReportAllocs()
				for b.Loop() {
					i := p.Pick(c, r, Skip{})
					c[i].Local.Add(1)
					c[i].Local.Add(-1)
				}
			})
		}
	}
}

// BenchmarkPickParallel is BenchmarkPick from all Ps at once: the shared
// rotation counter and the in-flight counters are contended cache lines.
func BenchmarkPickParallel(b *testing.B) {
	for _, name := range Names() {
		b.Run(fmt.Sprintf("%s/n=10", name), func(b *testing.B) {
			c := benchCands(10)
			p := mustNew(b, name, c, new(State))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var r Rand = Random{}
				for pb.Next() {
					i := p.Pick(c, r, Skip{})
					c[i].Local.Add(1)
					c[i].Local.Add(-1)
				}
			})
		})
	}
}

// BenchmarkPickRetry is the second try of a request: one candidate skipped.
func BenchmarkPickRetry(b *testing.B) {
	for _, name := range Names() {
		b.Run(fmt.Sprintf("%s/n=10", name), func(b *testing.B) {
			c := benchCands(10)
			p := mustNew(b, name, c, new(State))
			var r Rand = Random{}
			skip := skipOf(9) // the heaviest
			b.ReportAllocs()
			for b.Loop() {
				i := p.Pick(c, r, skip)
				c[i].Local.Add(1)
				c[i].Local.Add(-1)
			}
		})
	}
}

// BenchmarkNew is the cold-path cost of a rebuild from scratch (a fresh
// State each time); weighted-round-robin with 1000 mixed weights (1..10)
// builds a schedule of 5500 entries.
func BenchmarkNew(b *testing.B) {
	for _, name := range Names() {
		for _, n := range []int{10, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				c := benchCands(n)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := New(name, c, new(State)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkNewScaled is the worst weighted-round-robin rebuild: 1000
// distinct weights whose sum exceeds maxSchedule, so the schedule is at the
// cap. "cached" is the usual rebuild, where only loads changed and the
// State's schedule is reused.
func BenchmarkNewScaled(b *testing.B) {
	w := make([]int32, 1000)
	for i := range w {
		w[i] = int32(1000 + i)
	}
	c := cands(w...)
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := New(WeightedRoundRobin, c, new(State)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		st := new(State)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := New(WeightedRoundRobin, c, st); err != nil {
				b.Fatal(err)
			}
		}
	})
}
