package admin

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// The status page is plain HTML, CSS and JavaScript embedded in the binary:
// it must work on hosts without internet access, so it loads nothing from
// anywhere but this node. The page polls GET /v1/status.
//
//go:embed ui
var uiFiles embed.FS

// peerStatusTimeout bounds the fetch of each peer's own status when a node
// assembles the cluster's: the page polls every second, and a dead peer
// must not hold the answer up.
const peerStatusTimeout = 500 * time.Millisecond

// maxStatusAnswer bounds a peer's status answer read into memory.
const maxStatusAnswer = 2 << 20

// statusReuse is how long a cluster status is served again instead of
// asking every peer anew: every open status page polls once a second, and
// without it V pages (or a client in a loop) would cost V×peers requests.
const statusReuse = 500 * time.Millisecond

// statusCache shares one cluster status between the requests of a moment.
type statusCache struct {
	group singleflight.Group
	mu    sync.Mutex
	at    time.Time
	last  Status
}

// sharedClusterStatus is clusterStatus, fetched at most once per statusReuse
// however many clients ask, and by one goroutine for concurrent askers. The
// fetch is not tied to any one request, so a client that goes away does not
// fail the others waiting on it.
func (a *api) sharedClusterStatus() Status {
	c := &a.status
	c.mu.Lock()
	if !c.at.IsZero() && time.Since(c.at) < statusReuse {
		st := c.last
		c.mu.Unlock()
		return st
	}
	c.mu.Unlock()
	v, _, _ := c.group.Do("cluster", func() (any, error) {
		st := a.clusterStatus(context.Background())
		c.mu.Lock()
		c.at, c.last = time.Now(), st
		c.mu.Unlock()
		return st, nil
	})
	return v.(Status)
}

// RaftStatus is one node's raft state.
type RaftStatus struct {
	State        string `json:"state"` // leader, follower, candidate, shutdown
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// LastContactMS is how long ago the node last heard from a leader: 0 on
	// the leader, -1 when never.
	LastContactMS int64 `json:"last_contact_ms"`
}

// Traffic is one backend's recent traffic through one node.
type Traffic struct {
	Rate      float64 `json:"rate"`       // completed requests per second, over the last few seconds
	ErrorRate float64 `json:"error_rate"` // failed requests per second
	P99MS     float64 `json:"p99_ms"`     // 0 when nothing completed lately
	Requests  uint64  `json:"requests"`   // since the node started
	Failures  uint64  `json:"failures"`
	// LatencyBuckets counts the same window's requests per latency bucket
	// (the bounds of balancer_backend_request_duration_seconds, then what
	// exceeded the last), so that the cluster's p99 can be computed from
	// every node's requests rather than guessed from their p99s.
	LatencyBuckets []uint64 `json:"latency_buckets,omitempty"`
}

// NodeStatus is what only the node itself knows: its raft state and the
// traffic it sent to each backend.
type NodeStatus struct {
	Raft    RaftStatus         `json:"raft"`
	Traffic map[string]Traffic `json:"traffic"` // by backend ID
}

// StatusView reports this node's own status; the node implements it. It is
// called from request goroutines, concurrently, and must not block long.
type StatusView interface {
	NodeStatus() NodeStatus
	// LatencyQuantileMS estimates the q-quantile, in milliseconds, of
	// Traffic.LatencyBuckets counts in this node's bucket layout; false
	// when the counts do not fit that layout (a peer of another version).
	LatencyQuantileMS(buckets []uint64, q float64) (float64, bool)
}

// Status is the answer of GET /v1/status: the cluster as the answering node
// sees it, with each reachable peer's own raft state and traffic added.
type Status struct {
	Node        string `json:"node"` // the node that answered
	Ready       bool   `json:"ready"`
	NotReady    string `json:"not_ready,omitempty"`
	Leader      string `json:"leader"` // "" when no leader is known
	ConfigIndex uint64 `json:"config_index"`
	// Nodes has one entry per member the answering node tried to reach
	// (itself first): raft state from the node itself.
	Nodes    []NodeReport    `json:"nodes"`
	Members  []Member        `json:"members"`
	Backends []BackendStatus `json:"backends"`
}

