package breaker

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/afex/hystrix-go/hystrix"
)

//go:noinline
func noop() error { return nil }

// benchCommand configures a hystrix command no other benchmark or test uses.
func benchCommand(b *testing.B, maxConcurrent int) (string, *hystrix.CircuitBreaker) {
	b.Helper()
	name := "bench/" + b.Name() + "#" + rand.Text()
	hystrix.ConfigureCommand(name, hystrix.CommandConfig{
		Timeout:                int(time.Hour / time.Millisecond),
		MaxConcurrentRequests:  maxConcurrent,
		RequestVolumeThreshold: 20,
		SleepWindow:            5000,
		ErrorPercentThreshold:  50,
	})
	cb, _, err := hystrix.GetCircuit(name)
	if err != nil {
		b.Fatal(err)
	}
	return name, cb
}

// benchCircuit returns a closed circuit whose Set's flusher runs with the
// default config, as in production.
func benchCircuit(b *testing.B) *Circuit {
	b.Helper()
	s, err := NewSet("bench", DefaultConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return s.Circuit("b1")
}

// (a) What each request would pay with hystrix.Do.
func BenchmarkHystrixDo(b *testing.B) {
	// A large pool: Do returns before its goroutine hands the ticket back,
	// so a small one rejects back-to-back calls.
	name, _ := benchCommand(b, 1<<20)
	b.ReportAllocs()
	var rejected int
	for b.Loop() {
		if err := hystrix.Do(name, noop, nil); err != nil {
			if !errors.Is(err, hystrix.ErrMaxConcurrency) {
				b.Fatal(err)
			}
			rejected++
		}
	}
	b.ReportMetric(float64(rejected)/float64(b.N), "rejected/op")
}

// (b) Our request path on a closed circuit.
func BenchmarkAllowDone(b *testing.B) {
	c := benchCircuit(b)
	b.ReportAllocs()
	for b.Loop() {
		if ok, tr := c.Allow(); ok {
			c.Done(tr, true)
		}
	}
}

// (c) The same from every P at once: one shared circuit, the worst case for
// the counters' cache line.
func BenchmarkAllowDoneParallel(b *testing.B) {
	c := benchCircuit(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ok, tr := c.Allow(); ok {
				c.Done(tr, true)
			}
		}
	})
}

// (d) The naive gate: hystrix's AllowRequest and ReportEvent on every
// request, without Do's goroutines. hystrix drops events its metrics
// goroutine can't keep up with; dropped/op shows how many.
func BenchmarkNaiveGate(b *testing.B) {
	_, cb := benchCommand(b, 1)
	success := []string{"success"}
	b.ReportAllocs()
	var dropped int
	for b.Loop() {
		if cb.AllowRequest() {
			if cb.ReportEvent(success, time.Now(), 0) != nil {
				dropped++
			}
		}
	}
	b.ReportMetric(float64(dropped)/float64(b.N), "dropped/op")
}
