package node

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/thebalancer/balancer/breaker"
	"github.com/thebalancer/balancer/proxy"
)

// collector turns the proxy's and breakers' own counters into Prometheus
// metrics at scrape time, so the request path never touches the metrics
// library.
type collector struct {
	n         *Node
	requests  *prometheus.Desc
	failures  *prometheus.Desc
	latency   *prometheus.Desc
	inflight  *prometheus.Desc
	breaker   *prometheus.Desc
	rejected  *prometheus.Desc
	connsOpen *prometheus.Desc
	connsMax  *prometheus.Desc
	connsRef  *prometheus.Desc
	peerAge   *prometheus.Desc
	peers     *prometheus.Desc
	gossipMsg *prometheus.Desc
	gossipB   *prometheus.Desc
	gossipBad *prometheus.Desc
	bucketsUp []float64
}

func newCollector(n *Node) *collector {
	labels := []string{"backend"}
	return &collector{
		n:         n,
		requests:  prometheus.NewDesc("balancer_backend_requests_total", "Requests (or TCP connections) this node completed to the backend.", labels, nil),
		failures:  prometheus.NewDesc("balancer_backend_failures_total", "Requests to the backend that failed: connect errors, timeouts, 5xx answers.", labels, nil),
		latency:   prometheus.NewDesc("balancer_backend_request_duration_seconds", "Time from sending a request to the backend to the end of its response.", labels, nil),
		inflight:  prometheus.NewDesc("balancer_backend_inflight", "Requests this node has in flight to the backend.", labels, nil),
		breaker:   prometheus.NewDesc("balancer_backend_circuit_state", "Circuit state of the backend on this node: 1 for the current state.", []string{"backend", "state"}, nil),
		rejected:  prometheus.NewDesc("balancer_rejected_total", "Requests answered 503 (or TCP connections closed) because no backend could take them.", nil, nil),
		connsOpen: prometheus.NewDesc("balancer_client_connections", "Client connections open on the traffic listener.", nil, nil),
		connsMax:  prometheus.NewDesc("balancer_client_connections_limit", "The traffic listener's connection limit (-max-conns; 0: none).", nil, nil),
		connsRef:  prometheus.NewDesc("balancer_client_connections_refused_total", "Client connections refused at -max-conns: answered 503 and closed (http) or closed at once (tcp).", nil, nil),
		peerAge:   prometheus.NewDesc("balancer_gossip_peer_report_age_seconds", "Age of the oldest and newest live peer report in this node's view: how stale its cluster load is.", []string{"which"}, nil),
		peers:     prometheus.NewDesc("balancer_gossip_peers", "Peers whose reports are in this node's view.", nil, nil),
		gossipMsg: prometheus.NewDesc("balancer_gossip_messages_total", "Gossip report messages sent and received.", []string{"direction"}, nil),
		gossipB:   prometheus.NewDesc("balancer_gossip_bytes_total", "Gossip report payload bytes sent and received.", []string{"direction"}, nil),
		gossipBad: prometheus.NewDesc("balancer_gossip_dropped_total", "Gossip messages dropped: malformed, stale or rejected.", []string{"reason"}, nil),
		bucketsUp: proxy.LatencyBuckets(),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	states := c.n.breakers.States()
	for _, s := range c.n.proxy.Stats() {
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(s.Requests), s.ID)
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(s.Failures), s.ID)
		ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(s.InFlight), s.ID)
		buckets := make(map[float64]uint64, len(c.bucketsUp))
		var cum uint64
		for i, ub := range c.bucketsUp {
			cum += s.Latency.Counts[i]
			buckets[ub] = cum
		}
		ch <- prometheus.MustNewConstHistogram(c.latency, s.Latency.Count(), s.Latency.Sum.Seconds(), buckets, s.ID)
		cur := states[s.ID] // no circuit yet reads as Closed, the zero State
		for _, st := range []breaker.State{breaker.Closed, breaker.Open, breaker.HalfOpen} {
			v := 0.0
			if st == cur {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.breaker, prometheus.GaugeValue, v, s.ID, st.String())
		}
	}
	ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(c.n.proxy.Rejected()))
	ch <- prometheus.MustNewConstMetric(c.connsOpen, prometheus.GaugeValue, float64(c.n.proxy.ConnsOpen()))
	ch <- prometheus.MustNewConstMetric(c.connsMax, prometheus.GaugeValue, float64(c.n.cfg.Proxy.MaxConns))
	ch <- prometheus.MustNewConstMetric(c.connsRef, prometheus.CounterValue, float64(c.n.proxy.ConnsRefused()))
	if g := c.n.gossip; g != nil {
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
	}
}

func promhttpHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// registerRuntime adds the Go runtime and process collectors; only for a
// registry the node owns, since a shared one may have them already.
func registerRuntime(reg *prometheus.Registry) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}
