package proxy

import (
	"sync/atomic"
	"time"
)

// Failure says why a request to a backend failed. The zero value is a
// success.
type Failure uint8

// Failure reasons, in the order of Failures' counts.
const (
	NoFailure  Failure = iota
	Connect            // the backend could not be reached: nothing was sent
	Timeout            // no answer (or no connect) within the backend timeout
	Transport          // the connection broke before the answer's headers
	Status5xx          // the backend answered 500 or above
	BrokenBody         // the answer's body broke off mid-stream
	numFailures
)

// String is the reason's metric label.
func (f Failure) String() string {
	switch f {
	case NoFailure:
		return "ok"
	case Connect:
		return "connect"
	case Timeout:
		return "timeout"
	case Transport:
		return "transport"
	case Status5xx:
		return "status_5xx"
	case BrokenBody:
		return "broken_body"
	}
	return "unknown"
}

// FailureReasons lists every failure reason (NoFailure excluded), in a stable order.
func FailureReasons() []Failure {
	return []Failure{Connect, Timeout, Transport, Status5xx, BrokenBody}
}

// Stats counts one backend's completed requests. Updated with atomics on the
// request path; read by scrapes.
type Stats struct {
	requests atomic.Uint64
	failures [numFailures]atomic.Uint64 // by reason; [NoFailure] stays 0
	latency  Histogram
}

func (s *Stats) observe(d time.Duration, f Failure) {
	s.requests.Add(1)
	if f != NoFailure {
		s.failures[f].Add(1)
	}
	s.latency.Observe(d)
}

// FailureCounts are a backend's failures by reason, indexed by Failure.
type FailureCounts [numFailures]uint64

// Total is the number of failures of any reason.
func (c FailureCounts) Total() uint64 {
	var n uint64
	for _, v := range c {
		n += v
	}
	return n
}

func (s *Stats) failureCounts() FailureCounts {
	var c FailureCounts
	for i := range s.failures {
		c[i] = s.failures[i].Load()
	}
	return c
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

// Sub returns the observations s has beyond an earlier snapshot of the same
// histogram: the histogram of a time window. A count that went backwards
// (a snapshot torn by concurrent observes) reads as 0.
func (s HistogramSnapshot) Sub(earlier HistogramSnapshot) HistogramSnapshot {
	var d HistogramSnapshot
	for i := range s.Counts {
		if s.Counts[i] > earlier.Counts[i] {
			d.Counts[i] = s.Counts[i] - earlier.Counts[i]
		}
	}
	d.Sum = max(s.Sum-earlier.Sum, 0)
	return d
}

// Quantile estimates the q-quantile (0 < q < 1) the way Prometheus'
// histogram_quantile does: find the bucket holding the rank and interpolate
// linearly inside it. Past the last bound it answers that bound, the most
// the buckets can tell. It returns 0 for an empty histogram.
func (s HistogramSnapshot) Quantile(q float64) time.Duration {
	total := s.Count()
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum uint64
	for i, c := range s.Counts {
		if i == numBuckets {
			break
		}
		if c > 0 && float64(cum+c) >= rank {
			lo := time.Duration(0)
			if i > 0 {
				lo = bucketBounds[i-1]
			}
			frac := (rank - float64(cum)) / float64(c)
			return lo + time.Duration(frac*float64(bucketBounds[i]-lo))
		}
		cum += c
	}
	return bucketBounds[numBuckets-1]
}
