// Package pick chooses a backend for one request. It is the pure decision core
// of the balancer: it performs no I/O, reads no clock, takes no lock, logs
// nothing and allocates nothing on Pick, so every policy can be tested with
// exact expectations and benchmarked in isolation.
//
// The proxy owns the in-flight counters and the candidate slice; the node
// decides which candidates are down (open circuit, drained) and what load the
// rest of the cluster puts on each backend (Peers). A policy only reads them.
package pick

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
)

// Candidate is one backend as a policy sees it. A candidate slice is built on
// the cold path whenever the config, the breaker states or the cluster view
// change, and is never modified afterwards; only the counter behind Local moves.
type Candidate struct {
	// Weight is the backend's configured share of new traffic. 0 means it
	// gets no new traffic (weight 0 or drained); requests already sent finish.
	Weight int32
	// Down marks a backend that must get no normal traffic: its circuit is
	// open or half-open on this node, or open on a peer.
	Down bool
	// Local is this node's live in-flight count for the backend, incremented
	// by the proxy when it sends a request and decremented when it completes.
	Local *atomic.Int64
	// Peers is the load the other nodes put on the backend, as the node last
	// computed it from gossip (already weighted for staleness); 0 without a cluster.
	Peers float64
	// Echo and EchoBase carry the peers' load forward between reports: the
	// node assumes the other nodes added to their counts on this backend as
	// it added to its own since their reports, so the peer load it scores
	// is Peers + max(0, Echo×Local − EchoBase). Echo is the sum over peers of
	// (trust in the report × the peer's activity relative to this node's);
	// EchoBase the same sum times this node's count when each report
	// arrived. Without it every node keeps sending to the backend that looked
	// idle in the last report until the next one shows the pile-up.
	Echo, EchoBase float64
	// Latency is the backend's recent mean response time in seconds as this
	// node observes it; 0 while unknown. p2c weighs load by it.
	Latency float64
}

// Available reports whether the candidate may take new traffic.
func (c *Candidate) Available() bool { return c.Weight > 0 && !c.Down }

// Rand is the source of randomness a policy draws from. Tests inject a fake
// that returns planned values; production uses Random.
type Rand interface {
	// IntN returns a number in [0, n). n > 0.
	IntN(n int) int
}

// Random is the production Rand: math/rand/v2's goroutine-safe global source.
type Random struct{}

// IntN implements Rand.
func (Random) IntN(n int) int { return rand.IntN(n) }

// MaxTries bounds how many backends one request may try (the first pick plus
// retries after connect failures or a refused circuit).
const MaxTries = 4

// Skip is the set of candidates already tried for one request. It is a value
// type so that passing it to Pick never allocates.
type Skip struct {
	n   int
	idx [MaxTries]int32
}

// Add records i as tried. Beyond MaxTries entries it is a no-op; the proxy
// never tries more than MaxTries backends.
func (s *Skip) Add(i int) {
	if s.n < MaxTries {
		s.idx[s.n] = int32(i)
		s.n++
	}
}

// Has reports whether i was tried.
func (s *Skip) Has(i int) bool {
	for k := 0; k < s.n; k++ {
		if int(s.idx[k]) == i {
			return true
		}
	}
	return false
}

// Len is the number of tried candidates.
func (s *Skip) Len() int { return s.n }

// Policy chooses one candidate.
type Policy interface {
	// Pick returns the index in c of an available candidate that is not in
	// skip, or -1 when there is none. c is the slice the policy was built
	// for. Pick is called concurrently from many goroutines.
	Pick(c []Candidate, r Rand, skip Skip) int
}

// State is what a policy keeps across candidate-set rebuilds, such as the
// rotation position of round-robin. The proxy owns one per listener and hands
// it to every New, so that a rebuild (which happens often once gossip runs)
// does not restart the rotation at the first backend. The zero value is
// ready to use; a State may be shared by concurrent New and Pick calls.
type State struct {
	next atomic.Uint64
	// wrr is the last weighted-round-robin schedule built. Most rebuilds
	// change only loads, which the schedule does not depend on, so New
	// reuses it when the weights and availability are unchanged instead of
	// recomputing up to maxSchedule entries.
	wrr atomic.Pointer[wrrSchedule]
}