// NodeReport is one node's own report, or why it could not be had.
type NodeReport struct {
	Name  string      `json:"name"`
	Error string      `json:"error,omitempty"` // the peer's status was not reachable
	Raft  *RaftStatus `json:"raft,omitempty"`
}

// BackendStatus is one configured backend with its live state on every node.
type BackendStatus struct {
	Backend
	// InFlight is the in-flight count per node: the answering node's live
	// count and each peer's latest gossip report.
	InFlight      map[string]int64 `json:"in_flight"`
	InFlightTotal int64            `json:"in_flight_total"`
	// Breaker is the circuit state per node: closed, open or half-open.
	Breaker map[string]string `json:"breaker"`
	// Traffic is the recent traffic per node that answered.
	Traffic   map[string]Traffic `json:"traffic"`
	Rate      float64            `json:"rate"`       // sum over Traffic
	ErrorRate float64            `json:"error_rate"` // sum over Traffic
	// P99MS is the p99 of every answering node's requests together, from
	// their merged latency buckets; when a node sent no buckets, the worst
	// node's p99 instead.
	P99MS float64 `json:"p99_ms"`
}

// localStatus is the answering node's view alone, without its peers.
func localStatus(s Sources) Status {
	cfg := s.Config.Config()
	load := s.Load.Load()
	members := s.Members.Members()
	var self NodeStatus
	if s.Status != nil {
		self = s.Status.NodeStatus()
	}
	st := Status{Node: s.Node, ConfigIndex: cfg.Index, Members: members.Members,
		Nodes: []NodeReport{{Name: s.Node, Raft: &self.Raft}}, Backends: make([]BackendStatus, 0, len(cfg.Backends))}
	if st.Members == nil {
		st.Members = []Member{}
	}
	if err := s.Ready(); err != nil {
		st.NotReady = err.Error()
	} else {
		st.Ready = true
	}
	for _, m := range members.Members {
		if m.Leader {
			st.Leader = m.Name
		}
	}
	byID := make(map[string]BackendLoad, len(load.Backends))
	for _, b := range load.Backends {
		byID[b.ID] = b
	}
	for _, b := range cfg.Backends {
		l := byID[b.ID]
		bs := BackendStatus{Backend: b, InFlight: map[string]int64{s.Node: l.Local}, InFlightTotal: l.Cluster,
			Breaker: l.Breaker, Traffic: map[string]Traffic{}}
		if bs.Breaker == nil {
			bs.Breaker = map[string]string{}
		}
		for _, p := range l.Peers {
			bs.InFlight[p.Node] = p.Count
		}
		if t, ok := self.Traffic[b.ID]; ok {
			bs.Traffic[s.Node] = t
		}
		st.Backends = append(st.Backends, bs)
	}
	return st
}

// clusterStatus is localStatus plus each alive peer's own report, fetched
// in parallel from its admin API (?scope=node).
func (a *api) clusterStatus(ctx context.Context) Status {
	st := localStatus(a.s)
	type peer struct {
		name, addr string
		st         Status
		err        error
	}
	var peers []*peer
	for _, m := range st.Members {
		if m.Name == a.s.Node || m.Status == "dead" || m.Status == "left" {
			continue
		}
		peers = append(peers, &peer{name: m.Name, addr: m.AdminAddr})
	}
	var wg sync.WaitGroup
	for _, p := range peers {
		if p.addr == "" {
			p.err = fmt.Errorf("no admin address in its gossip metadata")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.st, p.err = a.fetchStatus(ctx, p.addr)
		}()
	}
	wg.Wait()
	idx := make(map[string]int, len(st.Backends))
	for i, b := range st.Backends {
		idx[b.ID] = i
	}
	for _, p := range peers {
		rep := NodeReport{Name: p.name}
		if p.err != nil {
			rep.Error = p.err.Error()
			st.Nodes = append(st.Nodes, rep)
			continue
		}
		for _, n := range p.st.Nodes {
			if n.Name == p.st.Node {
				rep.Raft = n.Raft
			}
		}
		st.Nodes = append(st.Nodes, rep)
		for _, b := range p.st.Backends {
			i, ok := idx[b.ID]
			if !ok {
				continue // the peer applies a config this node has not seen yet
			}
			// Filed under the member's name, not the name the answer gives:
			// a peer must not be able to overwrite another node's figures.
			if t, ok := b.Traffic[p.st.Node]; ok {
				st.Backends[i].Traffic[p.name] = t
			}
		}
	}
	for i := range st.Backends {
		b := &st.Backends[i]
		for _, t := range b.Traffic {
			b.Rate += t.Rate
			b.ErrorRate += t.ErrorRate
		}
		b.P99MS = clusterP99(a.s.Status, b.Traffic)
	}
	return st
}

