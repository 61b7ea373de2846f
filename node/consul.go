package node

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/thebalancer/balancer/consensus"
	"github.com/thebalancer/balancer/consensus/seed"
)

// ConsulConfig selects where the leader seeds and syncs backends from.
// The Consul address and token come from CONSUL_HTTP_ADDR and
// CONSUL_HTTP_TOKEN unless Addr and Token are set.
type ConsulConfig struct {
	Service string // -consul-service: healthy instances of this service
	KV      string // -consul-kv: a JSON document at this key
	Addr    string
	Token   string
	Seed    seed.Config // watch timings; zero: seed's defaults
}

// Validate reports a bad combination.
func (c ConsulConfig) Validate() error {
	if c.Service != "" && c.KV != "" {
		return errors.New("-consul-service and -consul-kv: choose one source")
	}
	return nil
}

// consulSource is what the node needs of a seed watcher.
type consulSource interface {
	Watch(ctx context.Context, out func([]seed.Backend)) error
}

func newConsulSource(c ConsulConfig, log *slog.Logger) (consulSource, error) {
	if c.Service == "" && c.KV == "" {
		return nil, nil
	}
	client, err := seed.NewClient(c.Addr, c.Token)
	if err != nil {
		return nil, err
	}
	sc := c.Seed
	if sc == (seed.Config{}) {
		sc = seed.DefaultConfig()
	}
	sc.Logger = log.With("part", "consul")
	if c.Service != "" {
		return seed.NewService(client, c.Service, seed.WithConfig(sc)), nil
	}
	return seed.NewKV(client, c.KV, seed.WithConfig(sc)), nil
}

// runConsul keeps the replicated config in sync with Consul while this node
// leads. Consul being down, a missing KV key or a service with no healthy
// instance is logged by the watcher and not delivered; the last committed
// config stays in force. Operator-pinned weights survive syncs
// (consensus.Sync keeps them).
func (n *Node) runConsul(ctx context.Context) {
	err := n.consul.Watch(ctx, func(bs []seed.Backend) {
		set := make([]consensus.Backend, len(bs))
		for i, b := range bs {
			set[i] = consensus.Backend{ID: b.ID, Address: b.Address, Weight: b.Weight,
				Source: consensus.SourceConsul, SourceWeight: b.Weight}
		}
		for attempt := 0; ctx.Err() == nil; attempt++ {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			res, err := n.store.Apply(actx, consensus.Sync(consensus.SourceConsul, set))
			cancel()
			if err == nil {
				switch {
				case !res.Changed:
				case len(set) == 0:
					// Only an explicit {"backends": []} gets here (the
					// watchers never deliver a missing key or an empty
					// service), but it still means 503 for everything.
					n.log.Warn("synced backends from Consul: the document lists none, so no Consul backend is left", "index", res.Index)
				default:
					n.log.Info("synced backends from Consul", "index", res.Index, "backends", len(set))
				}
				return
			}
			if errors.Is(err, consensus.ErrInvalid) || errors.Is(err, consensus.ErrNotLeader) {
				n.log.Warn("apply Consul backends", "err", err)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
			}
		}
	})
	if err != nil && ctx.Err() == nil {
		n.log.Warn("consul watch stopped", "err", err)
	}
}
