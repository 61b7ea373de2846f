// Package bench is the benchmark harness behind `balancer bench`: it starts
// synthetic backends in-process (bench/backend) and K balancer nodes as real
// processes (re-executing the balancer binary as `agent`), drives closed- or
// open-loop HTTP load through every node, and reports throughput, latency
// percentiles, how evenly load was spread over the backends and how stale
// the gossip view was, per balancing algorithm, next to a direct-to-backends
// baseline (and optionally HAProxy).
//
// It imports proxy/pick (policy names), node/admin (client) and
// bench/backend, and the standard library only; never node or the cluster
// packages: the nodes it measures are separate processes.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thebalancer/balancer/proxy/pick"
)

// Config is one benchmark. Start from DefaultConfig.
type Config struct {
	// Binary is the balancer executable run as `agent` for each node.
	Binary string
	// Nodes and Backends are how many balancer nodes and demo backends.
	Nodes, Backends int
	// Profile names the scenario; see Profiles.
	Profile string
	// Algorithms run in this order, each on a freshly started cluster.
	Algorithms []string
	// Duration is the measured time per algorithm; Warmup precedes it.
	// Zero means the profile's default (shorter with Quick).
	Duration, Warmup time.Duration
	// Rate > 0 selects the open loop at this many requests/s in total;
	// otherwise Concurrency closed-loop clients (0: the profile's default).
	Rate        float64
	Concurrency int
	// Out is the directory for results.json, report.html and node logs.
	Out string
	// Quick shortens every run so the whole benchmark takes under two
	// minutes; every algorithm still runs.
	Quick bool
	// Targets, when set, are traffic listeners (HOST:PORT) of an existing
	// cluster: no cluster or backends are started, one run is made, and
	// no backend-side figures are available.
	Targets []string
	// Compare "haproxy" adds a run through one HAProxy (balance leastconn).
	Compare string
	// Stdout receives the table; Progress the progress line and notes.
	Stdout, Progress io.Writer
}

// DefaultConfig returns 3 nodes, 4 backends, the uniform profile and every
// algorithm.
func DefaultConfig() Config {
	return Config{
		Nodes:      3,
		Backends:   4,
		Profile:    "uniform",
		Algorithms: pick.Names(),
		Stdout:     io.Discard,
		Progress:   io.Discard,
	}
}

// Validate reports every invalid field; messages name the flag.
func (c Config) Validate() error {
	var errs []error
	if len(c.Targets) == 0 {
		if c.Binary == "" {
			errs = append(errs, errors.New("bench: no balancer binary to run as agents"))
		}
		if c.Nodes < 1 || c.Nodes > 16 {
			errs = append(errs, fmt.Errorf("-nodes must be 1..16, got %d", c.Nodes))
		}
		if c.Backends < 1 || c.Backends > 64 {
			errs = append(errs, fmt.Errorf("-backends must be 1..64, got %d", c.Backends))
		}
		if len(c.Algorithms) == 0 {
			errs = append(errs, errors.New("-algorithms: at least one is needed"))
		}
		for _, a := range c.Algorithms {
			if !pick.Valid(a) {
				errs = append(errs, fmt.Errorf("-algorithms: unknown algorithm %q (want %v)", a, pick.Names()))
			}
		}
	}
	if _, ok := ProfileByName(c.Profile); !ok {
		errs = append(errs, fmt.Errorf("-profile %q: want one of %v", c.Profile, ProfileNames()))
	}
	if c.Duration < 0 || c.Warmup < 0 {
		errs = append(errs, errors.New("-duration and -warmup must be >= 0"))
	}
	if c.Rate < 0 || c.Rate > 200000 {
		errs = append(errs, fmt.Errorf("-rate must be 0..200000 requests/s, got %v", c.Rate))
	}
	if c.Concurrency < 0 || c.Concurrency > 10000 {
		errs = append(errs, fmt.Errorf("-concurrency must be 0..10000, got %d", c.Concurrency))
	}
	switch c.Compare {
	case "", "haproxy":
	default:
		errs = append(errs, fmt.Errorf("-compare %q: only \"haproxy\" is supported", c.Compare))
	}
	if c.Out == "" {
		errs = append(errs, errors.New("-out: an output directory is needed"))
	}
	return errors.Join(errs...)
}

