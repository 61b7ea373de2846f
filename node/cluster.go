package node

import (
	"math"
	"sort"
	"time"

	"github.com/thebalancer/balancer/breaker"
	"github.com/thebalancer/balancer/proxy"
)

// This file turns what the node knows — the applied backend config, its own
// circuits, and its peers' gossiped reports — into the proxy's routes. It is
// pure (the clock comes in as an argument) so that the anti-herding and
// shared-circuit rules can be tested exactly.
//
// Cluster load. For each backend the proxy adds its own live in-flight count
// (exact, and counting this node's picks at once) to Route.Peers, the sum of
// one slot per live peer: slots are summed, never overwritten, so a peer that
// disappears takes exactly its own contribution with it. A peer's report is
// trusted in proportion to its age (after Dahlin, "Interpreting stale load
// information", 2000): up to freshAge it counts as reported; from there to
// maxAge its per-backend differences fade linearly towards the weight-
// proportional share of that peer's total, which is what the report still
// says about the cluster when the detail is too old to mean anything. Age
// here is how out of date a report can be, not when it came: peers send
// within a send interval of any change, and send it twice against a lost
// packet, so a quiet peer's old report is
// still current until its heartbeat is overdue (routeParams.staleness). When
// every peer report is older than maxAge, the node falls back to its local
// counts alone rather than steer by a picture of the past.
//
// Echo. Between reports every node holds the same picture, and an argmin
// over it sends every node's next requests to the backend that looked idle.
// So the node carries each report forward with its own counts: it assumes
// the peer added to its count on a backend as this node did since the report
// arrived (growth only: a fall, summed over peers, would cancel load others
// really reported), scaled by how busy the peer is relative to this node and trusted
// as much as the report. The proxy applies it to the live count
// (pick.Candidate.Echo), so a node's own first pick of the idle backend
// already stands for every node's.
//
// Shared circuits. A peer's open circuit marks the backend down here too, so
// the rest of the cluster stops sending to a failing backend before paying
// for the failures itself; the exception is a backend that answered this
// node successfully after the peer's open was first seen here. Only one node
// runs the half-open trial of a backend: the first by name among the nodes
// whose circuit for it is open, so a sick backend gets one request per sleep
// window from the whole cluster, not one from every node. If its trial
// succeeds its circuit closes, its report says so and the backend comes back
// everywhere. If that node dies, its reports leave the view and the others
// send again (their own circuits open if the backend still fails).
//
// Disputes. The opener can only run its trial with a request to send: a
// node that gets no traffic stays half-open and, on its word alone, the
// backend would stay excluded everywhere however long ago it recovered. Its
// own path may also be the problem, so that its trials keep failing. So a
// remote open is trusted alone for disputeAfter (by default two sleep
// windows: one for the opener's trial, one for its outcome to spread), as
// seen here. After that it no longer makes its peer the prober: this node
// sends one request of its own per sleep window, a probe while its own
// circuit is closed or its own trial while half-open, and a success lets it
// route to the backend again. A fresh open (a peer whose circuit opened
// lately) takes the lead again, so a backend failing for good costs each
// node at most one request per sleep window after the first disputeAfter.

// peerBackend is one backend in a peer's report.
type peerBackend struct {
	inflight int64
	open     bool // circuit open or half-open at that peer
}

// peerReport is a live peer's latest report.
type peerReport struct {
	node     string
	age      time.Duration
	backends map[string]peerBackend
}

// routeParams are the tuning knobs of computeRoutes.
type routeParams struct {
	freshAge     time.Duration // reports younger than this count fully
	maxAge       time.Duration // reports older than this carry no per-backend detail
	sleepWindow  time.Duration // the breaker's sleep window: probe cadence
	disputeAfter time.Duration // a remote open this old no longer keeps this node from trying
	// Gossip's cadence: a peer sends within sendInterval of any change and
	// at least every heartbeat. Zero: reports are taken at face age.
	sendInterval, heartbeat time.Duration
}

// routeState is what computeRoutes remembers between calls; owned by the
// node and only touched under its lock.
type routeState struct {
	remoteOpenSince map[string]map[string]time.Time // peer -> backend -> first seen open here
	lastProbe       map[string]time.Time            // backend -> when this node last offered a probe
}

func newRouteState() *routeState {
	return &routeState{
		remoteOpenSince: make(map[string]map[string]time.Time),
		lastProbe:       make(map[string]time.Time),
	}
}

// routeInputs is everything computeRoutes reads.
type routeInputs struct {
	now      time.Time
	self     string
	backends []proxy.Backend          // sorted by ID
	local    map[string]breaker.State // this node's circuits
	lastOK   map[string]time.Time     // last successful answer through this node
	latency  map[string]float64       // recent mean response time per backend, seconds (absent: unknown)
	peers    []peerReport             // live peers only
	own      []ownSample              // this node's recent counts, oldest first
	params   routeParams
}

