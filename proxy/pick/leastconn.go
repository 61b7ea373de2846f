package pick

// maxInflight caps the count a policy reads. Real counts are far below it;
// the cap keeps a corrupted counter from turning comparisons into nonsense.
const maxInflight = 1 << 40

// leastConn sends each request to the candidate with the lowest load per
// unit of weight, so a backend with weight 2 is kept at about twice the
// in-flight requests of one with weight 1.
//
// It scans every candidate (O(n) per pick): the loads change under every
// request, so there is nothing to precompute.
type leastConn struct {
	// peers adds the load other nodes report (Candidate.Peers) to our own
	// count. Without it (least-conn-local) each node balances only its own
	// requests, which is exact for one node and blind to the rest of the
	// cluster; with it, nodes see each other's load, but every node sees
	// the same stale view and would pile onto the same idle backend between
	// gossip rounds, were it not for the echo of its own picks (see
	// Candidate.Echo).
	peers bool
}

// load is the candidate's load as this policy scores it.
func (p *leastConn) load(c *Candidate) float64 {
	own := float64(inflight(c))
	l := own
	if p.peers {
		// Written as > 0 so that a NaN or negative value from a bad report
		// counts as nothing instead of poisoning every comparison.
		if c.Peers > 0 {
			l += c.Peers
		}
		// Only growth is echoed: Echo and EchoBase are sums over peers, and
		// a fall in this node's count, echoed through peers that had
		// nothing on the backend, would cancel the real load of the others.
		if extra := c.Echo*own - c.EchoBase; extra > 0 {
			l += extra
		}
	}
	return l
}

// inflight reads the local in-flight count. A nil counter (a candidate the
// proxy never counts) reads as idle rather than crashing the request, and a
// negative one (a double decrement elsewhere) as zero.
func inflight(c *Candidate) int64 {
	if c.Local == nil {
		return 0
	}
	return min(max(c.Local.Load(), 0), maxInflight)
}

// tieBuf is how many tied candidates Pick remembers in its first pass. At
// low traffic every count is zero and all candidates tie, so remembering
// them spares a second pass over the counters for sets up to this size.
const tieBuf = 16

// Pick implements Policy. Loads are compared as la*wb < lb*wa instead of
// la/wa < lb/wb: no division on the hot path, and in float64 the products
// (at most 2^40 * 2^31 plus Peers) cannot overflow.
//
// Ties go to a uniformly random one of the tied candidates. Always taking
// the first would send every idle moment's traffic to the lowest index;
// starting the scan at a random index would favour whichever tied candidate
// follows a run of busier ones. Beyond tieBuf ties, uniform choice needs a
// second pass over the counters, which may have moved since the first: a
// tied candidate that is no longer tied is passed over, and if the chosen
// one is gone the first minimum wins. Either way the pick was a minimum a
// moment ago, which is all any reading of live counters can promise.
func (p *leastConn) Pick(c []Candidate, r Rand, skip Skip) int {
	var tied [tieBuf]int32
	best, ties := -1, 0
	var bl, bw float64
	for i := range c {
		ci := &c[i]
		if !ci.Available() || skip.Has(i) {
			continue
		}
		l, w := p.load(ci), float64(ci.Weight)
		x, y := l*bw, bl*w
		if best < 0 || x < y {
			best, bl, bw, ties = i, l, w, 1
			tied[0] = int32(i)
		} else if x == y {
			if ties < tieBuf {
				tied[ties] = int32(i)
			}
			ties++
		}
	}
	if ties <= 1 {
		return best
	}
	k := r.IntN(ties)
	if k < tieBuf {
		return int(tied[k])
	}
	k -= tieBuf - 1
	for i := int(tied[tieBuf-1]) + 1; i < len(c); i++ {
		ci := &c[i]
		if !ci.Available() || skip.Has(i) {
			continue
		}
		if p.load(ci)*bw == bl*float64(ci.Weight) {
			if k--; k == 0 {
				return i
			}
		}
	}
	return best
}
