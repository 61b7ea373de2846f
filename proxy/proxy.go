// Package proxy forwards client traffic to backends: an HTTP reverse proxy
// (net/http/httputil underneath) and a TCP proxy. It owns the live in-flight
// counter of every backend, the per-backend request statistics and the
// routing table that the hot path reads.
//
// The routing table is an immutable value swapped through an atomic pointer:
// the node rebuilds it (SetRoutes) whenever the config, a circuit state or the
// cluster view changes, and a request reads it once without locks. Which
// backend to pick is decided by proxy/pick; whether a backend may be tried is
// decided by the Circuit the node hands in. proxy never imports gossip,
// consensus or breaker: the node translates between them.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thebalancer/balancer/proxy/pick"
)

// Backend is one configured backend.
type Backend struct {
	ID      string
	Address string // host:port
	Weight  int32  // share of new traffic; 0 = none
	Drain   bool   // no new traffic; in-flight requests finish
}

// Route is a backend as the node currently sees it: its config plus the
// cluster's opinion of it.
type Route struct {
	Backend
	// Down means no normal traffic: the circuit is open or half-open here,
	// or open on a peer.
	Down bool
	// Trial means this node may send the half-open trial request; the
	// circuit's Allow decides which single request that is.
	Trial bool
	// Probe offers one request to a backend that is Down because of a peer's
	// open circuit, so this node can find out for itself whether the backend
	// answers it (the peer's own path may be the problem, or the peer may get
	// no traffic to run its trial with). The offer stands across later
	// tables until a request takes it or the route is no longer Down: tables
	// are rebuilt every few milliseconds, and an offer that lasted one table
	// would be lost whenever traffic is sparse. Offering again while one
	// stands does not add a second. The node sets it at most once per sleep
	// window.
	Probe bool
	// Peers is the load the other nodes put on the backend (staleness-weighted).
	Peers float64
	// Echo and EchoBase extrapolate Peers between reports from this node's
	// own count (see pick.Candidate).
	Echo, EchoBase float64
	// Latency is the backend's recent mean response time in seconds as this
	// node observes it (0: unknown).
	Latency float64
}

// Circuit is the breaker gate of one backend, as the proxy uses it. All
// methods are called on the request path and must not block.
type Circuit interface {
	// Allow says whether a request may be sent now, and whether it is the
	// half-open trial.
	Allow() (ok, trial bool)
	// Done reports the outcome of a request that Allow admitted.
	Done(trial, success bool)
	// Cancel reports a request that the client abandoned: no outcome.
	Cancel(trial bool)
}

// Mode names.
const (
	ModeHTTP = "http"
	ModeTCP  = "tcp"
)

// Config configures a Proxy.
type Config struct {
	Mode      string // ModeHTTP or ModeTCP
	Algorithm string // a pick policy name
	// DialTimeout bounds connecting to a backend; a connect failure is
	// retried on another backend.
	DialTimeout time.Duration
	// ResponseTimeout bounds the wait for a backend's response headers
	// once the request is sent, and how long a backend may go without
	// taking any of a request body (HTTP). It does not bound the upload.
	ResponseTimeout time.Duration
	// ClientIdleTimeout cuts off an HTTP client that sends none of its
	// request body, or reads none of the answer, for this long, releasing
	// the backend connection and in-flight slot it holds (HTTP).
	ClientIdleTimeout time.Duration
	// IdleTimeout closes a TCP connection, or an upgraded HTTP connection
	// (WebSocket), with no traffic either way.
	IdleTimeout time.Duration
	// MaxTries is how many backends one request may try (1..pick.MaxTries).
	MaxTries int
	// MaxIdlePerBackend is the keep-alive pool size per backend (HTTP).
	MaxIdlePerBackend int
	// BackendIdleTimeout closes a pooled backend connection unused for
	// this long (HTTP; see ExpireIdle), giving back a spike's descriptors.
	BackendIdleTimeout time.Duration
	// MaxConns bounds the client connections open at once (see Limit);
	// 0: no bound.
	MaxConns int
	// HeaderTimeout bounds reading a request's headers (HTTP), so a client
	// that trickles them cannot hold a connection for long.
	HeaderTimeout time.Duration
	// KeepAliveTimeout closes an HTTP client connection that sits idle
	// between requests for this long.
	KeepAliveTimeout time.Duration
}

// DefaultConfig returns the settings a production node starts from.
func DefaultConfig() Config {
	return Config{
		Mode:               ModeHTTP,
		Algorithm:          pick.P2C,
		DialTimeout:        2 * time.Second,
		ResponseTimeout:    30 * time.Second,
		ClientIdleTimeout:  60 * time.Second,
		IdleTimeout:        5 * time.Minute,
		MaxTries:           3,
		MaxIdlePerBackend:  256,
		BackendIdleTimeout: pooledIdleTimeout,
		MaxConns:           DefaultMaxConns(),
		HeaderTimeout:      10 * time.Second,
		KeepAliveTimeout:   2 * time.Minute,
	}
}

