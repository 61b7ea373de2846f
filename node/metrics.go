package node

import (
	"maps"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/thebalancer/balancer/breaker"
	"github.com/thebalancer/balancer/gossip"
	"github.com/thebalancer/balancer/proxy"
)

// collector turns the proxy's, breakers', gossip's and raft's own counters
// into Prometheus metrics at scrape time, so the request path never touches
// the metrics library. Every metric is this node's view: sum over nodes in
// PromQL for the cluster (except the cluster in-flight gauge, which already
// is one node's estimate of the whole cluster).
type collector struct {
	n         *Node
	requests  *prometheus.Desc
	failures  *prometheus.Desc
	latency   *prometheus.Desc
	inflight  *prometheus.Desc
	clusterIF *prometheus.Desc
	weight    *prometheus.Desc
	drain     *prometheus.Desc
	breaker   *prometheus.Desc
	trans     *prometheus.Desc
	rejected  *prometheus.Desc
	connsOpen *prometheus.Desc
	connsMax  *prometheus.Desc
	connsRef  *prometheus.Desc
	peerAge   *prometheus.Desc
	peers     *prometheus.Desc
	gossipMsg *prometheus.Desc
	gossipB   *prometheus.Desc
	gossipBad *prometheus.Desc
	members   *prometheus.Desc
	raftState *prometheus.Desc
	raftTerm  *prometheus.Desc
	raftCommt *prometheus.Desc
	raftAppl  *prometheus.Desc
	raftLast  *prometheus.Desc
	cfgIndex  *prometheus.Desc
	cfgChange *prometheus.Desc
	cfgReject *prometheus.Desc
	tlsExpiry *prometheus.Desc
	bucketsUp []float64
}

func newCollector(n *Node) *collector {
	labels := []string{"backend"}
	return &collector{
		n:         n,
		requests:  prometheus.NewDesc("balancer_backend_requests_total", "Requests (or TCP connections) this node completed to the backend, failed ones included.", labels, nil),
		failures:  prometheus.NewDesc("balancer_backend_failures_total", "Requests to the backend that failed, by reason: connect, timeout, transport, status_5xx, broken_body.", []string{"backend", "reason"}, nil),
		latency:   prometheus.NewDesc("balancer_backend_request_duration_seconds", "Time from sending a request to the backend to the end of its response.", labels, nil),
		inflight:  prometheus.NewDesc("balancer_backend_inflight", "Requests this node has in flight to the backend.", labels, nil),
		clusterIF: prometheus.NewDesc("balancer_backend_cluster_inflight", "Requests in flight to the backend from the whole cluster, as this node sees it: its own count plus peers' latest reports.", labels, nil),
		weight:    prometheus.NewDesc("balancer_backend_weight", "The backend's weight in the config this node applies.", labels, nil),
		drain:     prometheus.NewDesc("balancer_backend_draining", "1 when the backend is drained (no new traffic) in the config this node applies.", labels, nil),
		breaker:   prometheus.NewDesc("balancer_backend_circuit_state", "Circuit state of the backend on this node: 1 for the current state.", []string{"backend", "state"}, nil),
		trans:     prometheus.NewDesc("balancer_circuit_transitions_total", "Circuit state changes on this node.", []string{"backend", "from", "to"}, nil),
		rejected:  prometheus.NewDesc("balancer_rejected_total", "Requests answered 503 (or TCP connections closed) because no backend could take them.", nil, nil),
		connsOpen: prometheus.NewDesc("balancer_client_connections", "Client connections open on the traffic listener.", nil, nil),
		connsMax:  prometheus.NewDesc("balancer_client_connections_limit", "The traffic listener's connection limit (-max-conns; 0: none).", nil, nil),
		connsRef:  prometheus.NewDesc("balancer_client_connections_refused_total", "Client connections refused at -max-conns: answered 503 and closed (http) or closed at once (tcp).", nil, nil),
		peerAge:   prometheus.NewDesc("balancer_gossip_peer_report_age_seconds", "Age of the oldest and newest live peer report in this node's view: how stale its cluster load is.", []string{"which"}, nil),
		peers:     prometheus.NewDesc("balancer_gossip_peers", "Peers whose reports are in this node's view.", nil, nil),
		gossipMsg: prometheus.NewDesc("balancer_gossip_messages_total", "Gossip report messages sent and received.", []string{"direction"}, nil),
		gossipB:   prometheus.NewDesc("balancer_gossip_bytes_total", "Gossip report payload bytes sent and received.", []string{"direction"}, nil),
		gossipBad: prometheus.NewDesc("balancer_gossip_dropped_total", "Gossip messages dropped: malformed, stale, rejected, or from a member of another cluster (other_cluster).", []string{"reason"}, nil),
		members:   prometheus.NewDesc("balancer_members", "Cluster members this node knows, by gossip state.", []string{"state"}, nil),
		raftState: prometheus.NewDesc("balancer_raft_state", "This node's raft role: 1 for the current one.", []string{"state"}, nil),
		raftTerm:  prometheus.NewDesc("balancer_raft_term", "This node's current raft term.", nil, nil),
		raftCommt: prometheus.NewDesc("balancer_raft_commit_index", "The highest raft log index this node knows to be committed.", nil, nil),
		raftAppl:  prometheus.NewDesc("balancer_raft_applied_index", "The highest raft log index this node has applied.", nil, nil),
		raftLast:  prometheus.NewDesc("balancer_raft_last_contact_seconds", "Time since this node last heard from the raft leader (0 on the leader; absent until first contact).", nil, nil),
		cfgIndex:  prometheus.NewDesc("balancer_config_index", "Index of the replicated config this node applies (0: still on its static seed).", nil, nil),
		cfgChange: prometheus.NewDesc("balancer_config_changes_total", "Committed config changes this node applied since it started.", nil, nil),
		cfgReject: prometheus.NewDesc("balancer_config_rejected_total", "Committed entries this node could not apply (they changed nothing).", nil, nil),
		tlsExpiry: prometheus.NewDesc("balancer_tls_cert_expiry_timestamp_seconds", "When the certificate this node presents expires (NotAfter, Unix seconds), by listener: admin or raft. Absent without TLS; follows SIGHUP reloads.", []string{"listener"}, nil),
		bucketsUp: proxy.LatencyBuckets(),
	}
}

