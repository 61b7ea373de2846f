package node

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/thebalancer/balancer/breaker"
	"github.com/thebalancer/balancer/gossip"
	"github.com/thebalancer/balancer/proxy"
)

// RouteConfig tunes how peers' reports and circuits enter routing.
type RouteConfig struct {
	// Tick is how often the node publishes its counts to gossip (which
	// coalesces them further) and re-weighs peers' reports by age.
	Tick time.Duration
	// FreshAge: peer reports younger than this count as reported.
	FreshAge time.Duration
	// MaxAge: peer reports older than this keep only their total; when
	// every report is older, routing uses local counts alone.
	MaxAge time.Duration
	// DisputeAfter (-breaker-dispute-after) bounds how long a peer's open
	// or half-open circuit keeps a backend from this node on the peer's
	// word alone. Until then only the opener sends the half-open trial, so a
	// sick backend gets one request per sleep window from the whole cluster;
	// after it, this node sends its own single request per sleep window (a
	// probe, or its own circuit's trial), because the opener may be getting
	// no traffic to try with, or its own path may be the problem. Zero means
	// DefaultDisputeFactor times the breaker's sleep window; otherwise it
	// must be at least the sleep window, so the opener always has its turn.
	DisputeAfter time.Duration
}

// DefaultDisputeFactor times the breaker sleep window is the dispute bound
// when DisputeAfter is zero: the opener's trial comes after one window, and
// one more lets its outcome reach every peer by gossip before they try too.
const DefaultDisputeFactor = 2

// DefaultRouteConfig fits gossip's default 50 ms send interval: a report
// is fresh for two send intervals and loses its detail over the next second.
func DefaultRouteConfig() RouteConfig {
	return RouteConfig{
		Tick:     20 * time.Millisecond,
		FreshAge: 100 * time.Millisecond,
		MaxAge:   time.Second,
	}
}

// Validate reports the first bad setting.
func (c RouteConfig) Validate() error {
	switch {
	case c.Tick <= 0:
		return fmt.Errorf("route tick %v: must be positive", c.Tick)
	case c.FreshAge < 0 || c.MaxAge <= c.FreshAge:
		return fmt.Errorf("-peer-max-age %v: must exceed the fresh age %v", c.MaxAge, c.FreshAge)
	case c.DisputeAfter < 0:
		return fmt.Errorf("-breaker-dispute-after %v: must be 0 (%d × -breaker-sleep) or at least -breaker-sleep", c.DisputeAfter, DefaultDisputeFactor)
	}
	return nil
}

// disputeAfter is the bound in force for the breaker's sleep window.
func (c RouteConfig) disputeAfter(sleep time.Duration) time.Duration {
	if c.DisputeAfter == 0 {
		return DefaultDisputeFactor * sleep
	}
	return c.DisputeAfter
}

// params combines the route settings with the breaker's sleep window and
// gossip's send cadence (zero fields mean gossip's defaults, as there).
func (c RouteConfig) params(sleep time.Duration, g gossip.Config) routeParams {
	d := gossip.DefaultConfig()
	if g.SendInterval == 0 {
		g.SendInterval = d.SendInterval
	}
	if g.ReportTTL == 0 {
		g.ReportTTL = d.ReportTTL
	}
	return routeParams{freshAge: c.FreshAge, maxAge: c.MaxAge, sleepWindow: sleep, disputeAfter: c.disputeAfter(sleep),
		sendInterval: g.SendInterval, heartbeat: g.ReportTTL / 3}
}

// syncLoop publishes this node's counts and circuit states, notices
// successes (for the shared-circuit rules), and rebuilds the routes when
// peers' reports change and as they age. It returns when ctx ends.
func (n *Node) syncLoop(ctx context.Context) {
	tick := time.NewTicker(n.cfg.Routes.Tick)
	defer tick.Stop()
	var updates <-chan struct{}
	if n.gossip != nil {
		updates = n.gossip.Subscribe()
	}
	var states []gossip.BackendState
	lastExpire := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-updates:
			n.refreshRoutes()
		case now := <-tick.C:
			if now.Sub(lastExpire) >= time.Second {
				// Idle backend connections left by a load spike go back
				// even when no request comes to find them stale.
				n.proxy.ExpireIdle()
				lastExpire = now
			}
			stats := n.proxy.Stats()
			states = n.publish(states[:0], stats)
			n.noteStats(time.Now(), stats)
			n.window.note(time.Now(), stats)
			if n.gossip != nil {
				// Peer reports age between updates; re-weigh them.
				n.refreshRoutes()
			}
		}
	}
}

