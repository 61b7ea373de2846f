package proxy

import (
	"sync/atomic"
	"time"
)

// Stats counts one backend's completed requests. Updated with atomics on the
// request path; read by scrapes.
type Stats struct {
	requests atomic.Uint64
	failures atomic.Uint64
	latency  Histogram
}

func (s *Stats) observe(d time.Duration, failed bool) {
	s.requests.Add(1)
	if failed {
		s.failures.Add(1)
	}
	s.latency.Observe(d)
}

// LatencyBuckets are the upper bounds, in seconds, of the latency histogram.
// They follow Prometheus' default spread with finer steps below 10 ms, where
// a proxy in front of fast backends lives.
func LatencyBuckets() []float64 {
	return []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
}

const numBuckets = 14

// bucketBounds mirrors LatencyBuckets as durations, for a compare-only Observe.
var bucketBounds = [numBuckets]time.Duration{
	500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
	5 * time.Second, 10 * time.Second,
}

// Histogram is a lock-free latency histogram with fixed buckets, so that
// observing a request costs a few compares and two atomic adds and the proxy
// needs no metrics library on its hot path.
type Histogram struct {
	counts [numBuckets + 1]atomic.Uint64 // last slot: above the highest bound
	sumNs  atomic.Int64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	i := 0
	for i < numBuckets && d > bucketBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
}

// HistogramSnapshot is a copy of a Histogram. Counts are per bucket (not
// cumulative); Counts[len(LatencyBuckets())] holds what exceeded the last bound.
type HistogramSnapshot struct {
	Counts [numBuckets + 1]uint64
	Sum    time.Duration
}

// Snapshot copies the histogram. Buckets are read one by one, so a snapshot
// taken under load may be off by the requests that finished meanwhile.
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Sum = time.Duration(h.sumNs.Load())
	return s
}

// Count is the number of observations.
func (s HistogramSnapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}