// clusterP99 merges the nodes' latency buckets and reads the p99 off the
// sum. Without buckets from every node that served requests it falls back
// to the worst node's p99: an upper bound, never an underestimate.
func clusterP99(view StatusView, traffic map[string]Traffic) float64 {
	var sum []uint64
	worst := 0.0
	merged := view != nil
	for _, t := range traffic {
		worst = max(worst, t.P99MS)
		switch {
		case len(t.LatencyBuckets) == 0:
			merged = merged && t.P99MS == 0 // nothing served lately: nothing to merge
		case sum == nil:
			sum = append([]uint64(nil), t.LatencyBuckets...)
		case len(t.LatencyBuckets) != len(sum):
			merged = false
		default:
			for k, c := range t.LatencyBuckets {
				sum[k] += c
			}
		}
	}
	if !merged || sum == nil {
		return worst
	}
	if q, ok := view.LatencyQuantileMS(sum, 0.99); ok {
		return q
	}
	return worst
}

// fetchStatus reads a peer's own status (GET /v1/status?scope=node).
func (a *api) fetchStatus(ctx context.Context, addr string) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, peerStatusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, adminBase(addr)+"/v1/status?scope=node", nil)
	if err != nil {
		return Status{}, fmt.Errorf("admin address %q: %w", addr, err)
	}
	resp, err := a.fwd.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Status{}, fmt.Errorf("status of %s: %s", addr, resp.Status)
	}
	var st Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxStatusAnswer)).Decode(&st); err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", addr, err)
	}
	return st, nil
}

// getStatus answers GET /v1/status[?scope=node|cluster].
func (a *api) getStatus(w http.ResponseWriter, r *http.Request) {
	switch scope := r.URL.Query().Get("scope"); scope {
	case "", "cluster":
		writeJSON(w, http.StatusOK, a.sharedClusterStatus())
	case "node":
		writeJSON(w, http.StatusOK, localStatus(a.s))
	default:
		writeErr(w, fmt.Errorf("%w: scope %q: want node or cluster", errBadRequest, scope), 0)
	}
}

// uiHandler serves the embedded status page: index.html at / and its
// assets under /ui/. no-cache makes a browser revalidate, so an upgraded
// node's page is seen at once.
func uiHandler() (index, assets http.Handler) {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	files := http.FileServerFS(sub)
	index = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uiHeaders(w)
		http.ServeFileFS(w, r, sub, "index.html")
	})
	assets = http.StripPrefix("/ui/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uiHeaders(w)
		files.ServeHTTP(w, r)
	}))
	return index, assets
}

// uiHeaders: the page shows values peers put in gossip and holds the admin
// token, so it runs only its own script, talks only to its own node and
// cannot be framed.
func uiHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// NodeNames lists the node names the status mentions, the answering node
// first and the rest sorted: the column order of the page and the CLI.
func (s Status) NodeNames() []string {
	seen := map[string]bool{s.Node: true}
	var rest []string
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			rest = append(rest, n)
		}
	}
	for _, m := range s.Members {
		add(m.Name)
	}
	for _, b := range s.Backends {
		for n := range b.InFlight {
			add(n)
		}
	}
	sort.Strings(rest)
	return append([]string{s.Node}, rest...)
}