// publish hands this node's live state to gossip; buf is reused. stats is
// the tick's one snapshot of the proxy, shared with noteStats.
func (n *Node) publish(buf []gossip.BackendState, stats []proxy.BackendStats) []gossip.BackendState {
	if n.gossip == nil {
		return buf
	}
	states := n.breakers.States()
	for _, s := range stats {
		buf = append(buf, gossip.BackendState{ID: s.ID, InFlight: s.InFlight, Breaker: toGossip(states[s.ID])})
	}
	n.gossip.Publish(buf)
	return buf
}

// noteStats records, per backend, when this node last saw it answer well,
// keeps its own counts for the echo (ownSample), and keeps an EWMA of its response time over the completions of each tick.
// A backend that gets no traffic drifts back toward the average of the
// others (half-life about 10 s), so one slow spell is not held against it
// forever: p2c would otherwise never send it the requests that show it
// recovered.
func (n *Node) noteStats(now time.Time, stats []proxy.BackendStats) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var sum float64
	var known int
	for _, s := range stats {
		if l := n.latency[s.ID]; l > 0 {
			sum += l
			known++
		}
	}
	n.own = appendOwn(n.own, now, stats, n.cfg.Routes.MaxAge+n.cfg.Routes.Tick)
	drift := float64(n.cfg.Routes.Tick) / float64(14*time.Second) // ≈ 10 s half-life
	for _, s := range stats {
		ok := s.Requests - s.Failures
		if ok > n.okCount[s.ID] {
			n.lastOK[s.ID] = now
		}
		n.okCount[s.ID] = ok
		prev := n.latSeen[s.ID]
		count, total := s.Latency.Count(), s.Latency.Sum
		n.latSeen[s.ID] = latencyMark{count: count, sum: total}
		switch {
		case count > prev.count:
			mean := (total - prev.sum).Seconds() / float64(count-prev.count)
			if l := n.latency[s.ID]; l > 0 {
				n.latency[s.ID] = l + 0.2*(mean-l)
			} else {
				n.latency[s.ID] = mean
			}
		case known > 0 && n.latency[s.ID] > 0:
			avg := sum / float64(known)
			n.latency[s.ID] += (avg - n.latency[s.ID]) * drift
		}
	}
}

// latencyMark is a backend's histogram totals at the previous tick.
type latencyMark struct {
	count uint64
	sum   time.Duration
}

func toGossip(s breaker.State) gossip.BreakerState {
	switch s {
	case breaker.Open:
		return gossip.Open
	case breaker.HalfOpen:
		return gossip.HalfOpen
	}
	return gossip.Closed
}

// peerReports converts gossip's view into route inputs.
func peerReports(ps []gossip.PeerReport, now time.Time) []peerReport {
	out := make([]peerReport, 0, len(ps))
	for _, p := range ps {
		pr := peerReport{node: p.Node, age: now.Sub(p.Received), backends: make(map[string]peerBackend, len(p.Backends))}
		for _, b := range p.Backends {
			pr.backends[b.ID] = peerBackend{inflight: b.InFlight, open: b.Breaker != gossip.Closed}
		}
		out = append(out, pr)
	}
	return sortedPeers(out)
}

// ownSample is this node's in-flight counts at one tick. Route computation
// compares the counts now with those when each peer's report arrived: the
// difference is what the echo extrapolates.
type ownSample struct {
	at       time.Time
	inflight map[string]int64
	total    int64
}

// appendOwn adds the tick's counts to h and drops samples no report young
// enough to matter can refer to (keeping one older sample as the floor).
func appendOwn(h []ownSample, now time.Time, stats []proxy.BackendStats, keep time.Duration) []ownSample {
	s := ownSample{at: now, inflight: make(map[string]int64, len(stats))}
	for _, b := range stats {
		n := max(b.InFlight, 0)
		s.inflight[b.ID] = n
		s.total += n
	}
	h = append(h, s)
	drop := 0
	for drop+1 < len(h) && now.Sub(h[drop+1].at) > keep {
		drop++
	}
	if drop > 0 {
		h = append(h[:0], h[drop:]...)
	}
	return h
}

// ownAt is the latest sample taken at or before t; the oldest when every
// sample is younger (a report older than the history is barely trusted).
func ownAt(h []ownSample, t time.Time) *ownSample {
	if len(h) == 0 {
		return nil
	}
	i := sort.Search(len(h), func(i int) bool { return h[i].at.After(t) })
	if i == 0 {
		return &h[0]
	}
	return &h[i-1]
}
