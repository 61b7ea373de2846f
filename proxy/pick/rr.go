package pick

// roundRobin gives every available candidate the same share, whatever its
// weight (only weight 0 counts: it means no traffic). It suits identical
// backends, where weights would only add configuration to get wrong.
type roundRobin struct {
	// st is shared with the policy this one replaced, so a rebuild carries
	// on from the next backend instead of restarting at the first: with
	// frequent rebuilds, a restart would pile traffic onto backend 0.
	st *State
	// n is len(c) at New; Pick uses it to detect a foreign slice.
	n int
	// avail holds the available candidates, in index order.
	avail []int32
}

func newRoundRobin(c []Candidate, st *State) *roundRobin {
	return &roundRobin{st: st, n: len(c), avail: availableIndices(c)}
}

// Pick implements Policy. A skipped candidate's turn goes to the next
// eligible one, so retries favour the skipped candidate's successor; that is
// the price of a lock-free rotation and only affects retries.
func (p *roundRobin) Pick(c []Candidate, _ Rand, skip Skip) int {
	k := p.st.next.Add(1) - 1
	if len(c) != p.n {
		if len(c) == 0 {
			return -1
		}
		return scan(c, int(k%uint64(len(c))), &skip)
	}
	if len(p.avail) == 0 {
		return -1
	}
	return rotate(c, p.avail, int(k%uint64(len(p.avail))), &skip)
}
