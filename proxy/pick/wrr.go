package pick

import (
	"math"
	"slices"
)

// maxSchedule caps the length of a weighted-round-robin schedule (about
// 256 KiB of int32). Weights whose reduced sum is larger are scaled down to
// fit; see scale for the precision this costs.
const maxSchedule = 1 << 16

// maxWalk bounds how far Pick walks along the schedule past skipped entries
// before it falls back to sharing evenly among the eligible candidates.
// Runs of skipped entries are short unless the skipped candidates own most
// of the weight, so 16 covers the common retry case without making the
// worst case expensive.
const maxWalk = 16

// weightedRoundRobin hands out traffic in exact proportion to weight,
// interleaved so that no backend gets a burst (weights 5:1:1 give
// a b a a c a a, not a a a a a b c).
//
// The interleaving is precomputed into a schedule whenever weights or
// availability change (rebuilds that change only loads reuse it, see
// State), and Pick only indexes it with the shared atomic counter. The usual smooth WRR
// (nginx) instead updates per-backend "current weights" on every pick, which
// needs a lock; indexing a fixed schedule needs none.
type weightedRoundRobin struct {
	st *State // shared across rebuilds, see roundRobin.st
	n  int    // len(c) at New, to detect a foreign slice
	*wrrSchedule
}

// wrrSchedule is what weighted-round-robin precomputes. It is immutable
// once built, so policies built from equal weights share one.
type wrrSchedule struct {
	// key is each candidate's weight, or 0 if unavailable: the inputs
	// the schedule was built from.
	key []int32
	// sched is one cycle: candidate i appears w(i) times, where w is its
	// weight divided by the gcd of all available weights (and scaled down
	// if the cycle would exceed maxSchedule).
	sched []int32
	// avail is the fallback when the walk past skipped entries is
	// exhausted: then the eligible candidates share evenly.
	avail []int32
}

func newWeightedRoundRobin(c []Candidate, st *State) *weightedRoundRobin {
	key := make([]int32, len(c))
	for i := range c {
		if c[i].Available() {
			key[i] = c[i].Weight
		}
	}
	s := st.wrr.Load()
	if s == nil || !slices.Equal(s.key, key) {
		avail := availableIndices(c)
		w := make([]int64, len(avail))
		for k, i := range avail {
			w[k] = int64(c[i].Weight)
		}
		reduce(w)
		if scale(w, maxSchedule) {
			reduce(w)
		}
		s = &wrrSchedule{key: key, sched: smooth(avail, w), avail: avail}
		st.wrr.Store(s)
	}
	return &weightedRoundRobin{st: st, n: len(c), wrrSchedule: s}
}

// Pick implements Policy. A skipped candidate's slot goes to the next
// eligible entry of the schedule, so a retry roughly follows the weights
// (the entry after a skipped run gains its slots: with 5:1:1 and the first
// skipped, retries split 4:3 rather than 1:1). Only when the skipped
// candidates own a run longer than maxWalk do retries share evenly.
func (p *weightedRoundRobin) Pick(c []Candidate, _ Rand, skip Skip) int {
	k := p.st.next.Add(1) - 1
	if len(c) != p.n {
		if len(c) == 0 {
			return -1
		}
		return scan(c, int(k%uint64(len(c))), &skip)
	}
	m := len(p.sched)
	if m == 0 {
		return -1
	}
	j := int(k % uint64(m))
	for range min(m, maxWalk) {
		if i := int(p.sched[j]); eligible(c, i, &skip) {
			return i
		}
		j++
		if j == m {
			j = 0
		}
	}
	return nth(c, p.avail, k, &skip)
}