// Validate reports the first bad setting, naming its flag.
func (c Config) Validate() error {
	switch {
	case c.Mode != ModeHTTP && c.Mode != ModeTCP:
		return fmt.Errorf("-mode %q: want http or tcp", c.Mode)
	case !pick.Valid(c.Algorithm):
		return fmt.Errorf("-algorithm %q: want one of %v", c.Algorithm, pick.Names())
	case c.DialTimeout <= 0:
		return fmt.Errorf("-dial-timeout %v: must be positive", c.DialTimeout)
	case c.ResponseTimeout <= 0:
		return fmt.Errorf("-response-timeout %v: must be positive", c.ResponseTimeout)
	case c.ClientIdleTimeout <= 0:
		return fmt.Errorf("-client-idle-timeout %v: must be positive", c.ClientIdleTimeout)
	case c.IdleTimeout <= 0:
		return fmt.Errorf("-idle-timeout %v: must be positive", c.IdleTimeout)
	case c.MaxTries < 1 || c.MaxTries > pick.MaxTries:
		return fmt.Errorf("-max-tries %d: want 1..%d", c.MaxTries, pick.MaxTries)
	case c.MaxConns < 0:
		return fmt.Errorf("-max-conns %d: must not be negative (0: no limit)", c.MaxConns)
	case c.HeaderTimeout <= 0:
		return fmt.Errorf("-header-timeout %v: must be positive", c.HeaderTimeout)
	case c.KeepAliveTimeout <= 0:
		return fmt.Errorf("-keepalive-timeout %v: must be positive", c.KeepAliveTimeout)
	case c.BackendIdleTimeout <= 0:
		return fmt.Errorf("backend idle timeout %v: must be positive", c.BackendIdleTimeout)
	case c.MaxIdlePerBackend < 0:
		return fmt.Errorf("max idle connections per backend %d: must not be negative", c.MaxIdlePerBackend)
	}
	return nil
}

// ErrNoBackend is returned (and answered with 503) when no backend can take
// a request; the wrapped message names the reason.
var ErrNoBackend = errors.New("no backend available")

// upstream is the state of one backend that outlives table rebuilds: its
// counter must keep counting requests sent under an older table.
type upstream struct {
	id       string
	addr     string
	inflight atomic.Int64
	circuit  Circuit
	stats    Stats
	pool     *connPool   // idle HTTP keep-alive connections; nil in TCP mode
	probe    atomic.Bool // a Route.Probe offer no request has taken yet
}

// close releases what the upstream holds once it has left the table.
func (u *upstream) close() {
	if u.pool != nil {
		u.pool.closeIdle(true)
	}
}

// table is an immutable routing snapshot; cands[i] describes ups[i].
type table struct {
	ups    []*upstream
	cands  []pick.Candidate
	policy pick.Policy
	trials []int // indices of half-open backends whose trial this node runs
	probes []int // indices of down backends with a probe on offer (upstream.probe)
	empty  error // why nothing is available, when nothing is
}

// Proxy forwards traffic for one listener.
type Proxy struct {
	cfg        Config
	log        *slog.Logger
	newCircuit func(backendID string) Circuit
	rand       pick.Rand
	state      pick.State
	tab        atomic.Pointer[table]
	rejected   atomic.Uint64 // requests answered 503 for want of a backend

	connsOpen    atomic.Int64  // client connections open through Limit's listener
	connsRefused atomic.Uint64 // client connections refused at MaxConns

	mu  sync.Mutex           // guards ups; held only on the cold path
	ups map[string]*upstream // by backend ID

	http *httpForwarder // nil in TCP mode
	tcp  *tcpForwarder  // nil in HTTP mode
}

// New returns a Proxy with an empty routing table. newCircuit returns the
// breaker gate for a backend; it is called when a backend first appears.
func New(cfg Config, newCircuit func(backendID string) Circuit, log *slog.Logger) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if newCircuit == nil {
		newCircuit = func(string) Circuit { return openGate{} }
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		cfg:        cfg,
		log:        log,
		newCircuit: newCircuit,
		rand:       pick.Random{},
		ups:        make(map[string]*upstream),
	}
	if cfg.Mode == ModeHTTP {
		p.http = newHTTPForwarder(p)
	} else {
		p.tcp = newTCPForwarder(p)
	}
	p.SetRoutes(nil)
	return p, nil
}

// openGate admits everything; used when no breaker is configured.
type openGate struct{}

func (openGate) Allow() (bool, bool) { return true, false }
func (openGate) Done(bool, bool)     {}
func (openGate) Cancel(bool)         {}