// Describe lists every metric up front rather than through Collect, since
// some (gossip's, raft's last contact) are absent from some scrapes.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.failures, c.latency, c.inflight, c.clusterIF, c.weight, c.drain,
		c.breaker, c.trans, c.rejected, c.peerAge, c.peers, c.gossipMsg, c.gossipB, c.gossipBad, c.members,
		c.raftState, c.raftTerm, c.raftCommt, c.raftAppl, c.raftLast, c.cfgIndex, c.cfgChange, c.cfgReject,
		c.connsOpen, c.connsMax, c.connsRef, c.tlsExpiry} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.collectBackends(ch)
	c.collectCluster(ch)
	if a := c.n.tls.admin.Load(); a != nil {
		ch <- prometheus.MustNewConstMetric(c.tlsExpiry, prometheus.GaugeValue, float64(a.leaf.NotAfter.Unix()), "admin")
	}
	if r := c.n.tls.raft.Load(); r != nil {
		ch <- prometheus.MustNewConstMetric(c.tlsExpiry, prometheus.GaugeValue, float64(r.leaf.NotAfter.Unix()), "raft")
	}
}

func (c *collector) collectBackends(ch chan<- prometheus.Metric) {
	n := c.n
	states := n.breakers.States()
	load := loadView{n}.Load()
	cluster := make(map[string]int64, len(load.Backends))
	for _, b := range load.Backends {
		cluster[b.ID] = b.Cluster
	}
	for _, s := range n.proxy.Stats() {
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(s.Requests), s.ID)
		for _, r := range proxy.FailureReasons() {
			ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(s.FailuresBy[r]), s.ID, r.String())
		}
		ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(s.InFlight), s.ID)
		ch <- prometheus.MustNewConstMetric(c.clusterIF, prometheus.GaugeValue, float64(cluster[s.ID]), s.ID)
		buckets := make(map[float64]uint64, len(c.bucketsUp))
		var cum uint64
		for i, ub := range c.bucketsUp {
			cum += s.Latency.Counts[i]
			buckets[ub] = cum
		}
		ch <- prometheus.MustNewConstHistogram(c.latency, s.Latency.Count(), s.Latency.Sum.Seconds(), buckets, s.ID)
		cur := states[s.ID] // no circuit yet reads as Closed, the zero State
		for _, st := range []breaker.State{breaker.Closed, breaker.Open, breaker.HalfOpen} {
			ch <- prometheus.MustNewConstMetric(c.breaker, prometheus.GaugeValue, boolValue(st == cur), s.ID, st.String())
		}
	}
	n.mu.Lock()
	applied := append([]proxy.Backend(nil), n.backends...)
	n.mu.Unlock()
	for _, b := range applied {
		ch <- prometheus.MustNewConstMetric(c.weight, prometheus.GaugeValue, float64(b.Weight), b.ID)
		ch <- prometheus.MustNewConstMetric(c.drain, prometheus.GaugeValue, boolValue(b.Drain), b.ID)
	}
	n.transMu.Lock()
	trans := maps.Clone(n.transitions)
	n.transMu.Unlock()
	// Every backend's usual transitions exist from the start at 0, so that
	// increase() and alerts see the first opening instead of a new series.
	for _, b := range applied {
		for _, ft := range [][2]breaker.State{{breaker.Closed, breaker.Open}, {breaker.Open, breaker.HalfOpen},
			{breaker.HalfOpen, breaker.Closed}, {breaker.HalfOpen, breaker.Open}} {
			if k := (transitionKey{b.ID, ft[0], ft[1]}); trans[k] == 0 {
				trans[k] = 0
			}
		}
	}
	for k, v := range trans {
		ch <- prometheus.MustNewConstMetric(c.trans, prometheus.CounterValue, float64(v), k.backend, k.from.String(), k.to.String())
	}
	ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(n.proxy.Rejected()))
	ch <- prometheus.MustNewConstMetric(c.connsOpen, prometheus.GaugeValue, float64(n.proxy.ConnsOpen()))
	ch <- prometheus.MustNewConstMetric(c.connsMax, prometheus.GaugeValue, float64(n.cfg.Proxy.MaxConns))
	ch <- prometheus.MustNewConstMetric(c.connsRef, prometheus.CounterValue, float64(n.proxy.ConnsRefused()))
}

