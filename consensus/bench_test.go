package consensus

import (
	"context"
	"slices"
	"testing"
	"time"
)

// reportLatency reports p50/p99/max of samples in milliseconds.
func reportLatency(b *testing.B, samples []time.Duration) {
	b.Helper()
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(samples[len(samples)*50/100]), "p50-ms")
	b.ReportMetric(ms(samples[min(len(samples)*99/100, len(samples)-1)]), "p99-ms")
	b.ReportMetric(ms(samples[len(samples)-1]), "max-ms")
}

// BenchmarkApplyLeader measures sequential Apply latency on the leader of a
// 3-node cluster on raft-boltdb (fsync per commit), loopback TCP.
func BenchmarkApplyLeader(b *testing.B) {
	c := newCluster(b, 3)
	c.waitApplied(c.apply(Seed(seedSet)).Index)
	l := c.waitLeader()
	ctx := context.Background()
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := l.Apply(ctx, SetWeight("a", int32(i%MaxWeight))); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	reportLatency(b, samples)
}

// BenchmarkApplyReplicated measures the time from Apply on the leader until
// the change is applied on all three nodes (what `?wait=applied` costs).
func BenchmarkApplyReplicated(b *testing.B) {
	c := newCluster(b, 3)
	c.waitApplied(c.apply(Seed(seedSet)).Index)
	l := c.waitLeader()
	ctx := context.Background()
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		res, err := l.Apply(ctx, SetWeight("a", int32(i%MaxWeight)))
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range c.stores {
			if err := s.WaitIndex(ctx, res.Index); err != nil {
				b.Fatal(err)
			}
		}
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	reportLatency(b, samples)
}

// BenchmarkConfigApply measures the pure state transition (one SetWeight on
// a 100-backend config), which runs on every node for every entry.
func BenchmarkConfigApply(b *testing.B) {
	var bs []Backend
	for i := range 100 {
		bs = append(bs, Backend{ID: "b" + string(rune('a'+i/26)) + string(rune('a'+i%26)), Address: "10.0.0.1:80", Weight: 1, Source: SourceConsul})
	}
	cfg, _, err := Config{Backends: []Backend{}}.apply(Seed(bs), 1)
	if err != nil {
		b.Fatal(err)
	}
	cmd := SetWeight(bs[50].ID, 7)
	b.ReportAllocs()
	for i := range b.N {
		if _, _, err := cfg.apply(cmd, uint64(i+2)); err != nil {
			b.Fatal(err)
		}
	}
}
