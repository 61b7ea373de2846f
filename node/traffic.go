package node

import (
	"sync"
	"time"

	"github.com/thebalancer/balancer/proxy"
)

// trafficWindow turns the proxy's ever-growing counters into a recent
// request rate and latency quantile per backend, for the status page and
// `balancer status`. Prometheus does this from /metrics on its own; a human
// looking at one node has no Prometheus, so the node keeps a short history
// of snapshots (taken on the sync tick, cold path) and diffs the newest
// against one about a window old.
type trafficWindow struct {
	every  time.Duration // least spacing of kept samples
	window time.Duration // how far back rates look

	mu      sync.Mutex      // guards samples
	samples []trafficSample // oldest first, spaced at least every apart
}

type trafficSample struct {
	at    time.Time
	stats map[string]proxy.BackendStats
}

// Traffic is one backend's recent traffic through this node.
type Traffic struct {
	Rate     float64                 // completed requests per second
	ErrRate  float64                 // failed requests per second
	P99      time.Duration           // 0 when nothing completed in the window
	Latency  proxy.HistogramSnapshot // the window's requests, for merging across nodes
	Requests uint64                  // since start
	Failures uint64
}

func newTrafficWindow(every, window time.Duration) *trafficWindow {
	return &trafficWindow{every: every, window: window}
}

// note keeps stats as a sample unless the last one is younger than every.
func (w *trafficWindow) note(now time.Time, stats []proxy.BackendStats) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if k := len(w.samples); k > 0 && now.Sub(w.samples[k-1].at) < w.every {
		return
	}
	m := make(map[string]proxy.BackendStats, len(stats))
	for _, s := range stats {
		m[s.ID] = s
	}
	w.samples = append(w.samples, trafficSample{at: now, stats: m})
	// Keep one sample at or beyond the window's start as the base.
	drop := 0
	for drop+1 < len(w.samples) && now.Sub(w.samples[drop+1].at) >= w.window {
		drop++
	}
	w.samples = append(w.samples[:0], w.samples[drop:]...)
}

// traffic diffs the current stats against the oldest kept sample. A backend
// the base does not know (new, or re-added) is measured from zero over the
// same span, which at worst overstates its first window.
func (w *trafficWindow) traffic(now time.Time, cur []proxy.BackendStats) map[string]Traffic {
	w.mu.Lock()
	var base trafficSample
	if len(w.samples) > 0 {
		base = w.samples[0]
	}
	w.mu.Unlock()
	out := make(map[string]Traffic, len(cur))
	span := now.Sub(base.at).Seconds()
	for _, s := range cur {
		t := Traffic{Requests: s.Requests, Failures: s.Failures}
		if base.stats != nil && span > 0 {
			b := base.stats[s.ID]
			if s.Requests >= b.Requests {
				t.Rate = float64(s.Requests-b.Requests) / span
			}
			if s.Failures >= b.Failures {
				t.ErrRate = float64(s.Failures-b.Failures) / span
			}
			t.Latency = s.Latency.Sub(b.Latency)
			t.P99 = t.Latency.Quantile(0.99)
		}
		out[s.ID] = t
	}
	return out
}
