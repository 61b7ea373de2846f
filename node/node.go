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
	"os"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/thebalancer/balancer/breaker"
	"github.com/thebalancer/balancer/node/admin"
	"github.com/thebalancer/balancer/proxy"
)

// MaxWeight is the largest backend weight accepted anywhere (flags, API,
// Consul). 0 means no new traffic.
const MaxWeight = 10000

// idPattern is the character set of backend IDs: they appear in URLs,
// metric labels and logs, so nothing that needs escaping.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Config configures a node.
type Config struct {
	Name     string               // unique node name
	Listen   string               // client traffic listener, HOST:PORT
	Admin    string               // admin API listener, HOST:PORT
	DataDir  string               // state on disk; created if missing
	Backends []proxy.Backend      // static backends
	Proxy    proxy.Config         // mode, algorithm, timeouts
	Breaker  breaker.Config       // circuit thresholds
	Logger   *slog.Logger         // nil: discard
	Registry *prometheus.Registry // nil: a fresh one per node
	// Pprof serves the Go profiler on the admin listener.
	Pprof bool
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// after a stop signal before their connections are closed.
	ShutdownTimeout time.Duration
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
		ShutdownTimeout: 15 * time.Second,
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
	if c.DataDir == "" {
		return errors.New("-data-dir: a directory is required")
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("-shutdown-timeout %v: must be positive", c.ShutdownTimeout)
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
	return c.Breaker.Validate()
}

// ValidateBackend checks one backend's id, address and weight.
func ValidateBackend(b proxy.Backend) error {
	if !idPattern.MatchString(b.ID) {
		return fmt.Errorf("backend id %q: want 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", b.ID)
	}
	if err := validateHostPort("backend "+b.ID+" address", b.Address); err != nil {
		return err
	}
	if _, port, _ := net.SplitHostPort(b.Address); port == "0" {
		return fmt.Errorf("backend %s address %q: port 0 is not a backend", b.ID, b.Address)
	}
	if h, _, _ := net.SplitHostPort(b.Address); h == "" {
		return fmt.Errorf("backend %s address %q: a host is required", b.ID, b.Address)
	}
	if b.Weight < 0 || b.Weight > MaxWeight {
		return fmt.Errorf("backend %s weight %d: want 0..%d", b.ID, b.Weight, MaxWeight)
	}
	return nil
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

	traffic net.Listener
	adminLn net.Listener

	draining atomic.Bool

	mu       sync.Mutex      // guards backends
	backends []proxy.Backend // the applied config, sorted by ID
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
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("-data-dir: %w", err)
	}
	n := &Node{cfg: cfg, log: log, registry: cfg.Registry}
	if n.registry == nil {
		n.registry = prometheus.NewRegistry()
		registerRuntime(n.registry)
	}
	var err error
	n.breakers, err = breaker.NewSet(cfg.Name, cfg.Breaker, n.circuitChanged)
	if err != nil {
		return nil, err
	}
	n.proxy, err = proxy.New(cfg.Proxy, func(id string) proxy.Circuit { return n.breakers.Circuit(id) }, log)
	if err != nil {
		return nil, err
	}
	if err := n.registry.Register(newCollector(n)); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	if n.traffic, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("-listen: %w", err)
	}
	if n.adminLn, err = net.Listen("tcp", cfg.Admin); err != nil {
		n.traffic.Close()
		return nil, fmt.Errorf("-admin: %w", err)
	}
	n.setBackends(cfg.Backends)
	return n, nil
}

// Addr is the bound traffic address.
func (n *Node) Addr() string { return n.traffic.Addr().String() }

// AdminAddr is the bound admin address.
func (n *Node) AdminAddr() string { return n.adminLn.Addr().String() }

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Run serves until ctx ends, then shuts down gracefully: readiness fails
// first, the traffic listener stops accepting, in-flight requests get up to
// ShutdownTimeout to finish, and the admin API stops last. It returns nil
// after a clean shutdown.
func (n *Node) Run(ctx context.Context) error {
	n.log.Info("node started", "listen", n.Addr(), "admin", n.AdminAddr(),
		"mode", n.cfg.Proxy.Mode, "algorithm", n.cfg.Proxy.Algorithm, "backends", len(n.cfg.Backends))

	bctx, stopBreakers := context.WithCancel(context.Background())
	defer stopBreakers()
	breakersDone := make(chan error, 1)
	go func() { breakersDone <- n.breakers.Run(bctx) }()

	adminSrv := &http.Server{
		Handler:           admin.NewHandler(n.adminSources()),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := n.serveTraffic(gctx)
		// The admin API stays up while traffic drains, so that operators
		// can watch the drain; it stops once traffic has.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = adminSrv.Shutdown(sctx)
		return err
	})
	g.Go(func() error {
		if err := adminSrv.Serve(n.adminLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin server: %w", err)
		}
		return nil
	})
	err := g.Wait()
	stopBreakers()
	<-breakersDone
	if err != nil {
		return err
	}
	n.log.Info("node stopped")
	return nil
}

// serveTraffic runs the client listener until ctx ends and then drains it.
func (n *Node) serveTraffic(ctx context.Context) error {
	if n.cfg.Proxy.Mode == proxy.ModeTCP {
		err := n.proxy.ServeTCP(ctx, n.traffic, n.cfg.ShutdownTimeout)
		n.draining.Store(true)
		return err
	}
	srv := &http.Server{
		Handler:           n.proxy,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(n.traffic) }()
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
	n.refreshRoutes()
}

// refreshRoutes rebuilds the proxy's routing table from the applied config
// and the circuit states. Called on the cold path: config changes and
// circuit transitions.
func (n *Node) refreshRoutes() {
	n.mu.Lock()
	defer n.mu.Unlock()
	routes := make([]proxy.Route, len(n.backends))
	for i, b := range n.backends {
		st := n.breakers.Circuit(b.ID).State()
		routes[i] = proxy.Route{Backend: b, Down: st != breaker.Closed, Trial: st == breaker.HalfOpen}
	}
	n.proxy.SetRoutes(routes)
}

// circuitChanged is the breaker's transition callback.
func (n *Node) circuitChanged(backend string, from, to breaker.State) {
	level := slog.LevelInfo
	if to == breaker.Open {
		level = slog.LevelWarn
	}
	n.log.Log(context.Background(), level, "circuit "+to.String(), "backend", backend, "from", from.String())
	n.refreshRoutes()
}