// smooth returns one cycle of a schedule in which idx[k] appears w[k] times
// (every w[k] >= 1), spread as evenly as possible.
//
// Each appearance is a unit job: the j-th appearance of k is released at
// j/w[k] of the cycle and due at (j+1)/w[k], and each slot runs the
// released job with the earliest due time (earliest deadline first, ties to
// the lower index). This keeps every prefix of the schedule strictly within
// one pick of the ideal share for every candidate (TestSmoothLag), a bound
// nginx's smooth WRR only nearly meets (it strays to about 1.09 on random
// weights), and it spreads the heavy candidate evenly across the
// wrap-around, which matters because the cycle repeats. It costs
// O(sum(w) log len(w)) instead of nginx's O(sum(w) len(w)): about 1 ms for
// a thousand backends of weights 1..10, 15 ms at maxSchedule (BenchmarkNew).
func smooth(idx []int32, w []int64) []int32 {
	var total int64
	for _, x := range w {
		total += x
	}
	out := make([]int32, 0, total)
	// Each candidate has exactly one current job, either waiting for its
	// release (pending, ordered by release) or released (ready, ordered by
	// due time). Times are fractions j/w of the cycle; every numerator and
	// denominator is at most total, so cross-multiplied they fit in int64.
	pending := make(jobHeap, 0, len(w))
	ready := make(jobHeap, 0, len(w))
	for k, x := range w {
		ready.push(job{num: 1, den: x, k: int32(k)}) // all released at 0
	}
	for t := int64(0); t < total; t++ {
		// A pending job's key is its release j/w; it is released by slot
		// t once j/w <= t/total.
		for len(pending) > 0 && pending[0].num*total <= t*pending[0].den {
			j := pending.pop()
			j.num++ // from release j/w to due time (j+1)/w
			ready.push(j)
		}
		if len(ready) == 0 {
			// Cannot happen (more jobs are released by slot t than t),
			// but taking the earliest release keeps the loop total.
			j := pending.pop()
			j.num++
			ready.push(j)
		}
		j := ready.pop()
		out = append(out, idx[j.k])
		// The next job's release is this one's due time.
		if j.num < j.den {
			pending.push(j)
		}
	}
	return out
}

// job is one candidate's current appearance in smooth: k is the candidate
// and num/den the time that orders it in its heap.
type job struct {
	num, den int64
	k        int32
}

// before orders jobs by time, then by candidate so that equal times go to
// the lower index and the schedule is deterministic.
func (a job) before(b job) bool {
	x, y := a.num*b.den, b.num*a.den
	return x < y || x == y && a.k < b.k
}

// jobHeap is a binary min-heap of jobs. container/heap would box every
// job in an interface.
type jobHeap []job

func (h *jobHeap) push(j job) {
	*h = append(*h, j)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if !a[i].before(a[p]) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *jobHeap) pop() job {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	*h = a
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && a[l].before(a[m]) {
			m = l
		}
		if r < last && a[r].before(a[m]) {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	return top
}

// reduce divides every weight by their greatest common divisor, so 100:100
// costs a schedule of two entries, not two hundred.
func reduce(w []int64) {
	var g int64
	for _, x := range w {
		for x != 0 {
			g, x = x, g%x
		}
	}
	if g > 1 {
		for k := range w {
			w[k] /= g
		}
	}
}

// scale shrinks w proportionally when its sum exceeds limit and reports
// whether it did. Each weight is rounded to the nearest integer and kept at
// least 1, so a backend with a nonzero weight never silently drops out.
//
// Precision loss: a scaled weight is off by at most half a unit, a relative
// error of up to 1/(2*scaled weight), and a weight that scales to below 1
// is raised to 1, so tiny weights next to huge ones get more than their
// share (1:1000000 becomes about 1:65536). The sum may end above limit by
// up to len(w): the cap is soft, and a set with more than limit candidates
// keeps one slot per candidate.
func scale(w []int64, limit int64) bool {
	var sum int64
	for _, x := range w {
		sum += x
	}
	if sum <= limit {
		return false
	}
	f := float64(limit) / float64(sum)
	for k, x := range w {
		w[k] = max(1, int64(math.Round(float64(x)*f)))
	}
	return true
}
