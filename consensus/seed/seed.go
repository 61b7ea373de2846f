// Package seed reads backend sets from Consul and keeps them in sync: the
// healthy instances of a Consul service (ServiceWatcher) or a JSON document
// in Consul's KV store (KVWatcher, schema in ParseDocument).
//
// Each watcher offers Fetch, one read, and Watch, a blocking-query loop that
// hands every changed set to a callback. The package only reads Consul: it
// never writes to it, knows nothing of raft, and does not decide when a set
// is applied. The node converts []Backend into the replicated config (seed
// when empty, then sync) and keeps operator overrides.
//
// It imports github.com/hashicorp/consul/api, consensus (for its limits) and
// the standard library only.
package seed

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/thebalancer/balancer/consensus"
)

// MaxWeight is the largest weight a Backend carries; larger Consul weights
// are clamped to it: the replicated config's limit (0 means no new traffic).
const MaxWeight = consensus.MaxWeight

// MaxIDLen is the longest backend ID.
const MaxIDLen = 64

// Backend is one backend as Consul describes it. The node converts it into
// the replicated type.
type Backend struct {
	ID      string // 1..MaxIDLen of [A-Za-z0-9._-], starting with a letter or digit
	Address string // host:port, IPv6 hosts in brackets
	Weight  int32  // 0..MaxWeight
}

// ErrInvalidDocument wraps every reason a KV document is rejected.
var ErrInvalidDocument = errors.New("invalid backend document")

// ErrKeyNotFound is KVWatcher.Fetch's error for a key that does not exist.
// It is not an empty set: only a document saying {"backends": []} is.
var ErrKeyNotFound = errors.New("consul kv key not found")

// Config tunes the Watch loop. A zero or negative field means its default.
type Config struct {
	// WaitTime is how long one blocking query may be held by Consul
	// (default 5m; Consul caps it at 10m and adds up to WaitTime/16).
	WaitTime time.Duration
	// MinInterval is the least time between the starts of two queries, so a
	// query that returns at once (index moved for an unrelated write) cannot
	// spin (default 1s).
	MinInterval time.Duration
	// BackoffMin is the wait after the first failed query; it doubles with
	// every further failure up to BackoffMax (defaults 1s and 3m).
	BackoffMin time.Duration
	BackoffMax time.Duration
	// Remind is how often the warning that Consul has no backend set for
	// this watcher (a missing KV key, a service with no healthy instance) is
	// repeated while that lasts (default 5m). The first warning comes at
	// once; repeating it on every query would flood the log whenever an
	// unrelated write moves the index.
	Remind time.Duration
	// Logger receives query errors (one line per failed attempt, so at most
	// one per backoff step), recoveries, rejected documents and skipped
	// instances. Nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the production settings.
func DefaultConfig() Config {
	return Config{
		WaitTime:    5 * time.Minute,
		MinInterval: time.Second,
		BackoffMin:  time.Second,
		BackoffMax:  3 * time.Minute,
		Remind:      5 * time.Minute,
	}
}

// Validate reports the first bad setting. Watchers also accept an invalid
// Config (they fall back to defaults field by field), so callers that take
// the values from an operator should call Validate first.
func (c Config) Validate() error {
	switch {
	case c.WaitTime <= 0 || c.WaitTime > 10*time.Minute:
		return fmt.Errorf("consul wait time %v: want more than 0 and at most 10m", c.WaitTime)
	case c.MinInterval <= 0:
		return fmt.Errorf("consul min interval %v: must be positive", c.MinInterval)
	case c.BackoffMin <= 0:
		return fmt.Errorf("consul backoff min %v: must be positive", c.BackoffMin)
	case c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("consul backoff max %v: must be at least backoff min %v", c.BackoffMax, c.BackoffMin)
	case c.Remind <= 0:
		return fmt.Errorf("consul remind interval %v: must be positive", c.Remind)
	}
	return nil
}

// withDefaults replaces unusable fields by their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.WaitTime <= 0 {
		c.WaitTime = d.WaitTime
	}
	c.WaitTime = min(c.WaitTime, 10*time.Minute)
	if c.MinInterval <= 0 {
		c.MinInterval = d.MinInterval
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = d.BackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = d.BackoffMax
	}
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	if c.Remind <= 0 {
		c.Remind = d.Remind
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Option configures a watcher.
type Option func(*options)

type options struct {
	cfg  Config
	tags []string
}

// WithConfig replaces the loop settings (including the logger).
func WithConfig(c Config) Option { return func(o *options) { o.cfg = c } }

// WithLogger sets the logger only.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.cfg.Logger = l } }

// WithTags keeps only service instances that carry every tag (compared
// case-insensitively by Consul). It applies to NewService; NewKV ignores it.
func WithTags(tags ...string) Option {
	return func(o *options) { o.tags = append(o.tags, tags...) }
}

func buildOptions(opts []Option) options {
	o := options{cfg: DefaultConfig()}
	for _, f := range opts {
		f(&o)
	}
	o.cfg = o.cfg.withDefaults()
	return o
}

// NewClient returns a Consul client built from api.DefaultConfig(), so the
// standard environment (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
// CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_SSL, CONSUL_CACERT, ...) applies. A
// non-empty addr ("host:port", "http://...", "https://..." or "unix://...")
// or token overrides the environment. The client has no overall HTTP
// timeout, which blocking queries need; requests end with their context.
func NewClient(addr, token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if addr != "" {
		cfg.Address = addr
	}
	if token != "" {
		cfg.Token = token
		cfg.TokenFile = ""
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	return c, nil
}