// Results is everything one benchmark measured; results.json holds it.
type Results struct {
	Started     time.Time     `json:"started"`
	Profile     string        `json:"profile"`
	ProfileHelp string        `json:"profile_help"`
	Nodes       int           `json:"nodes"`
	Mode        string        `json:"mode"` // "closed" or "open"
	Concurrency int           `json:"concurrency"`
	Rate        float64       `json:"rate"`
	DurationS   float64       `json:"duration_s"`
	WarmupS     float64       `json:"warmup_s"`
	Quick       bool          `json:"quick"`
	Targets     []string      `json:"targets"`
	Machine     Machine       `json:"machine"`
	Backends    []BackendSpec `json:"backends"`
	Runs        []Row         `json:"runs"`
	// Overhead compares the balancer with direct access on this run's
	// profile: throughput and p50 of the best algorithm (by requests/s)
	// over direct. Meaningful as "proxy overhead" on the uniform profile.
	Overhead *Overhead `json:"overhead"`
	Notes    []string  `json:"notes"`
}

// Machine says where the benchmark ran.
type Machine struct {
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	Hostname  string `json:"hostname"`
	// LoadAvgStart and LoadAvgEnd are the 1-minute load averages
	// (/proc/loadavg) before and after the benchmark, or -1 where unknown:
	// other work on the machine skews every figure.
	LoadAvgStart float64 `json:"load_avg_start"`
	LoadAvgEnd   float64 `json:"load_avg_end"`
}

// loadAvg reads the 1-minute load average, or -1.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// Overhead is the balancer's cost against direct backend access.
type Overhead struct {
	Algorithm string  `json:"algorithm"`
	RPSRatio  float64 `json:"rps_ratio"` // balancer requests/s ÷ direct
	P50Ratio  float64 `json:"p50_ratio"` // balancer p50 ÷ direct p50
}

// Row is one row: an algorithm through the cluster, the direct baseline,
// HAProxy, or an existing cluster (-targets).
type Row struct {
	Name string `json:"name"`
	// Kind is "balancer", "direct", "haproxy" or "targets".
	Kind       string         `json:"kind"`
	Requests   int            `json:"requests"` // measured, successful or not
	Errors     int            `json:"errors"`
	ErrorKinds map[string]int `json:"error_kinds"`
	// ErrorExamples holds the first error message of each kind.
	ErrorExamples []string `json:"error_examples"`
	RPS           float64  `json:"rps"` // successes completed in the window ÷ duration
	Latency       Latency  `json:"latency"`
	// Share is each backend's fraction of the successful requests (from the
	// X-Backend answer header); BackendRequests the counts.
	Share           map[string]float64 `json:"share"`
	BackendRequests map[string]int     `json:"backend_requests"`
	// Balance is null without backend-side sampling (-targets).
	Balance *Imbalance `json:"balance"`
	// Staleness is null for runs without balancer nodes to ask.
	Staleness *Staleness `json:"staleness"`
	// RPSvsDirect and P50vsDirect are this run over the direct baseline.
	RPSvsDirect float64    `json:"rps_vs_direct"`
	P50vsDirect float64    `json:"p50_vs_direct"`
	CDF         []CDFPoint `json:"cdf"`
	// InFlight is each backend's in-flight+queued over time (null without
	// backend-side sampling).
	InFlight *Series `json:"in_flight"`
	Error    string  `json:"error,omitempty"` // the run failed to start
}

// Series is per-backend samples at a fixed interval.
type Series struct {
	IntervalMS float64   `json:"interval_ms"`
	Backends   []string  `json:"backends"`
	Values     [][]int64 `json:"values"` // Values[t][b]
}

// harness is one Run of the benchmark.
type harness struct {
	cfg      Config
	prof     Profile
	backends []*backendProc
	specs    []BackendSpec
	res      *Results
	mode     string
}

