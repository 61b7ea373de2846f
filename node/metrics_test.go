package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"net"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/thebalancer/balancer/consensus"
	"github.com/thebalancer/balancer/proxy"
	"github.com/thebalancer/balancer/proxy/pick"
)

// deadAddr is a 127.0.0.1 address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// scrape reads a node's /metrics with Prometheus' own text parser, so a
// malformed exposition fails here rather than in a Prometheus server.
func scrape(t *testing.T, n *Node) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// metricSample returns the value of the family's first series whose labels
// include these name, value pairs, and whether there is one.
func metricSample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsMoveWithTraffic(t *testing.T) {
	a := startBackend(t, "a", "http")
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: a.Addr(), Weight: 3}, proxy.Backend{ID: "dead", Address: deadAddr(t), Weight: 1})
	cfg.Proxy.Algorithm = pick.RoundRobin // the dead backend gets its turns
	n, _, _ := startNode(t, cfg)
	eventually(t, 10*time.Second, "a lone node leads its raft cluster and applies the seed", func() bool {
		v, _ := metricSample(scrape(t, n), "balancer_config_index")
		return v > 0
	})

	// A pedantic registry checks every collected metric against Describe
	// and the exposition rules: what a strict scraper or a shared registry
	// would reject.
	pedantic := prometheus.NewPedanticRegistry()
	pedantic.MustRegister(newCollector(n))
	if _, err := pedantic.Gather(); err != nil {
		t.Errorf("metrics fail a pedantic registry: %v", err)
	}

	before := scrape(t, n)
	wantTypes := map[string]dto.MetricType{
		"balancer_backend_requests_total":           dto.MetricType_COUNTER,
		"balancer_backend_failures_total":           dto.MetricType_COUNTER,
		"balancer_backend_request_duration_seconds": dto.MetricType_HISTOGRAM,
		"balancer_backend_inflight":                 dto.MetricType_GAUGE,
		"balancer_backend_cluster_inflight":         dto.MetricType_GAUGE,
		"balancer_backend_weight":                   dto.MetricType_GAUGE,
		"balancer_backend_draining":                 dto.MetricType_GAUGE,
		"balancer_backend_circuit_state":            dto.MetricType_GAUGE,
		"balancer_rejected_total":                   dto.MetricType_COUNTER,
		"balancer_members":                          dto.MetricType_GAUGE,
		"balancer_raft_state":                       dto.MetricType_GAUGE,
		"balancer_raft_term":                        dto.MetricType_GAUGE,
		"balancer_raft_commit_index":                dto.MetricType_GAUGE,
		"balancer_raft_applied_index":               dto.MetricType_GAUGE,
		"balancer_raft_last_contact_seconds":        dto.MetricType_GAUGE,
		"balancer_config_index":                     dto.MetricType_GAUGE,
		"balancer_config_changes_total":             dto.MetricType_COUNTER,
		"balancer_config_rejected_total":            dto.MetricType_COUNTER,
	}
	for name, typ := range wantTypes {
		f := before[name]
		if f == nil {
			t.Errorf("/metrics lacks %s", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("%s is a %v, want %v", name, f.GetType(), typ)
		}
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"balancer_raft_state", []string{"state", "leader"}, 1},
		{"balancer_raft_state", []string{"state", "follower"}, 0},
		{"balancer_raft_last_contact_seconds", nil, 0},
		{"balancer_members", []string{"state", "alive"}, 1},
		{"balancer_backend_weight", []string{"backend", "a"}, 3},
		{"balancer_backend_draining", []string{"backend", "a"}, 0},
	}
	for _, c := range checks {
		if got, ok := metricSample(before, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if term, _ := metricSample(before, "balancer_raft_term"); term < 1 {
		t.Errorf("raft term %v on a leader", term)
	}
	if ci, _ := metricSample(before, "balancer_raft_commit_index"); ci < 1 {
		t.Errorf("raft commit index %v after the seed committed", ci)
	}

	// Traffic: every request lands on a (round robin over a and the dead
	// one retries the connect failure on a).
	const reqs = 20
	for range reqs {
		resp, err := http.Get("http://" + n.Addr() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("proxied request: %d", resp.StatusCode)
		}
	}
	// The counters are updated when each response body closes, which the
	// proxy does just after the client has the answer.
	var after map[string]*dto.MetricFamily
	eventually(t, 5*time.Second, "request counters to include every request", func() bool {
		after = scrape(t, n)
		v, _ := metricSample(after, "balancer_backend_requests_total", "backend", "a")
		w, _ := metricSample(before, "balancer_backend_requests_total", "backend", "a")
		return v-w == reqs
	})
	h0, _ := metricSample(before, "balancer_backend_request_duration_seconds", "backend", "a")
	h1, _ := metricSample(after, "balancer_backend_request_duration_seconds", "backend", "a")
	if h1-h0 != reqs {
		t.Errorf("latency histogram count moved by %v, want %d", h1-h0, reqs)
	}
	if f, _ := metricSample(after, "balancer_backend_failures_total", "backend", "dead", "reason", "connect"); f < 1 {
		t.Errorf("connect failures to the dead backend: %v, want at least one", f)
	}
	// Every try of the dead backend fails: its circuit opens, and the
	// transition is counted.
	eventually(t, 5*time.Second, "the dead backend's circuit opening, in the metrics", func() bool {
		m := scrape(t, n)
		opened, _ := metricSample(m, "balancer_circuit_transitions_total", "backend", "dead", "from", "closed", "to", "open")
		return opened >= 1
	})
	if f, _ := metricSample(after, "balancer_backend_failures_total", "backend", "a", "reason", "status_5xx"); f != 0 {
		t.Errorf("5xx failures of the healthy backend: %v", f)
	}

	// A config change moves the index and the change counter.
	c0, _ := metricSample(after, "balancer_config_changes_total")
	i0, _ := metricSample(after, "balancer_config_index")
	if _, err := n.Apply(t.Context(), consensus.SetWeight("a", 5)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the weight change in the metrics", func() bool {
		m := scrape(t, n)
		c1, _ := metricSample(m, "balancer_config_changes_total")
		i1, _ := metricSample(m, "balancer_config_index")
		w, _ := metricSample(m, "balancer_backend_weight", "backend", "a")
		return c1 == c0+1 && i1 > i0 && w == 5
	})
}
