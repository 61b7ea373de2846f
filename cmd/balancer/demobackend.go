package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/thebalancer/balancer/bench/backend"
)

func runDemoBackend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := backend.DefaultConfig()
	fs := flag.NewFlagSet("balancer demo-backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "listen `HOST:PORT` (port 0 picks a free one)")
	fs.StringVar(&cfg.Name, "name", cfg.Name, "`name` to answer with (default: the bound address)")
	fs.StringVar(&cfg.Mode, "mode", cfg.Mode, "`mode`: http, or tcp (greets with its name, then echoes)")
	fs.DurationVar(&cfg.Delay, "delay", cfg.Delay, "service time per request (http) or before the greeting (tcp)")
	fs.DurationVar(&cfg.Jitter, "jitter", cfg.Jitter, "random extra service time, uniform in 0..jitter")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "requests served at once; the rest wait in a queue (0 = unlimited)")
	fs.Float64Var(&cfg.FailRate, "fail-rate", cfg.FailRate, "fraction of requests answered 500 (0..1)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: balancer demo-backend [flags]\n\nA synthetic backend with finite capacity, for demos, tests and the benchmark.\nQuery parameters override per request: sleep=DURATION size=BYTES status=CODE.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	srv, err := backend.New(cfg)
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintf(stdout, "demo backend %s listening on %s (%s)\n", cfg.Name, srv.Addr(), cfg.Mode)
	return srv.Run(ctx)
}