// Run executes the benchmark described by cfg: it writes results.json,
// report.html and the node logs under cfg.Out, prints the table to
// cfg.Stdout, and returns the results. It blocks until done or ctx ends,
// and stops everything it started before it returns.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prof, _ := ProfileByName(cfg.Profile)
	if cfg.Duration == 0 {
		cfg.Duration = 20 * time.Second
		if cfg.Quick {
			cfg.Duration = 3 * time.Second
			if prof.SleepMax > 0 {
				cfg.Duration = 8 * time.Second
			}
		}
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = min(2*time.Second, cfg.Duration/5)
		if cfg.Quick {
			cfg.Warmup = 500 * time.Millisecond
		}
		if prof.SleepMax > 0 {
			cfg.Warmup = max(cfg.Warmup, prof.SleepMax/2)
		}
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = prof.Concurrency(cfg.Backends)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("-out %s: %w", cfg.Out, err)
	}
	host, _ := os.Hostname()
	h := &harness{cfg: cfg, prof: prof, mode: "closed"}
	if cfg.Rate > 0 {
		h.mode = "open"
	}
	h.res = &Results{
		Started: time.Now().UTC(), Profile: prof.Name, ProfileHelp: prof.Help, Nodes: cfg.Nodes,
		Mode: h.mode, Concurrency: cfg.Concurrency, Rate: cfg.Rate,
		DurationS: cfg.Duration.Seconds(), WarmupS: cfg.Warmup.Seconds(), Quick: cfg.Quick, Targets: cfg.Targets,
		Machine: Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Hostname: host},
		Runs:    []Row{}, Notes: []string{},
	}
	if h.mode == "open" {
		h.res.Concurrency = 0
	} else {
		h.res.Rate = 0
	}
	h.res.Machine.LoadAvgStart = loadAvg()
	if h.res.Machine.LoadAvgStart > float64(runtime.NumCPU()) {
		h.notef("the machine was busy before the benchmark (load average %.1f on %d CPUs): figures are skewed", h.res.Machine.LoadAvgStart, runtime.NumCPU())
	}
	err := h.run(ctx)
	h.res.Machine.LoadAvgEnd = loadAvg()
	if err == nil || len(h.res.Runs) > 0 {
		if werr := writeOutputs(cfg, h.res); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	return h.res, err
}

func (h *harness) notef(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.res.Notes = append(h.res.Notes, msg)
	fmt.Fprintln(h.cfg.Progress, "bench: "+msg)
}

