package bench

import (
	"math"
	"slices"
	"time"
)

// Latency summarizes a set of request latencies, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Percentile returns the q-th quantile (0 <= q <= 1) of sorted by the
// nearest-rank method: the smallest sample with at least q of the samples at
// or below it. It returns 0 for no samples.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if q <= 0 {
		return sorted[0]
	}
	if q >= 1 {
		return sorted[n-1]
	}
	// Rank in 1..n; the epsilon keeps e.g. 0.99*100 from rounding to 100.000001.
	rank := int(math.Ceil(q*float64(n) - 1e-9))
	rank = max(rank, 1)
	return sorted[rank-1]
}

// Summarize sorts samples in place and summarizes them.
func Summarize(samples []time.Duration) Latency {
	slices.Sort(samples)
	l := Latency{Count: len(samples)}
	if len(samples) == 0 {
		return l
	}
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	l.Mean = ms(sum / time.Duration(len(samples)))
	l.P50 = ms(Percentile(samples, 0.50))
	l.P90 = ms(Percentile(samples, 0.90))
	l.P99 = ms(Percentile(samples, 0.99))
	l.P999 = ms(Percentile(samples, 0.999))
	l.Max = ms(samples[len(samples)-1])
	return l
}

// CDFPoint is one point of an empirical CDF: Frac of the samples took at
// most MS milliseconds.
type CDFPoint struct {
	MS   float64 `json:"ms"`
	Frac float64 `json:"frac"`
}

// CDF returns at most points points of the empirical CDF of sorted, spaced
// evenly in quantile, plus the tail quantiles 0.99, 0.999, 0.9999 and the
// maximum, so that a chart shows the tail.
func CDF(sorted []time.Duration, points int) []CDFPoint {
	n := len(sorted)
	if n == 0 || points < 2 {
		return nil
	}
	qs := make([]float64, 0, points+4)
	for i := range points {
		qs = append(qs, float64(i)/float64(points-1))
	}
	qs = append(qs, 0.99, 0.995, 0.999, 0.9999)
	slices.Sort(qs)
	qs = slices.Compact(qs)
	out := make([]CDFPoint, 0, len(qs))
	for _, q := range qs {
		out = append(out, CDFPoint{MS: ms(Percentile(sorted, q)), Frac: q})
	}
	return out
}

// Imbalance summarizes how evenly work was spread over backends, from
// samples of each backend's outstanding requests (in flight plus queued)
// taken at a fixed interval. For each sample with any work, the ratio is the
// busiest backend's count over the mean count; 1 is perfect balance and N
// (the number of backends) means one backend had all of it.
type Imbalance struct {
	Samples int `json:"samples"` // samples with any work outstanding
	// MeanRatio is the time average of max ÷ mean over those samples.
	MeanRatio float64 `json:"max_over_mean"`
	// P99Ratio is the 99th percentile of max ÷ mean over those samples.
	P99Ratio float64 `json:"max_over_mean_p99"`
	// AvgInFlight is each backend's time-averaged outstanding requests,
	// over all samples, in backend order.
	AvgInFlight []float64 `json:"avg_in_flight"`
}

// Balance computes the Imbalance of samples, where samples[t][b] is backend
// b's outstanding requests at sample t.
func Balance(samples [][]int64) Imbalance {
	var im Imbalance
	var ratios []float64
	for _, s := range samples {
		if len(s) > len(im.AvgInFlight) {
			im.AvgInFlight = append(im.AvgInFlight, make([]float64, len(s)-len(im.AvgInFlight))...)
		}
		var sum, mx int64
		for b, v := range s {
			sum += v
			mx = max(mx, v)
			im.AvgInFlight[b] += float64(v)
		}
		if sum == 0 || len(s) == 0 {
			continue
		}
		mean := float64(sum) / float64(len(s))
		ratios = append(ratios, float64(mx)/mean)
	}
	if len(samples) > 0 {
		for b := range im.AvgInFlight {
			im.AvgInFlight[b] /= float64(len(samples))
		}
	}
	im.Samples = len(ratios)
	if len(ratios) == 0 {
		return im
	}
	var sum float64
	for _, r := range ratios {
		sum += r
	}
	im.MeanRatio = sum / float64(len(ratios))
	slices.Sort(ratios)
	rank := int(math.Ceil(0.99*float64(len(ratios)) - 1e-9))
	im.P99Ratio = ratios[max(rank, 1)-1]
	return im
}

// Spread splits n clients (or a rate) over len(weights) targets in
// proportion to weights, by largest remainder, so the parts sum to n.
func Spread(n int, weights []float64) []int {
	out := make([]int, len(weights))
	if len(weights) == 0 || n <= 0 {
		return out
	}
	var total float64
	for _, w := range weights {
		total += w
	}
	if total <= 0 {
		weights = slices.Repeat([]float64{1}, len(weights))
		total = float64(len(weights))
	}
	type rem struct {
		i int
		r float64
	}
	rems := make([]rem, len(weights))
	given := 0
	for i, w := range weights {
		exact := float64(n) * w / total
		out[i] = int(exact)
		given += out[i]
		rems[i] = rem{i, exact - float64(out[i])}
	}
	slices.SortStableFunc(rems, func(a, b rem) int {
		switch {
		case a.r > b.r:
			return -1
		case a.r < b.r:
			return 1
		}
		return 0
	})
	for k := 0; given < n; k++ {
		out[rems[k%len(rems)].i]++
		given++
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
