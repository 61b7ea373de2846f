// Package admin serves a node's admin HTTP API: the JSON endpoints of
// SPEC.md, /metrics, health checks and a human status page. It owns the
// wire shapes of those answers and the mapping of errors to status codes.
//
// admin knows nothing of how the node works: it reads through the small
// interfaces declared here, which the node implements. It must not import
// proxy, breaker or memberlist.
package admin

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
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
}

// LoadView reports live load; the node implements it.
type LoadView interface {
	Load() Load
}

// ConfigStore reports the applied backend config; the node implements it.
type ConfigStore interface {
	Config() Config
}

// Sources is what the API reads from. Every field is required.
type Sources struct {
	Node   string
	Load   LoadView
	Config ConfigStore
	// Ready returns nil when the node can serve traffic, or why not.
	Ready func() error
	// Metrics serves /metrics.
	Metrics http.Handler
	// Pprof exposes the Go profiler under /debug/pprof/ (off by default:
	// profiles reveal internals and cost CPU).
	Pprof bool
}

// NewHandler returns the admin API handler.
func NewHandler(s Sources) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/load", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Load.Load())
	})
	mux.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Config.Config())
	})
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
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		renderStatus(w, s)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
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
