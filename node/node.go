// Package node assembles one balancer agent: it is the only package that
// wires the proxy, the circuit breakers and the admin API together (and
// later gossip and consensus). It translates between their vocabularies on
// the cold path — config and circuit states into proxy routes, proxy
// counters into admin answers and metrics — and owns the start and stop order.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"

	"github.com/thebalancer/balancer/breaker"
	"github.com/thebalancer/balancer/consensus"
	"github.com/thebalancer/balancer/gossip"
	"github.com/thebalancer/balancer/node/admin"
	"github.com/thebalancer/balancer/proxy"
)

// MaxWeight is the largest backend weight accepted anywhere (flags, API,
// Consul). 0 means no new traffic.
const MaxWeight = consensus.MaxWeight

// Config configures a node.
type Config struct {
	Name   string // unique node name
	Listen string // client traffic listener, HOST:PORT
	Admin  string // admin API listener, HOST:PORT
	// AdminAdvertise is the admin HOST:PORT peers forward writes to, when
	// the listener's own address is not one they can dial (a wildcard
	// bind, a container with several networks). Empty: the bound address.
	AdminAdvertise string
	DataDir        string               // state on disk; created if missing
	Backends       []proxy.Backend      // static backends
	Proxy          proxy.Config         // mode, algorithm, timeouts
	Breaker        breaker.Config       // circuit thresholds
	Logger         *slog.Logger         // nil: discard
	Registry       *prometheus.Registry // nil: a fresh one per node
	// Gossip joins the node to a cluster when Gossip.Bind is set (-gossip);
	// Name, Logger and Meta are filled in by the node.
	Gossip gossip.Config
	// Routes tunes how peers' reports and circuits enter routing.
	Routes RouteConfig
	// Raft configures the replicated config's raft node (-raft); NodeID,
	// DataDir and Logger are filled in by the node. Without -gossip the
	// default 127.0.0.1:0 serves a lone node that bootstraps alone.
	Raft consensus.Options
	// BootstrapExpect is -bootstrap-expect: how many servers form the
	// cluster at first start (0: never bootstrap, wait to be added).
	BootstrapExpect int
	// ReapAfter is -raft-reap-after: a raft server whose gossip member has
	// been dead (or gone from gossip) this long is removed from the raft
	// configuration by the leader, as long as minVoters remain, so a node
	// lost for good stops counting towards quorum once a replacement has
	// joined. 0 disables reaping.
	ReapAfter time.Duration
	// AdminToken, when set, is required as a bearer token on admin writes.
	AdminToken string
	// TLS serves the admin API over HTTPS (-tls-cert, -tls-key) and with a
	// CA requires client certificates from it (-tls-ca). Followers forward
	// writes to an HTTPS leader with the same certificate, trusting the CA.
	TLS TLSFiles
	// RaftTLS runs raft over mutual TLS (-raft-tls-cert, -raft-tls-key,
	// -raft-tls-ca): all three or none, the same on every node.
	RaftTLS TLSFiles
	// Consul seeds and syncs backends from Consul (-consul-service, -consul-kv).
	Consul ConsulConfig
	// Pprof serves the Go profiler on the admin listener.
	Pprof bool
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// after a stop signal before their connections are closed.
	ShutdownTimeout time.Duration
	// AdminLimits bounds slow, idle and numerous admin clients.
	AdminLimits AdminLimits
	// RaftLoopbackOK and AdminLoopbackOK accept a loopback raft or admin
	// address next to a gossip address other hosts can reach, which is
	// otherwise refused: peers would dial their own loopback. Set them
	// when the operator chose the address (every node on one host); the
	// node then only warns.
	RaftLoopbackOK, AdminLoopbackOK bool
}