func (c *collector) collectCluster(ch chan<- prometheus.Metric) {
	n := c.n
	byState := map[string]int{gossip.StateAlive: 0, gossip.StateSuspect: 0, gossip.StateDead: 0, gossip.StateLeft: 0}
	for _, m := range (membersView{n}).Members().Members {
		byState[m.Status]++
	}
	for st, k := range byState {
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(k), st)
	}
	rs := n.store.Stats()
	for _, st := range []string{"leader", "follower", "candidate", "shutdown"} {
		ch <- prometheus.MustNewConstMetric(c.raftState, prometheus.GaugeValue, boolValue(rs.State == st), st)
	}
	ch <- prometheus.MustNewConstMetric(c.raftTerm, prometheus.GaugeValue, float64(rs.Term))
	ch <- prometheus.MustNewConstMetric(c.raftCommt, prometheus.GaugeValue, float64(rs.CommitIndex))
	ch <- prometheus.MustNewConstMetric(c.raftAppl, prometheus.GaugeValue, float64(rs.AppliedIndex))
	if rs.LastContact >= 0 {
		ch <- prometheus.MustNewConstMetric(c.raftLast, prometheus.GaugeValue, rs.LastContact.Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.cfgIndex, prometheus.GaugeValue, float64(n.store.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(c.cfgChange, prometheus.CounterValue, float64(rs.ConfigChanges))
	ch <- prometheus.MustNewConstMetric(c.cfgReject, prometheus.CounterValue, float64(rs.ConfigRejected))
	if g := n.gossip; g != nil {
		st := g.Stats()
		ch <- prometheus.MustNewConstMetric(c.peerAge, prometheus.GaugeValue, st.OldestReportAge.Seconds(), "oldest")
		ch <- prometheus.MustNewConstMetric(c.peerAge, prometheus.GaugeValue, st.NewestReportAge.Seconds(), "newest")
		ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(st.Peers))
		ch <- prometheus.MustNewConstMetric(c.gossipMsg, prometheus.CounterValue, float64(st.MessagesSent), "sent")
		ch <- prometheus.MustNewConstMetric(c.gossipMsg, prometheus.CounterValue, float64(st.MessagesReceived), "received")
		ch <- prometheus.MustNewConstMetric(c.gossipB, prometheus.CounterValue, float64(st.BytesSent), "sent")
		ch <- prometheus.MustNewConstMetric(c.gossipB, prometheus.CounterValue, float64(st.BytesReceived), "received")
		ch <- prometheus.MustNewConstMetric(c.gossipBad, prometheus.CounterValue, float64(st.DecodeErrors), "malformed")
		ch <- prometheus.MustNewConstMetric(c.gossipBad, prometheus.CounterValue, float64(st.StaleIgnored), "stale")
		ch <- prometheus.MustNewConstMetric(c.gossipBad, prometheus.CounterValue, float64(st.Rejected), "rejected")
		ch <- prometheus.MustNewConstMetric(c.gossipBad, prometheus.CounterValue, float64(st.OtherCluster), "other_cluster")
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func promhttpHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// registerRuntime adds the Go runtime and process collectors; only for a
// registry the node owns, since a shared one may have them already.
func registerRuntime(reg *prometheus.Registry) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}