// SetRoutes replaces the routing table. It is called by the node on the cold
// path (config change, circuit transition, gossip update); requests already
// running keep the table they started with. Backends that disappear keep
// their counters until their last request finishes; their idle connections
// are closed at once, and busy ones when their request ends.
func (p *Proxy) SetRoutes(routes []Route) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := &table{
		ups:   make([]*upstream, len(routes)),
		cands: make([]pick.Candidate, len(routes)),
	}
	seen := make(map[string]bool, len(routes))
	weighted, up := 0, 0
	for i, r := range routes {
		u := p.ups[r.ID]
		if u == nil || u.addr != r.Address {
			if u != nil {
				u.close()
			}
			u = &upstream{id: r.ID, addr: r.Address, circuit: p.newCircuit(r.ID)}
			if p.http != nil {
				u.pool = newConnPool(r.Address, p.cfg.MaxIdlePerBackend)
			}
			p.ups[r.ID] = u
		}
		seen[r.ID] = true
		w := r.Weight
		if r.Drain {
			w = 0
		}
		t.ups[i] = u
		t.cands[i] = pick.Candidate{Weight: w, Down: r.Down, Local: &u.inflight, Peers: r.Peers, Echo: r.Echo, EchoBase: r.EchoBase, Latency: r.Latency}
		if r.Trial && w > 0 {
			t.trials = append(t.trials, i)
		}
		switch {
		case !r.Down || w == 0:
			u.probe.Store(false)
		case r.Probe:
			u.probe.Store(true)
		}
		if u.probe.Load() {
			t.probes = append(t.probes, i)
		}
		if w > 0 {
			weighted++
			if !r.Down {
				up++
			}
		}
	}
	for id, u := range p.ups {
		if !seen[id] {
			u.close()
			delete(p.ups, id)
		}
	}
	switch {
	case len(routes) == 0:
		t.empty = fmt.Errorf("%w: no backends configured", ErrNoBackend)
	case weighted == 0:
		t.empty = fmt.Errorf("%w: every backend is drained or has weight 0", ErrNoBackend)
	case up == 0:
		t.empty = fmt.Errorf("%w: every backend's circuit is open", ErrNoBackend)
	}
	policy, err := pick.New(p.cfg.Algorithm, t.cands, &p.state)
	if err != nil {
		// Validate checked the name, so this is a programming error; keep
		// serving on the old table rather than failing every request.
		p.log.Error("build routing table", "err", err)
		return
	}
	t.policy = policy
	p.tab.Store(t)
}

// choose picks the backend for the next attempt of one request and claims
// it through its circuit. It returns -1 and the reason when none is left.
func (p *Proxy) choose(t *table, skip *pick.Skip) (i int, trial bool, err error) {
	// A half-open backend's single trial request takes precedence, so that
	// a recovered backend comes back as soon as its sleep window ends.
	for _, k := range t.trials {
		if skip.Has(k) {
			continue
		}
		if ok, tr := t.ups[k].circuit.Allow(); ok && tr {
			return k, true, nil
		}
	}
	for _, k := range t.probes {
		if u := t.ups[k]; !skip.Has(k) && u.probe.Load() && u.probe.CompareAndSwap(true, false) {
			if ok, tr := u.circuit.Allow(); ok {
				return k, tr, nil
			}
		}
	}
	for skip.Len() < pick.MaxTries {
		i = t.policy.Pick(t.cands, p.rand, *skip)
		if i < 0 {
			break
		}
		ok, tr := t.ups[i].circuit.Allow()
		if ok {
			return i, tr, nil
		}
		// The circuit opened after this table was built: try another.
		skip.Add(i)
	}
	if t.empty != nil {
		return -1, false, t.empty
	}
	if skip.Len() > 0 {
		return -1, false, fmt.Errorf("%w: every backend tried failed or refused", ErrNoBackend)
	}
	return -1, false, fmt.Errorf("%w: every backend's circuit is open", ErrNoBackend)
}

// BackendStats is a point-in-time view of one backend's traffic from this node.
type BackendStats struct {
	ID       string
	Address  string
	InFlight int64
	Requests uint64 // completed requests (or TCP connections)
	Failures uint64 // connect errors, timeouts, 5xx answers: FailuresBy's total
	// FailuresBy splits Failures by reason.
	FailuresBy FailureCounts
	Latency    HistogramSnapshot
}

// Stats returns the statistics of every configured backend, sorted by ID.
// It is meant for the admin API and metrics scrapes, not the hot path.
func (p *Proxy) Stats() []BackendStats {
	t := p.tab.Load()
	out := make([]BackendStats, 0, len(t.ups))
	for _, u := range t.ups {
		fails := u.stats.failureCounts()
		out = append(out, BackendStats{
			ID:         u.id,
			Address:    u.addr,
			InFlight:   u.inflight.Load(),
			Requests:   u.stats.requests.Load(),
			Failures:   fails.Total(),
			FailuresBy: fails,
			Latency:    u.stats.latency.Snapshot(),
		})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// InFlight returns this node's live in-flight count per backend ID.
func (p *Proxy) InFlight() map[string]int64 {
	t := p.tab.Load()
	m := make(map[string]int64, len(t.ups))
	for _, u := range t.ups {
		m[u.id] = u.inflight.Load()
	}
	return m
}

// Rejected is the number of requests or connections refused because no
// backend could take them.
func (p *Proxy) Rejected() uint64 { return p.rejected.Load() }

// isDialError reports whether err happened while connecting, so nothing of
// the request reached the backend and it is safe to try another one.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// failureOf names why a round trip to a backend failed. A dial that timed
// out is a connect failure: the backend never saw the request.
func failureOf(err error) Failure {
	if isDialError(err) {
		return Connect
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	return Transport
}
