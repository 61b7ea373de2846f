package proxy

import (
	"testing"
	"time"
)

func TestHistogramQuantileOfAWindow(t *testing.T) {
	var h Histogram
	for range 100 {
		h.Observe(300 * time.Microsecond) // bucket (0, 0.5ms]
	}
	before := h.Snapshot()
	// The window: 90 fast requests and 10 slow ones in (25ms, 50ms].
	for range 90 {
		h.Observe(700 * time.Microsecond) // (0.5ms, 1ms]
	}
	for range 10 {
		h.Observe(40 * time.Millisecond)
	}
	w := h.Snapshot().Sub(before)
	if w.Count() != 100 {
		t.Fatalf("window holds %d observations, want 100", w.Count())
	}
	cases := []struct {
		name string
		q    float64
		want time.Duration
	}{
		{"median inside the fast bucket", 0.5, 500*time.Microsecond + 500*time.Microsecond*50/90},
		{"p90 at the fast bucket's top", 0.9, time.Millisecond},
		{"p99 inside the slow bucket", 0.99, 25*time.Millisecond + 25*time.Millisecond*9/10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := w.Quantile(c.q); got < c.want-time.Microsecond || got > c.want+time.Microsecond {
				t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
			}
		})
	}
	if w.Sum != 90*700*time.Microsecond+10*40*time.Millisecond {
		t.Errorf("window sum %v", w.Sum)
	}
}

func TestHistogramQuantileEdges(t *testing.T) {
	var empty HistogramSnapshot
	if got := empty.Quantile(0.99); got != 0 {
		t.Errorf("empty histogram p99 = %v, want 0", got)
	}
	var h Histogram
	h.Observe(time.Minute) // beyond the last bound
	if got, want := h.Snapshot().Quantile(0.99), 10*time.Second; got != want {
		t.Errorf("p99 past the last bound = %v, want the bound %v", got, want)
	}
	// A torn snapshot (later < earlier) must not wrap around.
	if d := empty.Sub(h.Snapshot()); d.Count() != 0 || d.Sum != 0 {
		t.Errorf("backwards window %+v, want empty", d)
	}
}
