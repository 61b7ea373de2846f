package proxy

import (
	"fmt"
	"testing"

	"github.com/thebalancer/balancer/proxy/pick"
)

// hotPathProxy builds a proxy over n backends whose circuits admit everything.
func hotPathProxy(tb testing.TB, algorithm string, n int) *Proxy {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Algorithm = algorithm
	p, err := New(cfg, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	routes := make([]Route, n)
	for i := range routes {
		routes[i] = Route{Backend: Backend{ID: fmt.Sprintf("b%d", i), Address: fmt.Sprintf("10.0.0.%d:80", i%250+1), Weight: int32(1 + i%3)}}
	}
	p.SetRoutes(routes)
	return p
}

// sendOne is what every request does before and after the network: read
// the table, pick, claim through the circuit, count up, and count down.
func sendOne(p *Proxy) {
	t := p.tab.Load()
	var skip pick.Skip
	i, trial, err := p.choose(t, &skip)
	if err != nil {
		panic(err)
	}
	u := t.ups[i]
	u.inflight.Add(1)
	u.inflight.Add(-1)
	u.circuit.Done(trial, true)
}

func TestHotPathAllocatesNothing(t *testing.T) {
	for _, alg := range pick.Names() {
		p := hotPathProxy(t, alg, 10)
		if n := testing.AllocsPerRun(1000, func() { sendOne(p) }); n != 0 {
			t.Errorf("%s: %v allocations per request on the hot path, want 0", alg, n)
		}
	}
}

func BenchmarkHotPath(b *testing.B) {
	for _, alg := range pick.Names() {
		for _, n := range []int{10, 1000} {
			b.Run(fmt.Sprintf("%s/%d", alg, n), func(b *testing.B) {
				p := hotPathProxy(b, alg, n)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						sendOne(p)
					}
				})
			})
		}
	}
}