// AdminLimits bounds what an admin client may hold on to. There is no
// bound on writing an answer: long polls (GET /v1/config?wait=),
// writes with wait=applied and /debug/pprof/profile?seconds=N legitimately
// take minutes.
type AdminLimits struct {
	// HeaderTimeout bounds the arrival of a request's headers.
	HeaderTimeout time.Duration
	// BodyTimeout bounds the arrival of a request's body: headers and
	// body together get HeaderTimeout+BodyTimeout. A client that stalls
	// mid-body gets a 400 and its connection is closed.
	BodyTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle between requests.
	IdleTimeout time.Duration
	// MaxConns is the most admin connections open at once; further ones
	// wait in the listen backlog until one closes. 0: no limit.
	MaxConns int
}

// DefaultAdminLimits returns the admin listener's bounds.
func DefaultAdminLimits() AdminLimits {
	return AdminLimits{HeaderTimeout: 10 * time.Second, BodyTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, MaxConns: 256}
}

// Validate reports the first bad bound.
func (l AdminLimits) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"header", l.HeaderTimeout}, {"body", l.BodyTimeout}, {"idle", l.IdleTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("admin %s timeout %v: must be positive", d.name, d.v)
		}
	}
	if l.MaxConns < 0 {
		return fmt.Errorf("admin max conns %d: must be 0 (no limit) or positive", l.MaxConns)
	}
	return nil
}

// DefaultConfig returns the settings a node starts from.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Name:            host,
		Listen:          ":8080",
		Admin:           "127.0.0.1:9090",
		DataDir:         "balancer-data",
		Proxy:           proxy.DefaultConfig(),
		Breaker:         breaker.DefaultConfig(),
		Gossip:          gossipDefaults(),
		Routes:          DefaultRouteConfig(),
		Raft:            consensus.DefaultOptions(),
		ShutdownTimeout: 15 * time.Second,
		AdminLimits:     DefaultAdminLimits(),
	}
}

// Validate reports the first bad setting, naming its flag.
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("-node: a node name is required")
	}
	if err := validateHostPort("-listen", c.Listen); err != nil {
		return err
	}
	if err := validateHostPort("-admin", c.Admin); err != nil {
		return err
	}
	if c.AdminAdvertise != "" {
		if err := validateHostPort("-admin-advertise", c.AdminAdvertise); err != nil {
			return err
		}
		if wildcardHost(c.AdminAdvertise) {
			return fmt.Errorf("-admin-advertise %q: peers cannot dial a wildcard address", c.AdminAdvertise)
		}
	} else if c.clustered() && wildcardHost(c.Admin) {
		// Peers forward writes to the advertised admin address; a wildcard
		// one would reach the forwarding node itself.
		return fmt.Errorf("-admin %q: peers cannot dial a wildcard address; bind a specific IP or set -admin-advertise", c.Admin)
	}
	if _, err := c.checkAdvertised(); err != nil {
		return err
	}
	if c.DataDir == "" {
		return errors.New("-data-dir: a directory is required")
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("-shutdown-timeout %v: must be positive", c.ShutdownTimeout)
	}
	if err := c.AdminLimits.Validate(); err != nil {
		return err
	}
	seen := make(map[string]bool)
	for _, b := range c.Backends {
		if err := ValidateBackend(b); err != nil {
			return fmt.Errorf("-backend: %w", err)
		}
		if seen[b.ID] {
			return fmt.Errorf("-backend: backend id %q given twice", b.ID)
		}
		seen[b.ID] = true
	}
	if err := c.Proxy.Validate(); err != nil {
		return err
	}
	if err := c.Routes.Validate(); err != nil {
		return err
	}
	if d := c.Routes.DisputeAfter; d != 0 && d < c.Breaker.SleepWindow {
		// Shorter, and peers would try a sick backend before its opener
		// had its one trial: every node's request instead of one.
		return fmt.Errorf("-breaker-dispute-after %v: want 0 (%d × -breaker-sleep) or at least -breaker-sleep %v",
			d, DefaultDisputeFactor, c.Breaker.SleepWindow)
	}
	if c.clustered() {
		g := c.Gossip
		g.Name = c.Name
		if err := g.Validate(); err != nil {
			return err
		}
	} else if len(c.Gossip.Join) > 0 {
		return errors.New("-join needs -gossip: the address this node gossips on")
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 9 {
		return fmt.Errorf("-bootstrap-expect %d: want 0..9 (raft clusters of 3 or 5 voters are the norm)", c.BootstrapExpect)
	}
	if c.ReapAfter < 0 {
		return fmt.Errorf("-raft-reap-after %v: must be 0 (never) or positive", c.ReapAfter)
	}
	if c.BootstrapExpect > 1 && !c.clustered() {
		return fmt.Errorf("-bootstrap-expect %d needs -gossip: founders find each other by gossip", c.BootstrapExpect)
	}
	r := c.Raft
	r.NodeID, r.DataDir = c.Name, c.DataDir
	r.TLS = nil // checked as files by validateRaft; loaded in New
	if err := r.Validate(); err != nil {
		return err
	}
	if err := c.Consul.Validate(); err != nil {
		return err
	}
	if err := c.TLS.validateAdmin(); err != nil {
		return err
	}
	if err := c.RaftTLS.validateRaft(); err != nil {
		return err
	}
	return c.Breaker.Validate()
}

