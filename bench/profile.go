package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// BackendSpec is one synthetic backend of a profile.
type BackendSpec struct {
	ID      string        `json:"id"`
	Delay   time.Duration `json:"-"`
	Jitter  time.Duration `json:"-"`
	Workers int           `json:"workers"`
	Weight  int32         `json:"weight"`
	// DelayMS and JitterMS mirror Delay and Jitter for results.json.
	DelayMS  float64 `json:"delay_ms"`
	JitterMS float64 `json:"jitter_ms"`
	Address  string  `json:"address"`
}

// Profile is a named load scenario: the backends' speeds and weights, how
// clients spread over the balancer nodes, and what each request asks for.
type Profile struct {
	Name string
	Help string
	// Backends builds m backend specs.
	Backends func(m int) []BackendSpec
	// NodeSpread returns the share of clients (or rate) per node for k nodes.
	NodeSpread func(k int) []float64
	// Concurrency is the default number of closed-loop clients for m backends.
	Concurrency func(m int) int
	// Sleep, when set, makes each request hold its backend for a duration
	// drawn from [SleepMin, SleepMax] (sent as ?sleep=).
	SleepMin, SleepMax time.Duration
	// KillAt, when > 0, closes the last backend (like a crash) at this
	// fraction of the measured run.
	KillAt float64
}

func evenSpread(k int) []float64 { return slices.Repeat([]float64{1}, k) }

// unevenSpread gives 60/30/10% over three nodes; for other k, halving
// shares (k=2: 67/33), so one node's local view is a small part of the load.
func unevenSpread(k int) []float64 {
	if k == 3 {
		return []float64{60, 30, 10}
	}
	w := make([]float64, k)
	v := 1.0
	for i := range w {
		w[i] = v
		v /= 2
	}
	return w
}

func uniformBackends(delay time.Duration, workers int) func(int) []BackendSpec {
	return func(m int) []BackendSpec {
		out := make([]BackendSpec, m)
		for i := range out {
			out[i] = BackendSpec{ID: fmt.Sprintf("b%d", i+1), Delay: delay, Jitter: delay / 5, Workers: workers, Weight: 1}
		}
		return out
	}
}

// Profiles returns every profile, in the order -h lists them.
func Profiles() []Profile {
	return []Profile{
		{
			Name:        "uniform",
			Help:        "all backends equally fast: 5ms (+0-1ms jitter), 8 workers, weight 1; clients even over nodes. Measures proxy overhead against direct.",
			Backends:    uniformBackends(5*time.Millisecond, 8),
			NodeSpread:  evenSpread,
			Concurrency: func(m int) int { return 8 * m },
		},
		{
			Name: "one-slow",
			Help: "like uniform, but the first backend is 10x slower (50ms); all weights 1, so only load-aware algorithms avoid piling onto it.",
			Backends: func(m int) []BackendSpec {
				bs := uniformBackends(5*time.Millisecond, 8)(m)
				bs[0].Delay, bs[0].Jitter = 50*time.Millisecond, 10*time.Millisecond
				return bs
			},
			NodeSpread:  evenSpread,
			Concurrency: func(m int) int { return 6 * m },
		},
		{
			Name: "heterogeneous",
			Help: "a spread of speeds (2, 5, 10, 20ms, repeating) with matching weights (10, 4, 2, 1): capacity-proportional weights.",
			Backends: func(m int) []BackendSpec {
				delays := []time.Duration{2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond}
				weights := []int32{10, 4, 2, 1}
				out := make([]BackendSpec, m)
				for i := range out {
					d := delays[i%len(delays)]
					out[i] = BackendSpec{ID: fmt.Sprintf("b%d", i+1), Delay: d, Jitter: d / 5, Workers: 8, Weight: weights[i%len(weights)]}
				}
				return out
			},
			NodeSpread:  evenSpread,
			Concurrency: func(m int) int { return 6 * m },
		},
		{
			Name:        "long-requests",
			Help:        "each request holds its backend 0.5-2s (?sleep=, same sequence for every algorithm), 2 workers per backend, few clients (as many as workers, so any imbalance queues), spread 60/30/10% over the nodes: local counts say little about the cluster.",
			Backends:    uniformBackends(0, 2),
			NodeSpread:  unevenSpread,
			Concurrency: func(m int) int { return 2 * m },
			SleepMin:    500 * time.Millisecond,
			SleepMax:    2 * time.Second,
		},
		{
			Name:        "failing",
			Help:        "like uniform, but the last backend crashes (Close: listener and connections gone) a third into each run; it is restarted between runs.",
			Backends:    uniformBackends(5*time.Millisecond, 8),
			NodeSpread:  evenSpread,
			Concurrency: func(m int) int { return 8 * m },
			KillAt:      1.0 / 3,
		},
	}
}

// ProfileByName finds a profile.
func ProfileByName(name string) (Profile, bool) {
	for _, p := range Profiles() {
		if p.Name == name {
			return p, true
		}
	}
	return Profile{}, false
}

// ProfileNames lists the profile names.
func ProfileNames() []string {
	var out []string
	for _, p := range Profiles() {
		out = append(out, p.Name)
	}
	return out
}

// ProfileHelp describes every profile, one per paragraph, for -h.
func ProfileHelp() string {
	var b strings.Builder
	for _, p := range Profiles() {
		fmt.Fprintf(&b, "  %-14s %s\n", p.Name, p.Help)
	}
	return b.String()
}
