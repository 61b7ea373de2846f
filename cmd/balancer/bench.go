package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/thebalancer/balancer/bench"
	"github.com/thebalancer/balancer/proxy/pick"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := bench.DefaultConfig()
	fs := flag.NewFlagSet("balancer bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var algorithms, targets string
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "balancer nodes to start (`K`), each a real `balancer agent` process")
	fs.IntVar(&cfg.Backends, "backends", cfg.Backends, "demo backends to start in-process (`M`)")
	fs.StringVar(&cfg.Profile, "profile", cfg.Profile, "load `profile`: "+strings.Join(bench.ProfileNames(), " | ")+" (see below)")
	fs.StringVar(&algorithms, "algorithms", strings.Join(cfg.Algorithms, ","), "comma-separated `list` of algorithms to compare, each on a fresh cluster over the same backends")
	fs.DurationVar(&cfg.Duration, "duration", 0, "measured time per algorithm (default 20s; -quick: 3s, 8s for long-requests)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "unmeasured warm-up before each run (default min(2s, duration/5); -quick: 0.5s; long-requests: at least 1s)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: send this many requests/s in total on a fixed schedule, latency measured from the scheduled time (no coordinated omission); 0: closed loop")
	fs.IntVar(&cfg.Concurrency, "concurrency", 0, "closed loop: concurrent clients spread over the nodes (0: the profile's default)")
	fs.StringVar(&cfg.Out, "out", "", "output `directory` for results.json, report.html and node logs (default bench-results/TIMESTAMP)")
	fs.BoolVar(&cfg.Quick, "quick", false, "short runs so the whole benchmark finishes in under 2 minutes; still every algorithm")
	fs.StringVar(&targets, "targets", "", "`HOST:PORT,...` traffic listeners of an existing cluster: start nothing, make one run (no backend-side sampling)")
	fs.StringVar(&cfg.Compare, "compare", "", "add a reference row: \"haproxy\" runs the same load through one HAProxy (balance leastconn) when haproxy is on PATH")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: balancer bench [flags]

Starts demo backends in-process and -nodes balancer agents (this binary,
re-executed) on 127.0.0.1, drives HTTP load through every node, and compares
the balancing algorithms on the same backends, next to a direct-to-backends
baseline. Prints a table (progress on stderr) and writes results.json and a
self-contained report.html (latency CDFs, per-backend in-flight over time).

Profiles:
`+bench.ProfileHelp()+`
Columns: requests/s, errors, latency percentiles, MAX/MEAN (busiest backend's
in-flight+queued over the mean, sampled every 50ms from the backends), gossip
staleness (oldest peer report age from each node's /metrics), each backend's
share, and throughput/p50 relative to direct.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	cfg.Algorithms = nil
	for _, a := range strings.Split(algorithms, ",") {
		if a = strings.TrimSpace(a); a != "" {
			if !pick.Valid(a) {
				return usagef("-algorithms: unknown algorithm %q (want %s)", a, strings.Join(pick.Names(), ", "))
			}
			cfg.Algorithms = append(cfg.Algorithms, a)
		}
	}
	for _, t := range strings.Split(targets, ",") {
		if t = strings.TrimSpace(t); t != "" {
			cfg.Targets = append(cfg.Targets, t)
		}
	}
	if cfg.Out == "" {
		cfg.Out = filepath.Join("bench-results", time.Now().Format("20060102-150405"))
	}
	if len(cfg.Targets) == 0 {
		bin, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own binary to run agents: %w", err)
		}
		cfg.Binary = bin
	}
	cfg.Stdout, cfg.Progress = stdout, stderr
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	_, err := bench.Run(ctx, cfg)
	return err
}