// clustered reports whether the node gossips with peers.
func (c Config) clustered() bool { return c.Gossip.Bind != "" }

// wildcardHost reports whether HOST:PORT names no host (":9090") or an
// unspecified address (0.0.0.0, ::, [::0]).
func wildcardHost(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(h)
	return h == "" || err == nil && ip.IsUnspecified()
}

// gossipDefaults is gossip's defaults with the cluster off until -gossip.
func gossipDefaults() gossip.Config {
	g := gossip.DefaultConfig()
	g.Bind = ""
	return g
}

// ValidateBackend checks one backend's id, address and weight by the
// replicated config's rules, so that a static seed the node accepts is one
// raft accepts too.
func ValidateBackend(b proxy.Backend) error {
	return consensus.ValidateBackend("backend", consensus.Backend{ID: b.ID, Address: b.Address, Weight: b.Weight})
}

func validateHostPort(what, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want HOST:PORT: %w", what, addr, err)
	}
	if n, err := net.LookupPort("tcp", port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s %q: bad port", what, addr)
	}
	return nil
}

// Node is one running balancer agent.
type Node struct {
	cfg      Config
	log      *slog.Logger
	proxy    *proxy.Proxy
	breakers *breaker.Set
	registry *prometheus.Registry

	traffic  net.Listener
	adminLn  net.Listener
	tls      tlsState
	reloadMu sync.Mutex // serialises ReloadTLS

	gossip *gossip.Gossip // nil without -gossip
	// The members remembered for a restart (the consensus loop's alone),
	// and the newest list for the saver to write.
	known     map[string]knownPeer
	peersSave chan map[string]knownPeer
	tooMany   string // the bootstrap candidates last warned about
	store     *consensus.Store
	consul    consulSource // nil without -consul-service / -consul-kv

	// routed is the committed config the proxy routes on, set once the
	// routing table has it (consensus loop); nil before the first.
	routed atomic.Pointer[consensus.Config]

	metaMu   sync.Mutex        // guards lastMeta
	lastMeta map[string]string // gossip metadata last advertised

	refusedMu sync.Mutex        // guards refused
	refused   map[string]string // member -> raft address and reason it is not a voter, logged once

	reapMu  sync.Mutex           // guards missing; reconcileVoters runs from two goroutines
	missing map[string]time.Time // raft server -> when the leader first saw it dead or gone
	kept    map[string]bool      // dead servers kept for quorum's sake, warned about once

	draining atomic.Bool

	window *trafficWindow // recent rate and p99 per backend, for /v1/status

	transMu     sync.Mutex               // guards transitions
	transitions map[transitionKey]uint64 // circuit transitions since start, for metrics

	mu       sync.Mutex           // guards the fields below
	backends []proxy.Backend      // the applied config, sorted by ID
	routes   *routeState          // what route computation remembers
	lastOK   map[string]time.Time // last successful answer per backend through this node
	okCount  map[string]uint64    // successes seen at the last tick, per backend
	latency  map[string]float64   // EWMA response time per backend, seconds
	latSeen  map[string]latencyMark
	own      []ownSample // this node's counts at recent ticks, oldest first
}

