package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// clusterFake is one node of a fake cluster: a fixed config and load, and a
// member list that other fakes fill in once their addresses are known.
type clusterFake struct {
	name    string
	traffic Traffic
	mu      sync.Mutex // guards members
	members []Member
}

func (f *clusterFake) Config() Config {
	return Config{Index: 7, Backends: []Backend{{ID: "web", Address: "10.0.0.1:80", Weight: 4}}}
}

func (f *clusterFake) Load() Load {
	return Load{Node: f.name, Backends: []BackendLoad{{ID: "web", Local: 2, Cluster: 5,
		Peers: []PeerLoad{{Node: "other", Count: 3}}, Breaker: map[string]string{f.name: "closed", "other": "open"}}}}
}

func (f *clusterFake) Members() Members {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Members{Members: append([]Member(nil), f.members...)}
}

func (f *clusterFake) NodeStatus() NodeStatus {
	return NodeStatus{Raft: RaftStatus{State: "follower", Term: 3, CommitIndex: 9, AppliedIndex: 9},
		Traffic: map[string]Traffic{"web": f.traffic}}
}

// LatencyQuantileMS reads buckets whose k-th holds requests up to
// (k+1)×10 ms, without interpolation: enough to tell a merge from a max.
func (f *clusterFake) LatencyQuantileMS(b []uint64, q float64) (float64, bool) {
	var total uint64
	for _, c := range b {
		total += c
	}
	var cum uint64
	for k, c := range b {
		cum += c
		if float64(cum) >= q*float64(total) {
			return float64(k+1) * 10, true
		}
	}
	return 0, false
}

func startFake(t *testing.T, f *clusterFake) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(NewHandler(Sources{Node: f.name, Load: f, Config: f, Members: f, Status: f,
		Ready: func() error { return nil }, Metrics: http.NotFoundHandler()}))
	t.Cleanup(srv.Close)
	return srv
}

func TestClusterStatusAddsPeersTraffic(t *testing.T) {
	a := &clusterFake{name: "a", traffic: Traffic{Rate: 10, ErrorRate: 1, P99MS: 20, Requests: 100}}
	b := &clusterFake{name: "b", traffic: Traffic{Rate: 5, P99MS: 80, Requests: 50}}
	sa, sb := startFake(t, a), startFake(t, b)
	// A member whose admin API is gone: its row must say so, not stall.
	gone := testutil.FreeAddr(t)
	members := []Member{
		{Name: "a", AdminAddr: sa.Listener.Addr().String(), Status: "alive", Leader: true},
		{Name: "b", AdminAddr: sb.Listener.Addr().String(), Status: "alive"},
		{Name: "c", AdminAddr: gone, Status: "alive"},
		{Name: "d", AdminAddr: "", Status: "dead"},
	}
	a.members, b.members = members, members

	var st Status
	resp, err := http.Get(sa.URL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Node != "a" || st.Leader != "a" || st.ConfigIndex != 7 || !st.Ready {
		t.Errorf("header: %+v", st)
	}
	reports := map[string]NodeReport{}
	for _, n := range st.Nodes {
		reports[n.Name] = n
	}
	if len(st.Nodes) != 3 || reports["a"].Raft == nil || reports["b"].Raft == nil || reports["b"].Raft.Term != 3 {
		t.Errorf("node reports %+v: want a and b with raft state, c unreachable, dead d not asked", st.Nodes)
	}
	if reports["c"].Error == "" || reports["c"].Raft != nil {
		t.Errorf("unreachable member c: %+v", reports["c"])
	}
	if len(st.Backends) != 1 {
		t.Fatalf("backends %+v", st.Backends)
	}
	web := st.Backends[0]
	if web.Weight != 4 || web.InFlight["a"] != 2 || web.InFlight["other"] != 3 || web.InFlightTotal != 5 || web.Breaker["other"] != "open" {
		t.Errorf("web's config and load: %+v", web)
	}
	if web.Traffic["a"].Rate != 10 || web.Traffic["b"].Rate != 5 || web.Rate != 15 || web.ErrorRate != 1 || web.P99MS != 80 {
		t.Errorf("web's traffic: per node %+v, rate %v, errors %v, p99 %v; want 15/s, 1/s and b's 80ms", web.Traffic, web.Rate, web.ErrorRate, web.P99MS)
	}
	if got := st.NodeNames(); len(got) < 3 || got[0] != "a" || got[1] != "b" {
		t.Errorf("node order %v: want the answering node first, then sorted", got)
	}

	// scope=node answers without asking anyone.
	var own Status
	r2, err := http.Get(sb.URL + "/v1/status?scope=node")
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Body.Close()
	if err := json.NewDecoder(r2.Body).Decode(&own); err != nil {
		t.Fatal(err)
	}
	if len(own.Nodes) != 1 || len(own.Backends[0].Traffic) != 1 || own.Backends[0].Traffic["b"].Rate != 5 {
		t.Errorf("scope=node: %+v", own)
	}
}

// Many status pages (or a client in a loop) must not multiply the requests
// a node sends its peers: a burst of cluster status requests costs each
// peer one fetch.
func TestClusterStatusFanOutIsShared(t *testing.T) {
	a := &clusterFake{name: "a"}
	var mu sync.Mutex
	asked := 0
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked++
		mu.Unlock()
		writeJSON(w, http.StatusOK, Status{Node: "b"})
	}))
	t.Cleanup(b.Close)
	a.members = []Member{{Name: "a", Status: "alive"}, {Name: "b", AdminAddr: b.Listener.Addr().String(), Status: "alive"}}
	sa := startFake(t, a)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(sa.URL + "/v1/status")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		}()
	}
	wg.Wait()
	// One fetch per reuse window the burst spanned (one, unless the
	// machine stalled the burst).
	allowed := 1 + int(time.Since(start)/statusReuse)
	mu.Lock()
	defer mu.Unlock()
	if asked > allowed {
		t.Errorf("20 status requests in %v asked the peer %d times, want at most %d (one per %v)", time.Since(start), asked, allowed, statusReuse)
	}
}

// The cluster's p99 comes from every node's requests together: a node that
// served one slow request among the cluster's hundred does not make the
// cluster's p99 its own. A node without buckets (an older version) falls
// back to the worst node's figure, which bounds the merged one from above.
func TestClusterStatusMergesLatencyBuckets(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    Traffic
		want float64
	}{
		{"merged", Traffic{Rate: 1, P99MS: 80, LatencyBuckets: []uint64{0, 0, 0, 0, 0, 0, 0, 1}}, 10},
		{"a node without buckets", Traffic{Rate: 1, P99MS: 80}, 80},
		{"another bucket layout", Traffic{Rate: 1, P99MS: 80, LatencyBuckets: []uint64{0, 1}}, 80},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &clusterFake{name: "a", traffic: Traffic{Rate: 99, P99MS: 10, LatencyBuckets: []uint64{99, 0, 0, 0, 0, 0, 0, 0}}}
			b := &clusterFake{name: "b", traffic: tc.b}
			sa, sb := startFake(t, a), startFake(t, b)
			members := []Member{
				{Name: "a", AdminAddr: sa.Listener.Addr().String(), Status: "alive", Leader: true},
				{Name: "b", AdminAddr: sb.Listener.Addr().String(), Status: "alive"},
			}
			a.members, b.members = members, members
			st, err := NewClient(sa.URL, "").Status(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Backends[0].P99MS; got != tc.want {
				t.Errorf("cluster p99 %v ms, want %v", got, tc.want)
			}
		})
	}
}