// computeRoutes builds the routing table and updates st.
func computeRoutes(in routeInputs, st *routeState) []proxy.Route {
	p := in.params
	var totalWeight float64
	for _, b := range in.backends {
		if b.Weight > 0 && !b.Drain {
			totalWeight += float64(b.Weight)
		}
	}
	// Per-peer trust and totals.
	type peerUse struct {
		age   time.Duration // how out of date the report can be
		trust float64       // 1 fresh .. 0 stale
		total float64
		base  *ownSample // this node's counts when the report arrived
		pace  float64    // the peer's activity relative to this node's then
	}
	uses := make([]peerUse, len(in.peers))
	anyUsable := false
	for i, pr := range in.peers {
		age := p.staleness(pr.age)
		u := peerUse{age: age, trust: trust(age, p.freshAge, p.maxAge)}
		for _, pb := range pr.backends {
			if pb.inflight > 0 {
				u.total += float64(pb.inflight)
			}
		}
		if age <= p.maxAge {
			anyUsable = true
		}
		if u.base = ownAt(in.own, in.now.Add(-age)); u.base != nil {
			// A peer twice as busy as this node probably changed its
			// counts twice as fast; +1 keeps an idle side from making the
			// ratio explode, and the cap bounds what one report can claim.
			u.pace = min((u.total+1)/(float64(u.base.total)+1), maxPace)
		}
		uses[i] = u
	}

	// Remember when each peer's open was first seen; forget what is no
	// longer reported open (or whose peer left the view).
	livePeers := make(map[string]bool, len(in.peers))
	for _, pr := range in.peers {
		livePeers[pr.node] = true
		seen := st.remoteOpenSince[pr.node]
		for id, pb := range pr.backends {
			if pb.open {
				if seen == nil {
					seen = make(map[string]time.Time)
					st.remoteOpenSince[pr.node] = seen
				}
				if _, ok := seen[id]; !ok {
					seen[id] = in.now
				}
			} else if seen != nil {
				delete(seen, id)
			}
		}
		for id := range seen {
			if _, ok := pr.backends[id]; !ok {
				delete(seen, id)
			}
		}
	}
	for peer := range st.remoteOpenSince {
		if !livePeers[peer] {
			delete(st.remoteOpenSince, peer)
		}
	}

	routes := make([]proxy.Route, len(in.backends))
	for i, b := range in.backends {
		r := proxy.Route{Backend: b, Latency: in.latency[b.ID]}
		own := in.local[b.ID]
		// Load from peers.
		if anyUsable {
			share := 0.0
			if totalWeight > 0 && b.Weight > 0 && !b.Drain {
				share = float64(b.Weight) / totalWeight
			}
			for k, pr := range in.peers {
				u := uses[k]
				reported := float64(pr.backends[b.ID].inflight)
				if reported < 0 {
					reported = 0
				}
				t := u.trust
				if lat := in.latency[b.ID]; lat > 0 {
					// A count changes about once per response time: a report
					// several response times old says little about this
					// backend's count now, however young it is in seconds.
					t = math.Min(t, math.Exp(-u.age.Seconds()/lat))
				}
				r.Peers += t*reported + (1-t)*u.total*share
				if u.base != nil {
					r.Echo += t * u.pace
					r.EchoBase += t * u.pace * float64(u.base.inflight[b.ID])
				}
			}
		}
		// Circuits: who has it open, and since when.
		owner := ""
		if own != breaker.Closed {
			owner = in.self
		}
		var oldestRemote time.Time
		remoteOpen := false
		for _, pr := range in.peers {
			since, ok := st.remoteOpenSince[pr.node][b.ID]
			if !ok {
				continue
			}
			if in.now.Sub(since) < p.disputeAfter && (owner == "" || pr.node < owner) {
				owner = pr.node
			}
			if in.lastOK[b.ID].After(since) {
				continue // it answered us after that peer gave up on it
			}
			remoteOpen = true
			if oldestRemote.IsZero() || since.Before(oldestRemote) {
				oldestRemote = since
			}
		}
		switch {
		case own != breaker.Closed:
			r.Down = true
			r.Trial = own == breaker.HalfOpen && owner == in.self
		case remoteOpen:
			r.Down = true
			if in.now.Sub(oldestRemote) >= p.disputeAfter && in.now.Sub(st.lastProbe[b.ID]) >= p.sleepWindow {
				r.Probe = true
				st.lastProbe[b.ID] = in.now
			}
		}
		routes[i] = r
	}
	return routes
}

// staleness is how out of date a report of the given age can be. Peers send
// within sendInterval of any change, so a report that is older but not yet
// overdue for its heartbeat means nothing changed since: it is at most a
// send interval behind, however long ago it came. A report past its
// heartbeat (plus one send interval of slack) is as stale as it is old.
func (p routeParams) staleness(age time.Duration) time.Duration {
	if p.sendInterval <= 0 || age <= p.sendInterval || age > p.heartbeat+p.sendInterval {
		return age
	}
	return p.sendInterval
}

// maxPace caps how much busier than this node a peer is assumed to be when
// its counts are extrapolated from this node's.
const maxPace = 4

// trust is how much of a report's per-backend detail still holds at age.
func trust(age, fresh, max time.Duration) float64 {
	switch {
	case age <= fresh:
		return 1
	case age >= max:
		return 0
	}
	return 1 - float64(age-fresh)/float64(max-fresh)
}

// sortedPeers orders reports by node name so that route computation is
// deterministic (float sums in a fixed order).
func sortedPeers(ps []peerReport) []peerReport {
	sort.Slice(ps, func(i, j int) bool { return ps[i].node < ps[j].node })
	return ps
}