// New validates cfg, prepares the data directory and binds the listeners,
// so that every configuration error (a port in use among them) surfaces
// before Run.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.Name)
	if warn, _ := cfg.checkAdvertised(); len(warn) > 0 {
		log.Warn("peers on other hosts cannot reach this node: loopback address next to a routable gossip address", "addresses", strings.Join(warn, ", "))
	}
	adminCerts, raftCerts, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("-data-dir: %w", err)
	}
	n := &Node{cfg: cfg, log: log, registry: cfg.Registry, routes: newRouteState(),
		lastOK: make(map[string]time.Time), okCount: make(map[string]uint64),
		latency: make(map[string]float64), latSeen: make(map[string]latencyMark),
		window: newTrafficWindow(500*time.Millisecond, 10*time.Second), transitions: make(map[transitionKey]uint64),
		known: make(map[string]knownPeer), peersSave: make(chan map[string]knownPeer, 1)}
	n.tls.admin.Store(adminCerts)
	n.tls.raft.Store(raftCerts)
	if n.registry == nil {
		n.registry = prometheus.NewRegistry()
		registerRuntime(n.registry)
	}
	n.breakers, err = breaker.NewSet(cfg.Name, cfg.Breaker, n.circuitChanged)
	if err != nil {
		return nil, err
	}
	n.proxy, err = proxy.New(cfg.Proxy, func(id string) proxy.Circuit { return n.breakers.Circuit(id) }, log)
	if err != nil {
		return nil, err
	}
	if n.traffic, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("-listen: %w", err)
	}
	if n.adminLn, err = net.Listen("tcp", cfg.Admin); err != nil {
		n.traffic.Close()
		return nil, fmt.Errorf("-admin: %w", err)
	}
	ro := cfg.Raft
	// raft and memberlist log a line per malformed packet or connection:
	// what peers and strangers can send must not decide the log's size.
	libLog := slog.New(newThrottle(log.Handler(), time.Minute, 5, 100))
	ro.NodeID, ro.DataDir, ro.Logger = cfg.Name, cfg.DataDir, libLog.With("part", "raft")
	if raftCerts != nil {
		ro.TLS = raftCerts.cfg
	}
	if n.store, err = consensus.Open(ro); err != nil {
		n.traffic.Close()
		n.adminLn.Close()
		return nil, err
	}
	if n.consul, err = newConsulSource(cfg.Consul, log); err != nil {
		n.close()
		return nil, err
	}
	if cfg.clustered() {
		gc := cfg.Gossip
		gc.Name = cfg.Name
		gc.Logger = libLog.With("part", "gossip")
		gc.Meta = n.meta()
		gc.Cluster = n.store.ClusterID
		known, err := loadPeers(cfg.DataDir, time.Now())
		if err != nil {
			log.Warn("cannot read the members remembered from the last run; only -join will find the cluster", "err", err)
		}
		if known != nil {
			n.known = known
		}
		gc.Rejoin = rejoinAddrs(n.known)
		if n.gossip, err = gossip.New(gc); err != nil {
			n.close()
			return nil, fmt.Errorf("-gossip: %w", err)
		}
	}
	// Registered last: a scrape reads the store and gossip, so they must
	// exist before a shared registry can call in.
	if err := n.registry.Register(newCollector(n)); err != nil {
		if n.gossip != nil {
			n.gossip.Close()
		}
		n.close()
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	// Route on the last committed config at once (a restarted node has it
	// from its snapshot); a fresh node routes on its -backend seed until
	// the first commit.
	if n.store.Config().Index > 0 {
		n.applyReplicated()
	} else {
		n.setBackends(cfg.Backends)
	}
	return n, nil
}

// close releases what New acquired, for New's error paths.
func (n *Node) close() {
	n.traffic.Close()
	n.adminLn.Close()
	if n.store != nil {
		n.store.Close()
	}
}

// GossipAddr is the bound gossip address, or "" without a cluster.
func (n *Node) GossipAddr() string {
	if n.gossip == nil {
		return ""
	}
	return n.gossip.Addr()
}

