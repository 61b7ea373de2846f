package pick_test

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/thebalancer/balancer/proxy/pick"
)

func ExampleNew() {
	// The proxy rebuilds this slice whenever weights, breakers or the
	// cluster view change; the counters live as long as the backends.
	names := []string{"a", "b", "c", "d"}
	c := []pick.Candidate{
		{Weight: 5, Local: new(atomic.Int64)},
		{Weight: 1, Local: new(atomic.Int64)},
		{Weight: 1, Local: new(atomic.Int64)},
		{Weight: 3, Down: true, Local: new(atomic.Int64)}, // open circuit
	}
	var st pick.State // one per listener, handed to every rebuild
	p, err := pick.New(pick.WeightedRoundRobin, c, &st)
	if err != nil {
		fmt.Println(err)
		return
	}

	var seq []string
	for range 7 {
		i := p.Pick(c, pick.Random{}, pick.Skip{})
		c[i].Local.Add(1) // request in flight
		seq = append(seq, names[i])
		c[i].Local.Add(-1) // request done
	}
	fmt.Println(strings.Join(seq, " "))

	// A retry: the first choice refused the connection, so skip it.
	var skip pick.Skip
	first := p.Pick(c, pick.Random{}, skip)
	skip.Add(first)
	retry := p.Pick(c, pick.Random{}, skip)
	fmt.Println(names[first], "failed, retry on", names[retry])

	// Output:
	// a b a a c a a
	// a failed, retry on b
}