func (h *harness) run(ctx context.Context) error {
	cfg := h.cfg
	if len(cfg.Targets) > 0 {
		h.notef("-targets: load goes to an existing cluster; no backends are started, so there is no backend-side sampling (balance, in-flight over time) and no staleness (no admin addresses); shares come from the X-Backend header")
		r := h.measure(ctx, "targets", "targets", cfg.Targets, nil, false)
		h.res.Runs = append(h.res.Runs, r)
		return ctx.Err()
	}
	h.specs = h.prof.Backends(cfg.Backends)
	for i := range h.specs {
		h.specs[i].DelayMS, h.specs[i].JitterMS = ms(h.specs[i].Delay), ms(h.specs[i].Jitter)
		b, err := startBackend(h.specs[i])
		if err != nil {
			h.stopBackends()
			return err
		}
		h.backends = append(h.backends, b)
		h.specs[i].Address = b.spec.Address
	}
	defer h.stopBackends()
	h.res.Backends = h.specs

	var addrs []string
	for _, s := range h.specs {
		addrs = append(addrs, s.Address)
	}
	direct := h.measure(ctx, "direct", "direct", addrs, nil, true)
	h.res.Runs = append(h.res.Runs, direct)
	if err := h.restoreBackends(); err != nil {
		return err
	}
	for i, alg := range cfg.Algorithms {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(cfg.Progress, "bench: [%d/%d] %s: starting %d nodes\n", i+1, len(cfg.Algorithms), alg, cfg.Nodes)
		dir := filepath.Join(cfg.Out, "nodes", alg)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		cl, err := startCluster(ctx, cfg.Binary, dir, cfg.Nodes, alg, h.specs)
		if err != nil {
			h.notef("%s: cluster failed to start: %v", alg, err)
			h.res.Runs = append(h.res.Runs, Row{Name: alg, Kind: "balancer", Error: err.Error()})
			continue
		}
		r := h.measure(ctx, alg, "balancer", cl.listens(), cl.admins(), false)
		if err := cl.stop(); err != nil {
			h.notef("%s: %v", alg, err)
		}
		h.res.Runs = append(h.res.Runs, r)
		if err := h.restoreBackends(); err != nil {
			return err
		}
	}
	if cfg.Compare == "haproxy" && ctx.Err() == nil {
		// One HAProxy as the single-proxy reference, and as many independent
		// HAProxies as the balancer has nodes — what operators run today for
		// availability — with the clients spread over them as over the nodes.
		counts := []int{1}
		if cfg.Nodes > 1 {
			counts = append(counts, cfg.Nodes)
		}
		for _, n := range counts {
			if ctx.Err() != nil {
				break
			}
			var procs []*haproxyProc
			var addrs []string
			for i := 0; i < n; i++ {
				dir := filepath.Join(cfg.Out, fmt.Sprintf("haproxy-%dof%d", i+1, n))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					h.notef("%v", err)
					break
				}
				hp, err := startHAProxy(ctx, dir, h.specs)
				if err != nil {
					h.notef("%v", err)
					break
				}
				procs = append(procs, hp)
				addrs = append(addrs, hp.Listen)
			}
			if len(procs) == n {
				name := "haproxy"
				if n > 1 {
					name = fmt.Sprintf("haproxy x%d", n)
				}
				h.res.Runs = append(h.res.Runs, h.measure(ctx, name, "haproxy", addrs, nil, false))
			}
			for _, hp := range procs {
				hp.stop()
			}
		}
	}
	h.finish(&direct)
	return ctx.Err()
}

// finish fills the ratios against the direct baseline and the overhead.
func (h *harness) finish(direct *Row) {
	var best *Row
	for i := range h.res.Runs {
		r := &h.res.Runs[i]
		if r.Kind == "direct" || r.Error != "" {
			continue
		}
		if direct.RPS > 0 {
			r.RPSvsDirect = r.RPS / direct.RPS
		}
		if direct.Latency.P50 > 0 {
			r.P50vsDirect = r.Latency.P50 / direct.Latency.P50
		}
		if r.Kind == "balancer" && (best == nil || r.RPS > best.RPS) {
			best = r
		}
	}
	if best != nil {
		h.res.Overhead = &Overhead{Algorithm: best.Name, RPSRatio: best.RPSvsDirect, P50Ratio: best.P50vsDirect}
	}
}

// restoreBackends restarts any backend a failing run crashed, on its address.
func (h *harness) restoreBackends() error {
	for _, b := range h.backends {
		if !b.alive() {
			if err := b.start(); err != nil {
				return fmt.Errorf("restart backend %s on %s: %w", b.spec.ID, b.spec.Address, err)
			}
		}
	}
	return nil
}

func (h *harness) stopBackends() {
	for _, b := range h.backends {
		if b.alive() {
			b.shutdown()
		}
	}
}