// Addr is the bound traffic address.
func (n *Node) Addr() string { return n.traffic.Addr().String() }

// AdminAddr is the bound admin address.
func (n *Node) AdminAddr() string { return n.adminLn.Addr().String() }

// adminAdvertised is the admin address peers and `balancer members` see:
// -admin-advertise or the bound HOST:PORT, as https://HOST:PORT with TLS so
// that followers forward with the right scheme.
func (n *Node) adminAdvertised() string {
	addr := n.cfg.AdminAdvertise
	if addr == "" {
		addr = n.AdminAddr()
	}
	if n.tls.admin.Load() != nil {
		return "https://" + addr
	}
	return addr
}

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Run serves until ctx ends, then shuts down gracefully: readiness fails
// first, the traffic listener stops accepting, in-flight requests get up to
// ShutdownTimeout to finish, and the admin API stops last. It returns nil
// after a clean shutdown.
func (n *Node) Run(ctx context.Context) error {
	n.log.Info("node started", "listen", n.Addr(), "admin", n.AdminAddr(), "gossip", n.GossipAddr(),
		"raft", n.store.RaftAddr(), "mode", n.cfg.Proxy.Mode, "algorithm", n.cfg.Proxy.Algorithm)

	// The parts behind the traffic listener outlive it: peers keep seeing
	// this node's counts while it drains, and it hands over raft leadership
	// and leaves the cluster only once it has. They stop in reverse order.
	bctx, stopBreakers := context.WithCancel(context.Background())
	defer stopBreakers()
	breakersDone := make(chan error, 1)
	go func() { breakersDone <- n.breakers.Run(bctx) }()

	lctx, stopLoops := context.WithCancel(context.Background())
	defer stopLoops()
	var loops sync.WaitGroup
	loops.Add(2)
	go func() { defer loops.Done(); n.syncLoop(lctx) }()
	go func() { defer loops.Done(); n.consensusLoop(lctx) }()

	gsctx, stopGossip := context.WithCancel(context.Background())
	defer stopGossip()
	gossipExit := make(chan struct{})
	var gossipErr error
	if n.gossip != nil {
		go func() { gossipErr = n.gossip.Run(gsctx); close(gossipExit) }()
	}

	// Long polls on the admin API end (answering the current config) when
	// the node stops, instead of holding Shutdown for their full wait.
	adminBase, stopAdminPolls := context.WithCancel(context.Background())
	defer stopAdminPolls()
	lim := n.cfg.AdminLimits
	adminSrv := newAdminServer(admin.NewHandler(n.adminSources()), lim)
	adminSrv.BaseContext = func(net.Listener) context.Context { return adminBase }
	adminSrv.ErrorLog = slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)
	adminSrv.TLSConfig = n.tls.adminServer()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// A gossip failure (a join that never succeeds) stops the node.
		select {
		case <-gossipExit:
			return gossipErr
		case <-gctx.Done():
			return nil
		}
	})
	g.Go(func() error {
		err := n.serveTraffic(gctx)
		// The admin API stays up while traffic drains, so that operators
		// can watch the drain; it stops once traffic has.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		stopAdminPolls()
		_ = adminSrv.Shutdown(sctx)
		return err
	})
	g.Go(func() error {
		ln := n.adminLn
		if lim.MaxConns > 0 {
			ln = netutil.LimitListener(ln, lim.MaxConns)
		}
		var err error
		if adminSrv.TLSConfig != nil {
			err = adminSrv.ServeTLS(ln, "", "")
		} else {
			err = adminSrv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin server: %w", err)
		}
		return nil
	})
	err := g.Wait()

	stopLoops()
	loops.Wait()
	n.transferLeadership()
	if n.gossip != nil {
		stopGossip()
		<-gossipExit
	}
	if cerr := n.store.Close(); cerr != nil {
		n.log.Warn("close raft store", "err", cerr)
	}
	stopBreakers()
	<-breakersDone
	if err != nil {
		return err
	}
	n.log.Info("node stopped")
	return nil
}

