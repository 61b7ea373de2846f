package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/thebalancer/balancer/node"
	"github.com/thebalancer/balancer/proxy"
	"github.com/thebalancer/balancer/proxy/pick"
)

// backendFlags collects repeatable -backend ID=HOST:PORT[@WEIGHT] values.
type backendFlags []proxy.Backend

func (b *backendFlags) String() string {
	parts := make([]string, len(*b))
	for i, x := range *b {
		parts[i] = fmt.Sprintf("%s=%s@%d", x.ID, x.Address, x.Weight)
	}
	return strings.Join(parts, ",")
}

func (b *backendFlags) Set(v string) error {
	be, err := parseBackend(v)
	if err != nil {
		return err
	}
	*b = append(*b, be)
	return nil
}

// parseBackend parses ID=HOST:PORT[@WEIGHT]; the weight defaults to 1.
func parseBackend(v string) (proxy.Backend, error) {
	id, rest, ok := strings.Cut(v, "=")
	if !ok || id == "" {
		return proxy.Backend{}, fmt.Errorf("%q: want ID=HOST:PORT[@WEIGHT]", v)
	}
	if rest == "" {
		return proxy.Backend{}, fmt.Errorf("%q: backend %s has no address (want ID=HOST:PORT[@WEIGHT])", v, id)
	}
	addr, weight := rest, int64(1)
	if a, w, ok := strings.Cut(rest, "@"); ok {
		n, err := strconv.ParseInt(w, 10, 32)
		if err != nil {
			return proxy.Backend{}, fmt.Errorf("%q: weight %q is not a whole number", v, w)
		}
		addr, weight = a, n
	}
	b := proxy.Backend{ID: id, Address: addr, Weight: int32(weight)}
	if err := node.ValidateBackend(b); err != nil {
		return proxy.Backend{}, err
	}
	return b, nil
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := node.DefaultConfig()
	fs := flag.NewFlagSet("balancer agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var backends backendFlags
	var logFormat, logLevel string
	fs.StringVar(&cfg.Name, "node", cfg.Name, "unique `name` of this node in the cluster")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "client traffic listener, `HOST:PORT`")
	fs.StringVar(&cfg.Proxy.Mode, "mode", cfg.Proxy.Mode, "proxy `mode`: http (L7 reverse proxy) or tcp (L4 stream proxy)")
	fs.StringVar(&cfg.Admin, "admin", cfg.Admin, "admin API, /metrics and status page listener, `HOST:PORT`; peers forward writes to it, so with a -gossip address other hosts reach, set this (or -admin-advertise) to one they reach too: a default loopback address is refused")
	fs.StringVar(&cfg.AdminAdvertise, "admin-advertise", "", "admin `HOST:PORT` that peers forward writes to, when -admin binds a wildcard or several networks (default: the -admin address)")
	fs.Var(&backends, "backend", "static backend `ID=HOST:PORT[@WEIGHT]` (repeatable; weight 0.."+strconv.Itoa(node.MaxWeight)+", default 1)")
	fs.StringVar(&cfg.Proxy.Algorithm, "algorithm", cfg.Proxy.Algorithm, "balancing `algorithm`: "+strings.Join(pick.Names(), " | "))
	var join, gossipKey string
	fs.StringVar(&cfg.Gossip.Bind, "gossip", "", "gossip (memberlist) bind `HOST:PORT`, UDP and TCP; empty: no cluster")
	fs.StringVar(&cfg.Gossip.Advertise, "gossip-advertise", "", "gossip `HOST:PORT` (IP literal) peers reach this node at, when -gossip binds 0.0.0.0 or sits behind NAT (default: the -gossip address)")
	fs.StringVar(&join, "join", "", "gossip address(es) of existing members, `HOST:PORT[,HOST:PORT]`; retried with backoff for -join-timeout")
	fs.DurationVar(&cfg.Gossip.JoinTimeout, "join-timeout", cfg.Gossip.JoinTimeout, "give up joining the cluster after this long")
	fs.StringVar(&gossipKey, "gossip-key", os.Getenv("BALANCER_GOSSIP_KEY"), "encrypt gossip with this `BASE64` AES key (16, 24 or 32 bytes; env BALANCER_GOSSIP_KEY); every node needs the same")
	fs.StringVar(&cfg.Gossip.Profile, "gossip-profile", cfg.Gossip.Profile, "memberlist timing preset: lan or local")
	fs.DurationVar(&cfg.Routes.MaxAge, "peer-max-age", cfg.Routes.MaxAge, "peers' reports older than this stop steering routing; all older: local counts only")
	fs.StringVar(&cfg.Raft.Bind, "raft", cfg.Raft.Bind, "raft transport `HOST:PORT` (TCP) for the replicated config; peers learn it by gossip, so with a -gossip address other hosts reach, set this (or -raft-advertise) to one they reach too: a default loopback address is refused")
	fs.StringVar(&cfg.Raft.Advertise, "raft-advertise", "", "raft `HOST:PORT` peers dial, when -raft binds 0.0.0.0 or sits behind NAT (default: the -raft address)")
	raftTimeout := fs.Duration("raft-timeout", cfg.Raft.HeartbeatTimeout, "raft heartbeat and election timeout: how long followers wait for a dead leader before electing (fail-over takes about 2x this)")
	fs.DurationVar(&cfg.ReapAfter, "raft-reap-after", 10*time.Minute, "remove a raft server whose node has been dead this long, if 3 voters remain (a node lost for good stops counting towards quorum once a replacement joins); 0: never")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 0, "form a new raft cluster once this many servers (`N`) are known by gossip and none is in a cluster yet; 1 = this node alone (with -join: unless the join finds a cluster, which then adds it); 0 with -join = wait to be added")
	fs.StringVar(&cfg.AdminToken, "admin-token", os.Getenv("BALANCER_ADMIN_TOKEN"), "require this bearer `token` on admin API writes (env BALANCER_ADMIN_TOKEN)")
	fs.StringVar(&cfg.TLS.Cert, "tls-cert", "", "serve the admin API over HTTPS (TLS 1.3) with this certificate (`PEM file`); followers also show it when forwarding writes")
	fs.StringVar(&cfg.TLS.Key, "tls-key", "", "private key (`PEM file`) of -tls-cert")
	fs.StringVar(&cfg.TLS.CA, "tls-ca", "", "require admin clients (CLI, curl, forwarding peers) to show a certificate signed by this CA (`PEM file`); also the CA forwarded writes trust")
	fs.StringVar(&cfg.RaftTLS.Cert, "raft-tls-cert", "", "run raft over mutual TLS 1.3 with this node certificate (`PEM file`), valid for server and client auth and for the -raft host; needs -raft-tls-key and -raft-tls-ca, on every node")
	fs.StringVar(&cfg.RaftTLS.Key, "raft-tls-key", "", "private key (`PEM file`) of -raft-tls-cert")
	fs.StringVar(&cfg.RaftTLS.CA, "raft-tls-ca", "", "CA (`PEM file`) every raft peer's certificate must chain to, in both directions")
	fs.StringVar(&cfg.Consul.Service, "consul-service", "", "seed and sync backends from the healthy instances of this Consul `service` (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN)")
	fs.StringVar(&cfg.Consul.KV, "consul-kv", "", "seed and sync backends from the JSON document at this Consul KV `key`")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "`directory` for the node's state on disk (created if missing)")
	fs.DurationVar(&cfg.Proxy.DialTimeout, "dial-timeout", cfg.Proxy.DialTimeout, "bound on connecting to a backend; a failed connect is retried on another backend")
	fs.DurationVar(&cfg.Proxy.ResponseTimeout, "response-timeout", cfg.Proxy.ResponseTimeout, "bound on waiting for a backend's response headers (http mode); then 504")
	fs.DurationVar(&cfg.Proxy.ClientIdleTimeout, "client-idle-timeout", cfg.Proxy.ClientIdleTimeout, "http mode: cut off a client that sends or reads nothing for this long while its request or answer is in transfer")
	fs.DurationVar(&cfg.Proxy.IdleTimeout, "idle-timeout", cfg.Proxy.IdleTimeout, "close a tcp-mode connection, or an upgraded http one (WebSocket), after this long with no bytes either way; also ends a response whose backend sends no body bytes for this long")
	fs.DurationVar(&cfg.Proxy.HeaderTimeout, "header-timeout", cfg.Proxy.HeaderTimeout, "http mode: close a client connection whose request headers take longer than this to arrive")
	fs.DurationVar(&cfg.Proxy.KeepAliveTimeout, "keepalive-timeout", cfg.Proxy.KeepAliveTimeout, "http mode: close a client's keep-alive connection after this long idle between requests")
	fs.IntVar(&cfg.Proxy.MaxConns, "max-conns", cfg.Proxy.MaxConns, "most client connections (`N`) open at once; more are refused (http: 503 with Connection: close; tcp: closed) and counted in balancer_client_connections_refused_total; 0: no limit. The default is 10000, or (open-file limit - 512)/2 when that is lower")
	fs.IntVar(&cfg.Proxy.MaxTries, "max-tries", cfg.Proxy.MaxTries, fmt.Sprintf("backends one request may try when connects fail (1..%d)", pick.MaxTries))
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGINT/SIGTERM, how long in-flight requests may take to finish (a second signal exits at once)")
	fs.IntVar(&cfg.Breaker.ErrorPercent, "breaker-error-percent", cfg.Breaker.ErrorPercent, "open a backend's circuit when this percentage of its requests fail (1..100)")
	fs.IntVar(&cfg.Breaker.MinRequests, "breaker-min-requests", cfg.Breaker.MinRequests, "requests in the 10 s window before a circuit may open by its error share")
	fs.IntVar(&cfg.Breaker.ConsecutiveFailures, "breaker-consecutive-failures", cfg.Breaker.ConsecutiveFailures, "open a circuit after this many failures in a row, however few requests the window holds (0: off)")
	fs.DurationVar(&cfg.Breaker.SleepWindow, "breaker-sleep", cfg.Breaker.SleepWindow, "how long an open circuit waits before one trial request")
	fs.DurationVar(&cfg.Routes.DisputeAfter, "breaker-dispute-after", cfg.Routes.DisputeAfter,
		"how long a peer's open circuit alone keeps a backend from this node; after it this node sends its own single request per -breaker-sleep (0: 2 × -breaker-sleep; else at least -breaker-sleep)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve the Go profiler under /debug/pprof/ on the admin listener")
	fs.StringVar(&logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: balancer agent [flags]\n\nRuns one balancer node: proxies client traffic on -listen to the backends,\nserves the admin API on -admin, stops gracefully on SIGINT/SIGTERM (a second\none exits at once). SIGHUP rereads the -tls-* and -raft-tls-* files from\ntheir paths, for certificate rotation without a restart: new connections get\nthe new certificate, open ones are kept, and a broken set is refused (logged\nas an error) in favour of the old one. Without TLS files SIGHUP is logged and\nignored: there is no config file.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	log, err := newLogger(stderr, logFormat, logLevel)
	if err != nil {
		return err
	}
	logSignalsTo(ctx, log)
	// A loopback raft or admin address the operator typed is a choice
	// (every node on one host); the defaults are not.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "raft", "raft-advertise":
			cfg.RaftLoopbackOK = true
		case "admin", "admin-advertise":
			cfg.AdminLoopbackOK = true
		}
	})
	cfg.Backends = backends
	cfg.Logger = log
	if *raftTimeout != cfg.Raft.HeartbeatTimeout {
		cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout = *raftTimeout, *raftTimeout
		cfg.Raft.LeaderLeaseTimeout = *raftTimeout / 2
	}
	if join != "" {
		for _, j := range strings.Split(join, ",") {
			if j = strings.TrimSpace(j); j != "" {
				cfg.Gossip.Join = append(cfg.Gossip.Join, j)
			}
		}
	}
	if gossipKey != "" {
		key, err := base64.StdEncoding.DecodeString(gossipKey)
		if err != nil {
			return usagef("-gossip-key: not base64: %v", err)
		}
		cfg.Gossip.Key = key
	}
	n, err := node.New(cfg)
	if err != nil {
		return usageError{err}
	}
	onHangup(ctx, func() { reloadTLS(n, log) })
	return n.Run(ctx)
}

// reloadTLS is the agent's SIGHUP.
func reloadTLS(n *node.Node, log *slog.Logger) {
	err := n.ReloadTLS()
	switch {
	case errors.Is(err, node.ErrNoTLS):
		log.Warn("SIGHUP ignored: no TLS files to reload (-tls-cert, -raft-tls-cert) and no config file; change backends with `balancer weights set` or the admin API, restart to change flags")
	case err != nil:
		log.Error("SIGHUP: TLS reload failed; the listener named keeps its previous certificate", "err", err)
	}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("-log-format %q: want text or json", format)
}
