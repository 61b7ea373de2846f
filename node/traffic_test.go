package node

import (
	"math"
	"testing"
	"time"

	"github.com/thebalancer/balancer/proxy"
)

func TestTrafficWindowRateAndP99(t *testing.T) {
	w := newTrafficWindow(time.Second, 10*time.Second)
	t0 := time.Unix(1000, 0)
	var fast, slow proxy.Histogram
	stats := func(reqs, fails uint64) []proxy.BackendStats {
		return []proxy.BackendStats{{ID: "a", Requests: reqs, Failures: fails, Latency: fast.Snapshot()}, {ID: "b", Latency: slow.Snapshot()}}
	}
	for range 100 {
		fast.Observe(time.Millisecond)
	}
	w.note(t0, stats(100, 0))
	// Samples closer than a second apart are not kept: the base stays t0.
	w.note(t0.Add(100*time.Millisecond), stats(5000, 0))
	for range 200 {
		fast.Observe(20 * time.Millisecond) // the window's requests are all slow
	}
	now := t0.Add(4 * time.Second)
	got := w.traffic(now, stats(300, 40))
	a := got["a"]
	if math.Abs(a.Rate-50) > 1e-9 || math.Abs(a.ErrRate-10) > 1e-9 {
		t.Errorf("a: rate %v/s errors %v/s over 4s with 200 requests, 40 failed; want 50 and 10", a.Rate, a.ErrRate)
	}
	if a.P99 <= 10*time.Millisecond || a.P99 > 25*time.Millisecond {
		t.Errorf("a: p99 %v; the window's requests took 20ms, so p99 lies in (10ms, 25ms]", a.P99)
	}
	if a.Requests != 300 || a.Failures != 40 {
		t.Errorf("a: totals %d/%d", a.Requests, a.Failures)
	}
	if b := got["b"]; b.Rate != 0 || b.P99 != 0 {
		t.Errorf("b without traffic: %+v", b)
	}
}

func TestTrafficWindowSlides(t *testing.T) {
	w := newTrafficWindow(time.Second, 5*time.Second)
	t0 := time.Unix(1000, 0)
	for i := range 20 {
		// 10 requests per second, steadily.
		w.note(t0.Add(time.Duration(i)*time.Second), []proxy.BackendStats{{ID: "a", Requests: uint64(10 * i)}})
	}
	if n := len(w.samples); n > 7 {
		t.Errorf("%d samples kept for a 5s window at 1s spacing", n)
	}
	// Traffic stops: after a full window the rate reads 0, not a long average.
	now := t0.Add(30 * time.Second)
	for i := 20; i <= 30; i++ {
		w.note(t0.Add(time.Duration(i)*time.Second), []proxy.BackendStats{{ID: "a", Requests: 190}})
	}
	if r := w.traffic(now, []proxy.BackendStats{{ID: "a", Requests: 190}})["a"].Rate; r != 0 {
		t.Errorf("rate %v/s after traffic stopped a window ago, want 0", r)
	}
	// Without any sample yet there is no rate, but the totals are there.
	fresh := newTrafficWindow(time.Second, 5*time.Second)
	if tr := fresh.traffic(now, []proxy.BackendStats{{ID: "a", Requests: 7}})["a"]; tr.Rate != 0 || tr.Requests != 7 {
		t.Errorf("fresh window: %+v", tr)
	}
}

func TestLatencyQuantileOverMergedBuckets(t *testing.T) {
	b := make([]uint64, len(proxy.LatencyBuckets())+1)
	b[3] = 100 // 2.5–5 ms
	got, ok := statusView{}.LatencyQuantileMS(b, 0.99)
	if !ok || got < 4.9 || got > 5 {
		t.Errorf("p99 of 100 requests in (2.5, 5] ms: %v %v", got, ok)
	}
	if _, ok := (statusView{}).LatencyQuantileMS(b[:5], 0.99); ok {
		t.Error("buckets of another layout were read")
	}
}