// newAdminServer bounds the admin listener's clients by lim. It sets no
// WriteTimeout: long polls, writes with wait=applied and
// /debug/pprof/profile?seconds=N take minutes to answer. ReadTimeout does
// not cut them: net/http lifts the read deadline once a request's body has
// been read, to watch for the client going away.
func newAdminServer(h http.Handler, lim AdminLimits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.HeaderTimeout,
		ReadTimeout:       lim.HeaderTimeout + lim.BodyTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
}

// serveTraffic runs the client listener until ctx ends and then drains it.
func (n *Node) serveTraffic(ctx context.Context) error {
	// Readiness fails as soon as the stop begins, before the drain.
	stop := context.AfterFunc(ctx, func() { n.draining.Store(true) })
	defer stop()
	ln := n.proxy.Limit(n.traffic)
	if n.cfg.Proxy.Mode == proxy.ModeTCP {
		return n.proxy.ServeTCP(ctx, ln, n.cfg.ShutdownTimeout)
	}
	srv := &http.Server{
		Handler:           n.proxy,
		ReadHeaderTimeout: n.cfg.Proxy.HeaderTimeout,
		IdleTimeout:       n.cfg.Proxy.KeepAliveTimeout,
		// Bounds a client's header bytes as well as its time: 64 KiB is
		// far above real requests and keeps 10,000 connections' worth of
		// header buffers small.
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("traffic server: %w", err)
	case <-ctx.Done():
	}
	n.draining.Store(true)
	n.log.Info("shutting down: draining in-flight requests", "timeout", n.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		n.log.Warn("drain timed out: closing remaining connections", "err", err)
		srv.Close()
	}
	<-errc
	n.proxy.CloseIdle()
	return nil
}

// setBackends applies a backend config and rebuilds the routes.
func (n *Node) setBackends(bs []proxy.Backend) {
	sorted := append([]proxy.Backend(nil), bs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	n.mu.Lock()
	old := n.backends
	n.backends = sorted
	n.mu.Unlock()
	keep := make(map[string]bool, len(sorted))
	for _, b := range sorted {
		keep[b.ID] = true
	}
	for _, b := range old {
		if !keep[b.ID] {
			n.breakers.Remove(b.ID)
		}
	}
	// A removed backend's transition counters go with it, so churn in the
	// backend set does not grow the metrics without bound.
	n.transMu.Lock()
	for k := range n.transitions {
		if !keep[k.backend] {
			delete(n.transitions, k)
		}
	}
	n.transMu.Unlock()
	n.refreshRoutes()
}

// refreshRoutes rebuilds the proxy's routing table from the applied config,
// the circuit states and the peers' reports. Called on the cold path:
// config changes, circuit transitions, gossip updates and the sync tick.
func (n *Node) refreshRoutes() {
	local := n.breakers.States()
	var peers []peerReport
	if n.gossip != nil {
		peers = peerReports(n.gossip.Peers(), time.Now())
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	routes := computeRoutes(routeInputs{
		now:      time.Now(),
		self:     n.cfg.Name,
		backends: n.backends,
		local:    local,
		lastOK:   n.lastOK,
		latency:  n.latency,
		peers:    peers,
		own:      n.own,
		params:   n.cfg.Routes.params(n.cfg.Breaker.SleepWindow, n.cfg.Gossip),
	}, n.routes)
	n.proxy.SetRoutes(routes)
}

// transitionKey is one kind of circuit transition of one backend.
type transitionKey struct {
	backend  string
	from, to breaker.State
}

// circuitChanged is the breaker's transition callback.
func (n *Node) circuitChanged(backend string, from, to breaker.State) {
	level := slog.LevelInfo
	if to == breaker.Open {
		level = slog.LevelWarn
	}
	n.log.Log(context.Background(), level, "circuit "+to.String(), "backend", backend, "from", from.String())
	n.transMu.Lock()
	n.transitions[transitionKey{backend, from, to}]++
	n.transMu.Unlock()
	n.refreshRoutes()
}
