package pick

import "math"

// maxSchedule caps the length of a weighted-round-robin schedule (about
// 256 KiB of int32). Weights whose reduced sum is larger are scaled down to
// fit; see scale for the precision this costs.
const maxSchedule = 1 << 16

// maxWalk bounds how far Pick walks along the schedule past skipped entries
// before it falls back to sharing evenly among the eligible candidates. Runs of skipped entries are
// short unless the skipped candidates own most of the weight, so 16 covers
// the common retry case without making the worst case expensive.
const maxWalk = 16

// weightedRoundRobin hands out traffic in exact proportion to weight,
// interleaved so that no backend gets a burst (weights 5:1:1 give
// a b a a c a a, not a a a a a b c).
//
// The interleaving is precomputed once per rebuild into a schedule and Pick
// only indexes it with the shared atomic counter. The usual smooth WRR
// (nginx) instead updates per-backend "current weights" on every pick, which
// needs a lock; indexing a fixed schedule needs none.
type weightedRoundRobin struct {
	st *State // shared across rebuilds, see roundRobin.st
	n  int    // len(c) at New, to detect a foreign slice
	// sched is one cycle: candidate i appears w(i) times, where w is its
	// weight divided by the gcd of all available weights (and scaled down
	// if the cycle would exceed maxSchedule).
	sched []int32
	// avail is the fallback when the walk past skipped entries is
	// exhausted: then the eligible candidates share evenly.
	avail []int32
}

func newWeightedRoundRobin(c []Candidate, st *State) *weightedRoundRobin {
	avail := availableIndices(c)
	w := make([]int64, len(avail))
	for k, i := range avail {
		w[k] = int64(c[i].Weight)
	}
	reduce(w)
	if scale(w, maxSchedule) {
		reduce(w)
	}
	return &weightedRoundRobin{st: st, n: len(c), sched: smooth(avail, w), avail: avail}
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
// the lower index). This keeps every prefix of the schedule within one pick
// of the ideal share for every candidate, the same bound nginx's smooth WRR
// gives, and additionally spreads the heavy candidate evenly across the
// wrap-around, which matters because the cycle repeats. It costs
// O(sum(w) log len(w)) instead of nginx's O(sum(w) len(w)), which keeps a
// rebuild with a thousand backends in the low milliseconds.
func smooth(idx []int32, w []int64) []int32 {
	var total int64
	for _, x := range w {
		total += x
	}
	out := make([]int32, 0, total)
	// next[k] counts k's appearances so far; it is also the number of k's
	// current job. Keys are compared as fractions by cross-multiplying;
	// every factor is at most total, so the products fit in int64.
	next := make([]int64, len(w))
	pending := minHeap{less: func(a, b int32) bool { // by release time
		x, y := next[a]*w[b], next[b]*w[a]
		return x < y || x == y && a < b
	}}
	ready := minHeap{less: func(a, b int32) bool { // by due time
		x, y := (next[a]+1)*w[b], (next[b]+1)*w[a]
		return x < y || x == y && a < b
	}}
	for k := range w {
		ready.push(int32(k)) // every first job is released at 0
	}
	for t := int64(0); t < total; t++ {
		for len(pending.a) > 0 {
			k := pending.a[0]
			if next[k]*total > t*w[k] {
				break
			}
			ready.push(pending.pop())
		}
		if len(ready.a) == 0 {
			// Cannot happen (more jobs are released by slot t than t),
			// but taking the earliest release keeps the loop total.
			ready.push(pending.pop())
		}
		k := ready.pop()
		out = append(out, idx[k])
		next[k]++
		if next[k] < w[k] {
			pending.push(k)
		}
	}
	return out
}

// minHeap is a binary heap of small integers under a caller-supplied order.
// container/heap would box every element in an interface on the cold path
// for nothing.
type minHeap struct {
	a    []int32
	less func(a, b int32) bool
}

func (h *minHeap) push(x int32) {
	h.a = append(h.a, x)
	for i := len(h.a) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(h.a[i], h.a[p]) {
			break
		}
		h.a[i], h.a[p] = h.a[p], h.a[i]
		i = p
	}
}

func (h *minHeap) pop() int32 {
	top := h.a[0]
	last := len(h.a) - 1
	h.a[0] = h.a[last]
	h.a = h.a[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && h.less(h.a[l], h.a[m]) {
			m = l
		}
		if r < last && h.less(h.a[r], h.a[m]) {
			m = r
		}
		if m == i {
			break
		}
		h.a[i], h.a[m] = h.a[m], h.a[i]
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
