package bench

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func durs(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100ms
	}
	thousand := make([]time.Duration, 1000)
	for i := range thousand {
		thousand[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one sample any q", durs(7), 0.99, 7 * time.Millisecond},
		{"q 0 is min", durs(1, 2, 3), 0, time.Millisecond},
		{"q 1 is max", durs(1, 2, 3), 1, 3 * time.Millisecond},
		{"median of odd", durs(1, 2, 3), 0.5, 2 * time.Millisecond},
		{"median of even is lower middle (nearest rank)", durs(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p50 of 1..100", hundred, 0.50, 50 * time.Millisecond},
		{"p90 of 1..100", hundred, 0.90, 90 * time.Millisecond},
		{"p99 of 1..100 not rounded up by float error", hundred, 0.99, 99 * time.Millisecond},
		{"p99.9 of 1..100 is max", hundred, 0.999, 100 * time.Millisecond},
		{"p99.9 of 1..1000", thousand, 0.999, 999 * time.Millisecond},
		{"p0.1 of 1..1000", thousand, 0.001, time.Millisecond},
		{"q above 1 is max", durs(1, 5), 1.5, 5 * time.Millisecond},
		{"q below 0 is min", durs(1, 5), -1, time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.q); got != tc.want {
				t.Errorf("Percentile(q=%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	s := durs(10, 1, 4, 3, 2, 9, 8, 7, 6, 5) // unsorted on purpose
	l := Summarize(s)
	if !slices.IsSorted(s) {
		t.Error("Summarize did not sort its samples")
	}
	want := Latency{Count: 10, Mean: 5.5, P50: 5, P90: 9, P99: 10, P999: 10, Max: 10}
	if l != want {
		t.Errorf("Summarize = %+v, want %+v", l, want)
	}
	if got := Summarize(nil); got != (Latency{}) {
		t.Errorf("Summarize(nil) = %+v, want zero", got)
	}
}

func TestCDF(t *testing.T) {
	s := make([]time.Duration, 1000)
	for i := range s {
		s[i] = time.Duration(i+1) * time.Millisecond
	}
	c := CDF(s, 11)
	if c[0] != (CDFPoint{MS: 1, Frac: 0}) {
		t.Errorf("first point %+v, want min at 0", c[0])
	}
	if last := c[len(c)-1]; last != (CDFPoint{MS: 1000, Frac: 1}) {
		t.Errorf("last point %+v, want max at 1", last)
	}
	var has999 bool
	for i, p := range c {
		if i > 0 && (p.Frac <= c[i-1].Frac || p.MS < c[i-1].MS) {
			t.Errorf("point %d %+v not increasing after %+v", i, p, c[i-1])
		}
		if p.Frac == 0.999 {
			has999 = p.MS == 999
		}
	}
	if !has999 {
		t.Errorf("CDF lacks the p99.9 tail point: %+v", c)
	}
	if CDF(nil, 10) != nil {
		t.Error("CDF of nothing should be nil")
	}
}

func TestBalance(t *testing.T) {
	tests := []struct {
		name    string
		samples [][]int64
		want    Imbalance
	}{
		{"empty", nil, Imbalance{}},
		{"idle samples are skipped but averaged", [][]int64{{0, 0}, {2, 2}}, Imbalance{Samples: 1, MeanRatio: 1, P99Ratio: 1, AvgInFlight: []float64{1, 1}}},
		{"all on one of four", [][]int64{{8, 0, 0, 0}}, Imbalance{Samples: 1, MeanRatio: 4, P99Ratio: 4, AvgInFlight: []float64{8, 0, 0, 0}}},
		{"mixed", [][]int64{{3, 1}, {1, 1}}, Imbalance{Samples: 2, MeanRatio: 1.25, P99Ratio: 1.5, AvgInFlight: []float64{2, 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Balance(tc.samples)
			if got.Samples != tc.want.Samples || math.Abs(got.MeanRatio-tc.want.MeanRatio) > 1e-9 ||
				math.Abs(got.P99Ratio-tc.want.P99Ratio) > 1e-9 || !slices.Equal(got.AvgInFlight, tc.want.AvgInFlight) {
				t.Errorf("Balance = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSpread(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		weights []float64
		want    []int
	}{
		{"even", 12, []float64{1, 1, 1}, []int{4, 4, 4}},
		{"60/30/10 of 12", 12, []float64{60, 30, 10}, []int{7, 4, 1}},
		{"60/30/10 of 10", 10, []float64{60, 30, 10}, []int{6, 3, 1}},
		{"remainder to largest fraction", 5, []float64{1, 1, 1}, []int{2, 2, 1}},
		{"zero weights mean even", 4, []float64{0, 0}, []int{2, 2}},
		{"nothing", 0, []float64{1}, []int{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Spread(tc.n, tc.weights)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Spread(%d, %v) = %v, want %v", tc.n, tc.weights, got, tc.want)
			}
		})
	}
}

func TestParsePeerAge(t *testing.T) {
	text := "# HELP balancer_gossip_peer_report_age_seconds Age\n# TYPE balancer_gossip_peer_report_age_seconds gauge\n" +
		"balancer_gossip_peer_report_age_seconds{which=\"newest\"} 0.01\nbalancer_gossip_peer_report_age_seconds{which=\"oldest\"} 0.125\n"
	d, ok := parsePeerAge(text)
	if !ok || d != 125*time.Millisecond {
		t.Errorf("parsePeerAge = %v, %v; want 125ms, true", d, ok)
	}
	if _, ok := parsePeerAge("balancer_gossip_peers 0\n"); ok {
		t.Error("parsePeerAge found an age in a text without one")
	}
}

func TestHTMLSelfContained(t *testing.T) {
	res := &Results{Profile: "uniform", Mode: "closed", Backends: []BackendSpec{{ID: "b1"}, {ID: "b2"}},
		Runs: []Row{{Name: "p2c", Kind: "balancer", CDF: CDF(durs(1, 2, 3, 50), 10),
			Balance:  &Imbalance{MeanRatio: 1.2},
			InFlight: &Series{IntervalMS: 50, Backends: []string{"b1", "b2"}, Values: [][]int64{{1, 2}, {3, 0}}}}}}
	h := HTML(res)
	for _, bad := range []string{"http://", "https://", "<script", "<link", "<img"} {
		if strings.Contains(h, bad) {
			t.Errorf("report contains %q", bad)
		}
	}
	if n := strings.Count(h, "<svg"); n != 3 {
		t.Errorf("report has %d charts, want 3 (CDF, tail, one in-flight)", n)
	}
}
