// Package admin serves a node's admin HTTP API: the JSON endpoints of
// SPEC.md, /metrics, health checks and a human status page. It owns the
// wire shapes of those answers and the mapping of errors to status codes.
//
// admin knows nothing of how the node works: it reads through the small
// interfaces declared here, which the node implements, and changes the
// replicated config through ConfigWriter. It may import consensus (types,
// sentinel errors, Command constructors) but must not import raft, proxy,
// breaker, memberlist or node.
//
// Writes (PUT and DELETE under /v1/backends/) may be sent to any node: a
// follower forwards them to the leader's admin API and relays the answer.
// Every error an endpoint answers goes through one function, httpError,
// which maps it to a status code and a JSON {"error": "..."} body.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"

	"github.com/thebalancer/balancer/consensus"
)

// Load is the answer of GET /v1/load.
type Load struct {
	Node     string        `json:"node"`
	Backends []BackendLoad `json:"backends"`
}

// BackendLoad is one backend's load as this node sees it.
type BackendLoad struct {
	ID    string `json:"id"`
	Local int64  `json:"local"` // this node's live in-flight count
	// Cluster is this node's live count plus each live peer's latest report.
	Cluster int64      `json:"cluster"`
	Peers   []PeerLoad `json:"peers"`
	// Breaker is the circuit state per node name: closed, open or half-open.
	Breaker  map[string]string `json:"breaker"`
	Requests uint64            `json:"requests"` // completed through this node
	Failures uint64            `json:"failures"`
}

// PeerLoad is a peer's last report for one backend.
type PeerLoad struct {
	Node  string `json:"node"`
	Count int64  `json:"count"`
	AgeMS int64  `json:"age_ms"`
}

// Config is the answer of GET /v1/config.
type Config struct {
	Index    uint64    `json:"index"`
	Backends []Backend `json:"backends"`
}

// Backend is one configured backend.
type Backend struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Weight  int32  `json:"weight"`
	Drain   bool   `json:"drain"`
	// Source says who created the backend and owns its address: "static"
	// (-backend flags), "consul" or "api"; empty on a node without a
	// replicated config.
	Source string `json:"source,omitempty"`
	// SourceWeight is the weight the source gives the backend; Weight
	// returns to it when the pin is cleared (DELETE /v1/backends/{id}/weight).
	SourceWeight int32 `json:"source_weight"`
	// Pinned is set when an operator set Weight through the API: Consul
	// syncs keep it until DELETE /v1/backends/{id}/weight clears the pin.
	Pinned bool `json:"pinned"`
}

// ConfigOf converts a replicated config to its wire shape. Backends is never
// nil, so it encodes as [].
func ConfigOf(c consensus.Config) Config {
	out := Config{Index: c.Index, Backends: make([]Backend, 0, len(c.Backends))}
	for _, b := range c.Backends {
		out.Backends = append(out.Backends, Backend{
			ID: b.ID, Address: b.Address, Weight: b.Weight, Drain: b.Drain,
			Source: b.Source, SourceWeight: b.SourceWeight, Pinned: b.Pinned,
		})
	}
	return out
}

// Member is one cluster member in GET /v1/members.
type Member struct {
	Name         string `json:"name"`
	GossipAddr   string `json:"gossip_addr"`
	AdminAddr    string `json:"admin_addr"`
	Status       string `json:"status"` // alive, suspect, dead or left
	RaftRole     string `json:"raft_role"`
	Leader       bool   `json:"leader"`
	AppliedIndex uint64 `json:"applied_index"`
}

// Members is the answer of GET /v1/members.
type Members struct {
	Members []Member `json:"members"`
}

// MembersView lists the cluster members; the node implements it.
type MembersView interface {
	Members() Members
}

// LoadView reports live load; the node implements it.
type LoadView interface {
	Load() Load
}

// ConfigStore reports the applied backend config; the node implements it.
type ConfigStore interface {
	Config() Config
}

// ConfigWriter changes the replicated config; the node implements it over
// its consensus.Store and its view of the cluster. The admin handler calls
// it from request goroutines, concurrently.
type ConfigWriter interface {
	// Apply proposes cmd on this node and waits until it is committed and
	// applied here, or ctx ends. It returns the consensus sentinels:
	// ErrNotLeader when this node is a follower (the handler then forwards
	// the request to Leader()), ErrNoLeader, ErrInvalid, ErrUnknownBackend,
	// ErrConflict (Result.Index is then the current index), ErrClosed.
	Apply(ctx context.Context, cmd consensus.Command) (consensus.Result, error)
	// Leader returns the current leader's node name and admin HOST:PORT,
	// or empty strings when they are not known. It must not block.
	Leader() (name, adminAddr string)
	// WaitIndex blocks until this node has applied config index idx, ctx
	// ends (the error wraps ctx.Err()) or the store closes (ErrClosed).
	WaitIndex(ctx context.Context, idx uint64) error
	// WaitApplied blocks until every raft server has confirmed applying
	// config index idx, or ctx ends (the error names those that have not).
	WaitApplied(ctx context.Context, idx uint64) error
}

