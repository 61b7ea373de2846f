package node

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/thebalancer/balancer/consensus"
	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/proxy"
	"github.com/thebalancer/balancer/proxy/pick"
)

func TestMetricsMoveWithTraffic(t *testing.T) {
	a := startBackend(t, "a", "http")
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: a.Addr(), Weight: 3}, proxy.Backend{ID: "dead", Address: testutil.FreeAddr(t), Weight: 1})
	cfg.Proxy.Algorithm = pick.RoundRobin // the dead backend gets its turns
	n, _ := startNode(t, cfg)
	testutil.Eventually(t, 10*time.Second, "a lone node leads its raft cluster and applies the seed", func() bool {
		v, _ := testutil.Sample(testutil.Scrape(t, "http://"+n.AdminAddr()+"/metrics"), "balancer_config_index")
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

	before := testutil.Scrape(t, "http://"+n.AdminAddr()+"/metrics")
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
		if got, ok := testutil.Sample(before, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if term, _ := testutil.Sample(before, "balancer_raft_term"); term < 1 {
		t.Errorf("raft term %v on a leader", term)
	}
	if ci, _ := testutil.Sample(before, "balancer_raft_commit_index"); ci < 1 {
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
	testutil.Eventually(t, 5*time.Second, "request counters to include every request", func() bool {
		after = testutil.Scrape(t, "http://"+n.AdminAddr()+"/metrics")
		v, _ := testutil.Sample(after, "balancer_backend_requests_total", "backend", "a")
		w, _ := testutil.Sample(before, "balancer_backend_requests_total", "backend", "a")
		return v-w == reqs
	})
	h0, _ := testutil.Sample(before, "balancer_backend_request_duration_seconds", "backend", "a")
	h1, _ := testutil.Sample(after, "balancer_backend_request_duration_seconds", "backend", "a")
	if h1-h0 != reqs {
		t.Errorf("latency histogram count moved by %v, want %d", h1-h0, reqs)
	}
	if f, _ := testutil.Sample(after, "balancer_backend_failures_total", "backend", "dead", "reason", "connect"); f < 1 {
		t.Errorf("connect failures to the dead backend: %v, want at least one", f)
	}
	// Every try of the dead backend fails: its circuit opens, and the
	// transition is counted.
	testutil.Eventually(t, 5*time.Second, "the dead backend's circuit opening, in the metrics", func() bool {
		m := testutil.Scrape(t, "http://"+n.AdminAddr()+"/metrics")
		opened, _ := testutil.Sample(m, "balancer_circuit_transitions_total", "backend", "dead", "from", "closed", "to", "open")
		return opened >= 1
	})
	if f, _ := testutil.Sample(after, "balancer_backend_failures_total", "backend", "a", "reason", "status_5xx"); f != 0 {
		t.Errorf("5xx failures of the healthy backend: %v", f)
	}

	// A config change moves the index and the change counter.
	c0, _ := testutil.Sample(after, "balancer_config_changes_total")
	i0, _ := testutil.Sample(after, "balancer_config_index")
	if _, err := n.Apply(t.Context(), consensus.SetWeight("a", 5)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the weight change in the metrics", func() bool {
		m := testutil.Scrape(t, "http://"+n.AdminAddr()+"/metrics")
		c1, _ := testutil.Sample(m, "balancer_config_changes_total")
		i1, _ := testutil.Sample(m, "balancer_config_index")
		w, _ := testutil.Sample(m, "balancer_backend_weight", "backend", "a")
		return c1 == c0+1 && i1 > i0 && w == 5
	})
}