// Policy names, as accepted by New and the -algorithm flag.
const (
	RoundRobin         = "round-robin"
	WeightedRoundRobin = "weighted-round-robin"
	LeastConnLocal     = "least-conn-local"
	LeastConn          = "least-conn"
	P2C                = "p2c"
)

// Names returns every policy name, in the order the docs list them.
func Names() []string {
	return []string{RoundRobin, WeightedRoundRobin, LeastConnLocal, LeastConn, P2C}
}

// Valid reports whether name is a known policy.
func Valid(name string) bool {
	for _, n := range Names() {
		if n == name {
			return true
		}
	}
	return false
}

// New builds the named policy for the candidate set c. Weights and Down are
// read now (weighted policies precompute from them); counts are read at each
// Pick. st must not be nil.
//
// New runs on the cold path (every rebuild of the routing table) and may
// allocate; the returned Policy is immutable, so one value may serve any
// number of goroutines until the next rebuild replaces it.
func New(name string, c []Candidate, st *State) (Policy, error) {
	// Checked here rather than left to a nil dereference in Pick, which would
	// crash a request goroutine long after the wiring mistake.
	if st == nil {
		return nil, errors.New("pick: nil State")
	}
	switch name {
	case RoundRobin:
		return newRoundRobin(c, st), nil
	case WeightedRoundRobin:
		return newWeightedRoundRobin(c, st), nil
	case LeastConnLocal:
		return &leastConn{}, nil
	case LeastConn:
		return &leastConn{peers: true}, nil
	case P2C:
		return newP2C(c), nil
	}
	return nil, fmt.Errorf("unknown algorithm %q (want one of %v)", name, Names())
}

// availableIndices lists the candidates that may take traffic, in index
// order. Policies that precompute keep this instead of re-testing every
// candidate on each Pick.
func availableIndices(c []Candidate) []int32 {
	var n int
	for i := range c {
		if c[i].Available() {
			n++
		}
	}
	out := make([]int32, 0, n)
	for i := range c {
		if c[i].Available() {
			out = append(out, int32(i))
		}
	}
	return out
}

// eligible reports whether i may be returned by Pick. Policies re-check
// availability even for indices they precomputed, so that a caller who
// breaks the "same slice as New" contract gets a worse choice, never a
// backend that is down or an index out of range.
func eligible(c []Candidate, i int, skip *Skip) bool {
	return i >= 0 && i < len(c) && c[i].Available() && !skip.Has(i)
}

// rotate returns the first eligible entry of list, starting at list[start]
// and wrapping around, or -1. Rotating over a list of available indices
// rather than over c keeps shares equal when some candidates are down: a
// scan over c would also hand each down backend's turns to its successor.
func rotate(c []Candidate, list []int32, start int, skip *Skip) int {
	n := len(list)
	j := start
	for range n {
		if i := int(list[j]); eligible(c, i, skip) {
			return i
		}
		j++
		if j == n {
			j = 0
		}
	}
	return -1
}

// nth returns the (k mod m)-th of the m eligible entries of list, or -1.
// Unlike rotate it shares evenly among the eligible entries when some are
// skipped, at the cost of two passes; policies use it as a rare fallback.
func nth(c []Candidate, list []int32, k uint64, skip *Skip) int {
	var m uint64
	for _, i := range list {
		if eligible(c, int(i), skip) {
			m++
		}
	}
	if m == 0 {
		return -1
	}
	k %= m
	for _, i := range list {
		if eligible(c, int(i), skip) {
			if k == 0 {
				return int(i)
			}
			k--
		}
	}
	return -1 // unreachable: list and c are not modified concurrently
}

// scan is rotate over all of c. It is the fallback for a Pick that receives
// a slice other than the one its policy was built for.
func scan(c []Candidate, start int, skip *Skip) int {
	n := len(c)
	j := start
	for range n {
		if eligible(c, j, skip) {
			return j
		}
		j++
		if j == n {
			j = 0
		}
	}
	return -1
}