// measure drives one run of load at addrs and collects its figures.
func (h *harness) measure(ctx context.Context, name, kind string, addrs, admins []string, roundRobin bool) Row {
	cfg := h.cfg
	conns := cfg.Concurrency
	if cfg.Rate > 0 {
		conns = int(cfg.Rate/10) + 64
	}
	targets := make([]*target, len(addrs))
	for i, a := range addrs {
		targets[i] = newTarget(a, conns)
	}
	defer func() {
		for _, t := range targets {
			t.close()
		}
	}()
	weights := make([]float64, len(addrs))
	for i := range weights {
		weights[i] = 1
	}
	if kind == "balancer" || kind == "targets" {
		weights = h.prof.NodeSpread(len(addrs))
	}
	spec := &loadSpec{
		targets: targets, weights: weights, roundRobin: roundRobin,
		concurrency: cfg.Concurrency, rate: cfg.Rate,
		warmup: cfg.Warmup, duration: cfg.Duration,
		sleepMin: h.prof.SleepMin, sleepMax: h.prof.SleepMax, seed: 0x5eed,
	}

	// Samplers run over the measured window only.
	var wg sync.WaitGroup
	var samples [][]int64
	var stale *Staleness
	sctx, stopSamplers := context.WithCancel(ctx)
	defer stopSamplers()
	var rec atomic.Pointer[recorder]
	var killTimer *time.Timer
	var mu sync.Mutex // guards killTimer
	spec.onMeasure = func(start time.Time) {
		if len(h.backends) > 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				samples = sampleBackends(sctx, h.backends)
			}()
		}
		if len(admins) > 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stale = sampleStaleness(sctx, admins)
			}()
		}
		if h.prof.KillAt > 0 && len(h.backends) > 0 {
			victim := h.backends[len(h.backends)-1]
			mu.Lock()
			killTimer = time.AfterFunc(time.Duration(float64(cfg.Duration)*h.prof.KillAt), victim.crash)
			mu.Unlock()
		}
	}
	progressDone := make(chan struct{})
	progressStopped := make(chan struct{})
	started := time.Now()
	go func() {
		defer close(progressStopped)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		total := cfg.Warmup + cfg.Duration
		if !isTerminal(h.cfg.Progress) {
			// A log file gets one line per run (below), not a rewritten line.
			<-progressDone
			return
		}
		for {
			select {
			case <-progressDone:
				fmt.Fprintf(h.cfg.Progress, "\r%-100s\r", "")
				return
			case <-t.C:
				var done, errs int64
				if r := rec.Load(); r != nil {
					done, errs = r.done.Load(), r.errs.Load()
				}
				el := time.Since(started)
				fmt.Fprintf(h.cfg.Progress, "\rbench: %-22s %5.1fs/%.0fs  %8d req  %7.0f req/s  %5d errors ",
					name, el.Seconds(), total.Seconds(), done, float64(done)/el.Seconds(), errs)
			}
		}
	}()
	result := runLoadPublish(ctx, spec, &rec)
	stopSamplers()
	wg.Wait()
	mu.Lock()
	if killTimer != nil {
		killTimer.Stop()
	}
	mu.Unlock()
	close(progressDone)
	<-progressStopped

	r := Row{Name: name, Kind: kind, ErrorKinds: result.errKinds, ErrorExamples: result.examples, Share: map[string]float64{}, BackendRequests: result.byBackend}
	r.Requests = len(result.samples) + result.errorCount
	r.Errors = result.errorCount
	r.RPS = float64(result.inWindow) / cfg.Duration.Seconds()
	r.Latency = Summarize(result.samples)
	r.CDF = CDF(result.samples, 200)
	if ok := len(result.samples); ok > 0 {
		for b, n := range result.byBackend {
			r.Share[b] = float64(n) / float64(ok)
		}
	}
	for _, s := range h.specs {
		if _, seen := r.BackendRequests[s.ID]; !seen {
			r.BackendRequests[s.ID] = 0
			r.Share[s.ID] = 0
		}
	}
	if samples != nil {
		im := Balance(samples)
		r.Balance = &im
		ids := make([]string, len(h.specs))
		for i, s := range h.specs {
			ids[i] = s.ID
		}
		r.InFlight = &Series{IntervalMS: ms(sampleInterval), Backends: ids, Values: samples}
	}
	r.Staleness = stale
	fmt.Fprintf(h.cfg.Progress, "bench: %-22s %8d req  %7.0f req/s  p99 %7.1fms  %d errors\n", name, r.Requests, r.RPS, r.Latency.P99, r.Errors)
	return r
}

// runLoadPublish is runLoad, publishing the recorder for the progress line
// as soon as it exists.
func runLoadPublish(ctx context.Context, spec *loadSpec, p *atomic.Pointer[recorder]) *recorder {
	spec.publish = func(r *recorder) { p.Store(r) }
	return runLoad(ctx, spec)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// isTerminal reports whether w is a character device (a terminal), where a
// progress line can be rewritten in place with a carriage return.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
