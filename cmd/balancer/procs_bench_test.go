package main

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"
)

// reportPercentiles adds p50/p99/max of samples to the benchmark's output.
func reportPercentiles(b *testing.B, samples []time.Duration, unit string) {
	if len(samples) == 0 {
		return
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	at := func(q float64) float64 {
		return float64(samples[int(q*float64(len(samples)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-"+unit)
	b.ReportMetric(at(0.99), "p99-"+unit)
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "max-"+unit)
}

// BenchmarkProcWeightChange measures an operator's weight change from the
// API call on a follower to the moment every node has applied it (each
// node's long poll on /v1/config answers), on 3 real processes.
//
//	go test -run '^$' -bench ProcWeightChange -benchtime 200x ./cmd/balancer
func BenchmarkProcWeightChange(b *testing.B) {
	backends := startDemoBackends(b, "a", "b")
	agents := startRaftCluster(b, 3, backends)
	_, follower := followerOf(b, agents)
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		res, err := follower.client().SetWeight(ctx, "a", int32(1+i%9))
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, a := range agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					cfg, err := a.client().ConfigAfter(ctx, res.Index-1, 5*time.Second)
					if err != nil || cfg.Index >= res.Index || ctx.Err() != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		samples = append(samples, time.Since(start))
		cancel()
	}
	b.StopTimer()
	reportPercentiles(b, samples, "ms")
}

// BenchmarkProcFailover measures leader fail-over: SIGKILL the leader of a
// 3-node cluster, then time until a write through a survivor is accepted.
//
//	go test -run '^$' -bench ProcFailover -benchtime 5x ./cmd/balancer
func BenchmarkProcFailover(b *testing.B) {
	backends := startDemoBackends(b, "a", "b")
	b.Run("raft-timeout=1s", func(b *testing.B) { benchFailover(b, backends) })
	b.Run("raft-timeout=250ms", func(b *testing.B) { benchFailover(b, backends, "-raft-timeout", "250ms") })
}

func benchFailover(b *testing.B, backends map[string]string, extra ...string) {
	samples := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		agents := startRaftCluster(b, 3, backends, extra...)
		leader, follower := followerOf(b, agents)
		b.StartTimer()
		start := time.Now()
		leader.kill()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := follower.client().SetWeight(ctx, "a", int32(2+i%5))
			cancel()
			if err == nil {
				break
			}
			if time.Since(start) > 30*time.Second {
				b.Fatalf("no write accepted 30s after the leader died: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		samples = append(samples, time.Since(start))
		b.StopTimer()
		for _, a := range agents {
			a.stop()
		}
	}
	reportPercentiles(b, samples, "ms")
}