// Sources is what the API reads from and writes to. Every field is required
// unless its comment says otherwise.
type Sources struct {
	Node    string
	Load    LoadView
	Config  ConfigStore
	Members MembersView
	// Writer changes the replicated config. Optional: nil makes the node
	// read-only, and its writes answer 503.
	Writer ConfigWriter
	// Token, when not empty, is the bearer token every write (PUT, DELETE)
	// must carry in "Authorization: Bearer TOKEN". Reads stay open.
	Token string
	// Ready returns nil when the node can serve traffic, or why not.
	Ready func() error
	// Status reports this node's raft state and recent traffic for
	// /v1/status. Optional: nil leaves them out.
	Status StatusView
	// Metrics serves /metrics.
	Metrics http.Handler
	// Pprof exposes the Go profiler under /debug/pprof/ (off by default:
	// profiles reveal internals and cost CPU).
	Pprof bool
	// ForwardTLS returns the client config a follower forwards writes with
	// to a leader whose advertised admin address is an https:// URL. It is
	// called for every new connection, from the request's goroutine, and
	// must not block; the config is not modified. Optional: nil uses the
	// system's roots and no client certificate.
	ForwardTLS func() *tls.Config
}

// NewHandler returns the admin API handler. Besides the reads of SPEC.md:
//
//	GET    /v1/config?index=N&wait=10s  long-poll: answers once the index > N or after wait (default and max 5m)
//	GET    /v1/status[?scope=node]      what the status page shows: members, raft, backends with per-node
//	                                    in-flight, breakers, rate and p99 (scope=node: without asking peers)
//	PUT    /v1/backends/{id}            {"address": "HOST:PORT", "weight": N, "drain": bool}; weight and drain optional
//	DELETE /v1/backends/{id}
//	PUT    /v1/backends/{id}/weight     {"weight": N}: sets and pins the weight against Consul syncs
//	DELETE /v1/backends/{id}/weight     clears the pin: the weight returns to the source's
//	PUT    /v1/backends/{id}/drain      {"drain": bool}
//
// A write answers {"index", "leader", "changed"} (plus "applied_everywhere"
// with ?wait=applied[&timeout=10s]); If-Match: INDEX makes it conditional.
// Config answers and write answers carry X-Config-Index.
func NewHandler(s Sources) http.Handler {
	a := &api{s: s, fwd: newForwardClient(s.ForwardTLS), polls: make(chan struct{}, maxLongPolls)}
	if s.Token != "" {
		a.tokenSum = sha256.Sum256([]byte(s.Token))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/load", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Load.Load())
	})
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Members.Members())
	})
	mux.HandleFunc("GET /v1/config", a.getConfig)
	mux.HandleFunc("GET /v1/status", a.getStatus)
	mux.HandleFunc("PUT /v1/backends/{id}", a.write(upsertCommand))
	mux.HandleFunc("DELETE /v1/backends/{id}", a.write(deleteCommand))
	mux.HandleFunc("PUT /v1/backends/{id}/weight", a.write(setWeightCommand))
	mux.HandleFunc("DELETE /v1/backends/{id}/weight", a.write(clearPinCommand))
	mux.HandleFunc("PUT /v1/backends/{id}/drain", a.write(setDrainCommand))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": s.Node})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Ready(); err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "node": s.Node})
	})
	mux.Handle("GET /metrics", s.Metrics)
	if s.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	index, assets := uiHandler()
	mux.Handle("GET /{$}", index)
	mux.Handle("GET /ui/", assets)
	// The catch-all answers JSON, but it also matches every path that
	// exists under another method, which would hide ServeMux's own 405; so
	// it asks the mux which methods the path has.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, r.Method+" "+r.URL.Path+": method not allowed (allowed: "+strings.Join(allow, ", ")+")")
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// allowedMethods lists the methods with a handler of their own for r's
// path, the catch-all aside.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	return allow
}

// writeConfig answers a config with its index also in X-Config-Index.
func writeConfig(w http.ResponseWriter, c Config) {
	w.Header().Set(headerConfigIndex, strconv.FormatUint(c.Index, 10))
	writeJSON(w, http.StatusOK, c)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}
