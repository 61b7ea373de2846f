package pick

import "math"

// maxSampleTotal caps the total sampling weight so that r.IntN's int
// argument cannot overflow. On 64-bit platforms no real weight set reaches
// it; on 32-bit ones weights are scaled as in weighted-round-robin.
const maxSampleTotal = math.MaxInt >> 1

// p2c (power of two choices) compares two sampled candidates and takes the
// less loaded one. Unlike least-conn it does not send every node to the one
// backend that looks idle in a shared, stale view: each node compares a
// different random pair, so load spreads even when the views agree. That is
// the right default for a cluster of balancers without a global view.
//
// How the pair is drawn keeps the weights honest. The first candidate is
// drawn in proportion to weight, the second uniformly among the remaining
// eligible ones, and a tie in load per weight goes to a in proportion
// wa/(wa+wb). Then pair {a,b} comes up with probability (wa+wb)/(W(m-1))
// for m eligible candidates of total weight W, and an idle backend gets
// exactly its weight share: sum over b of (wa+wb)/(W(m-1)) * wa/(wa+wb)
// = wa/W. Drawing both in proportion to weight (without replacement) would
// instead flatten the shares of idle backends: 3:1 between two backends
// would come out 1:1.
//
// Draws never hit a skipped candidate, so there is no resampling: the
// skipped ones (at most MaxTries, plus the first draw) are cut out of the
// range the random number is drawn from, which costs one small sorted walk.
type p2c struct {
	n int // len(c) at New, to detect a foreign slice
	// cum[i] is the sampling weight of c[0..i]; unavailable candidates add
	// nothing, so a weighted draw can never land on them.
	cum []int64
	// avail lists the available candidates in index order (for the uniform
	// draw) and rank[i] is i's position in it, or -1.
	avail []int32
	rank  []int32
	// lc scores loads and handles a foreign slice.
	lc leastConn
}

func newP2C(c []Candidate) *p2c {
	avail := availableIndices(c)
	w := make([]int64, len(avail))
	for k, i := range avail {
		w[k] = int64(c[i].Weight)
	}
	scale(w, maxSampleTotal)
	p := &p2c{
		n:     len(c),
		cum:   make([]int64, len(c)),
		avail: avail,
		rank:  make([]int32, len(c)),
		lc:    leastConn{peers: true},
	}
	for i := range p.rank {
		p.rank[i] = -1
	}
	for k, i := range avail {
		p.rank[i] = int32(k)
	}
	var sum int64
	for i := range c {
		if r := p.rank[i]; r >= 0 {
			sum += w[r]
		}
		p.cum[i] = sum
	}
	return p
}

// weight is i's sampling weight.
func (p *p2c) weight(i int32) int64 {
	if i == 0 {
		return p.cum[0]
	}
	return p.cum[i] - p.cum[i-1]
}

// Pick implements Policy. It calls r.IntN at most three times: the weighted
// draw, the uniform draw and, on a tie, the coin. With one eligible
// candidate it returns it without drawing.
func (p *p2c) Pick(c []Candidate, r Rand, skip Skip) int {
	if len(c) != p.n {
		return p.lc.Pick(c, r, skip)
	}
	var ex excluded
	for k := 0; k < skip.n; k++ {
		if i := skip.idx[k]; i >= 0 && int(i) < p.n && p.rank[i] >= 0 {
			ex.add(i)
		}
	}
	m := len(p.avail) - ex.n
	if m <= 0 {
		return -1
	}
	var x int64
	if m > 1 {
		left := p.cum[p.n-1]
		for _, i := range ex.idx[:ex.n] {
			left -= p.weight(i)
		}
		x = int64(r.IntN(int(left)))
	}
	a := p.byWeight(x, &ex)
	if m == 1 {
		if !c[a].Available() {
			return p.lc.Pick(c, r, skip)
		}
		return int(a)
	}
	ex.add(a)
	b := p.byRank(r.IntN(m-1), &ex)
	ca, cb := &c[a], &c[b]
	if !ca.Available() || !cb.Available() {
		return p.lc.Pick(c, r, skip)
	}
	switch x, y := p2cCost(p.lc.load(ca), ca, cb), p2cCost(p.lc.load(cb), cb, ca); {
	case x < y:
		return int(a)
	case y < x:
		return int(b)
	}
	wa, wb := p.weight(a), p.weight(b)
	if int64(r.IntN(int(wa+wb))) < wa {
		return int(a)
	}
	return int(b)
}

// byWeight maps x, a point in the total weight with the excluded
// candidates' stretches cut out, to the candidate whose stretch holds it.
func (p *p2c) byWeight(x int64, ex *excluded) int32 {
	for _, i := range ex.idx[:ex.n] {
		w := p.weight(i)
		if x >= p.cum[i]-w {
			x += w
		}
	}
	// The first i with cum[i] > x; its own weight is > 0, so it is available.
	lo, hi := 0, p.n-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if p.cum[mid] > x {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return int32(lo)
}

// byRank maps y, a position in avail with the excluded candidates cut out,
// to the candidate at that position.
func (p *p2c) byRank(y int, ex *excluded) int32 {
	for _, i := range ex.idx[:ex.n] {
		if y >= int(p.rank[i]) {
			y++
		}
	}
	return p.avail[y]
}

// excluded is a small sorted set of available candidate indices that a draw
// must not return: the skipped ones and the first draw. It lives on the
// stack, so excluding costs no allocation.
type excluded struct {
	n   int
	idx [MaxTries + 1]int32
}

// add inserts i in order; duplicates (the same backend skipped twice) are
// dropped, or they would be cut out of the range twice.
func (e *excluded) add(i int32) {
	k := 0
	for k < e.n && e.idx[k] < i {
		k++
	}
	if k < e.n && e.idx[k] == i || e.n == len(e.idx) {
		return
	}
	copy(e.idx[k+1:e.n+1], e.idx[k:e.n])
	e.idx[k] = i
	e.n++
}

// p2cCost is a's cost cross-multiplied by b's weight, so that costs of two
// candidates compare without a division. When both latencies are known and
// differ by more than latencyNoise the cost is the expected wait,
// (load+1) × latency ÷ weight — the "least loaded by peak EWMA" rule of
// Finagle's and Linkerd's P2C balancers: a backend ten times slower needs
// ten times fewer requests in flight to be chosen, which keeps a slow
// backend out of the tail even when it is idle. Closer latencies are
// treated as noise (a response-time average over a few long, variable
// requests says little about the next one) and the cost is plain
// load ÷ weight, as it is while either latency is unknown.
func p2cCost(load float64, a, b *Candidate) float64 {
	if latencyDiffers(a.Latency, b.Latency) {
		return (load + 1) * a.Latency * float64(b.Weight)
	}
	return load * float64(b.Weight)
}

// latencyNoise is the ratio below which two backends' latencies count as equal.
const latencyNoise = 2

func latencyDiffers(x, y float64) bool {
	if x <= 0 || y <= 0 {
		return false
	}
	return x > latencyNoise*y || y > latencyNoise*x
}
