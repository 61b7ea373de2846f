package node

import (
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/thebalancer/balancer/gossip"
	"github.com/thebalancer/balancer/proxy"

	"github.com/thebalancer/balancer/node/admin"
)

func (n *Node) adminSources() admin.Sources {
	return admin.Sources{
		Node:    n.cfg.Name,
		Load:    loadView{n},
		Config:  configView{n},
		Members: membersView{n},
		Writer:  n,
		Status:  statusView{n},
		Token:   n.cfg.AdminToken,
		Ready:   n.ready,
		Metrics: promhttpHandler(n.registry),
		Pprof:   n.cfg.Pprof,
		// Forwarding to an HTTPS leader: trust and identity from -tls-*.
		ForwardTLS: n.forwardTLS(),
	}
}

// forwardTLS is the admin API's source of forwarding configs: nil
// without -tls-cert, so that plain-HTTP nodes forward as before.
func (n *Node) forwardTLS() func() *tls.Config {
	if n.tls.admin.Load() == nil {
		return nil
	}
	return n.tls.forward
}

// ready is the readiness check: a node that is draining or has nothing to
// route to should be taken out of an upstream load balancer's rotation.
func (n *Node) ready() error {
	if n.draining.Load() {
		return errors.New("shutting down")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.backends) == 0 {
		return errors.New("no backends configured")
	}
	routable := false
	for _, b := range n.backends {
		routable = routable || (!b.Drain && b.Weight > 0)
	}
	if !routable {
		return errors.New("every backend is drained or has weight 0: nothing to route to")
	}
	if id, _ := n.store.Leader(); id == "" {
		return errors.New("no raft leader: routing on the last applied config, writes refused")
	}
	return nil
}

type loadView struct{ n *Node }

func (v loadView) Load() admin.Load {
	n := v.n
	states := n.breakers.States()
	var peers []gossip.PeerReport
	if n.gossip != nil {
		peers = n.gossip.Peers()
	}
	now := time.Now()
	out := admin.Load{Node: n.cfg.Name, Backends: []admin.BackendLoad{}}
	for _, s := range n.proxy.Stats() {
		st := states[s.ID] // a backend without a circuit yet reads as Closed, the zero State
		bl := admin.BackendLoad{
			ID:       s.ID,
			Local:    s.InFlight,
			Cluster:  s.InFlight,
			Peers:    []admin.PeerLoad{},
			Breaker:  map[string]string{n.cfg.Name: st.String()},
			Requests: s.Requests,
			Failures: s.Failures,
		}
		for _, p := range peers {
			for _, b := range p.Backends {
				if b.ID != s.ID {
					continue
				}
				bl.Peers = append(bl.Peers, admin.PeerLoad{Node: p.Node, Count: b.InFlight, AgeMS: now.Sub(p.Received).Milliseconds()})
				if b.InFlight > 0 {
					bl.Cluster += b.InFlight
				}
				bl.Breaker[p.Node] = b.Breaker.String()
			}
		}
		out.Backends = append(out.Backends, bl)
	}
	return out
}

type membersView struct{ n *Node }

func (v membersView) Members() admin.Members {
	n := v.n
	leader, _ := n.store.Leader()
	roles := map[string]string{}
	if servers, err := n.store.Servers(); err == nil {
		for _, s := range servers {
			roles[s.ID] = "nonvoter"
			if s.Voter {
				roles[s.ID] = "voter"
			}
		}
	}
	self := admin.Member{Name: n.cfg.Name, GossipAddr: n.GossipAddr(), AdminAddr: n.adminAdvertised(), Status: "alive",
		RaftRole: roles[n.cfg.Name], Leader: leader == n.cfg.Name, AppliedIndex: n.appliedIndex()}
	if n.gossip == nil {
		return admin.Members{Members: []admin.Member{self}}
	}
	ms := n.gossip.Members()
	out := admin.Members{Members: make([]admin.Member, 0, len(ms))}
	for _, m := range ms {
		if m.Name == n.cfg.Name {
			out.Members = append(out.Members, self)
			continue
		}
		applied, _ := strconv.ParseUint(m.Meta[metaApplied], 10, 64)
		out.Members = append(out.Members, admin.Member{Name: m.Name, GossipAddr: m.Addr, AdminAddr: adminAddr(m.Meta[metaAdmin]),
			Status: m.State, RaftRole: roles[m.Name], Leader: leader == m.Name, AppliedIndex: applied})
	}
	return out
}

type configView struct{ n *Node }

func (v configView) Config() admin.Config {
	n := v.n
	if cfg := n.routed.Load(); cfg != nil {
		return admin.ConfigOf(*cfg)
	}
	// Nothing committed yet: the static seed this node routes on.
	n.mu.Lock()
	defer n.mu.Unlock()
	out := admin.Config{Index: 0, Backends: make([]admin.Backend, 0, len(n.backends))}
	for _, b := range n.backends {
		out.Backends = append(out.Backends, admin.Backend{ID: b.ID, Address: b.Address, Weight: b.Weight, Drain: b.Drain, Source: "static"})
	}
	return out
}

var _ admin.ConfigWriter = (*Node)(nil)

type statusView struct{ n *Node }

func (v statusView) NodeStatus() admin.NodeStatus {
	n := v.n
	rs := n.store.Stats()
	out := admin.NodeStatus{
		Raft: admin.RaftStatus{State: rs.State, Term: rs.Term, CommitIndex: rs.CommitIndex,
			AppliedIndex: rs.AppliedIndex, LastContactMS: rs.LastContact.Milliseconds()},
		Traffic: map[string]admin.Traffic{},
	}
	if rs.LastContact < 0 {
		out.Raft.LastContactMS = -1
	}
	for id, t := range n.window.traffic(time.Now(), n.proxy.Stats()) {
		at := admin.Traffic{Rate: t.Rate, ErrorRate: t.ErrRate, P99MS: float64(t.P99) / float64(time.Millisecond),
			Requests: t.Requests, Failures: t.Failures}
		if t.Latency.Count() > 0 {
			at.LatencyBuckets = append([]uint64(nil), t.Latency.Counts[:]...)
		}
		out.Traffic[id] = at
	}
	return out
}

func (statusView) LatencyQuantileMS(buckets []uint64, q float64) (float64, bool) {
	var h proxy.HistogramSnapshot
	if len(buckets) != len(h.Counts) {
		return 0, false
	}
	copy(h.Counts[:], buckets)
	return float64(h.Quantile(q)) / float64(time.Millisecond), true
}

// adminAddr passes on a peer's advertised admin address only in the forms
// nodes advertise (HOST:PORT, or http(s)://HOST:PORT): it comes from gossip,
// and clients, the status page among them, dial and link to it.
func adminAddr(s string) string {
	hostport := s
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		if scheme != "http" && scheme != "https" {
			return ""
		}
		hostport = rest
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host == "" || strings.ContainsAny(host, "/?#@ ") {
		return ""
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return ""
	}
	return s
}
