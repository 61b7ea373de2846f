package node

import (
	"errors"

	"github.com/thebalancer/balancer/breaker"
	"github.com/thebalancer/balancer/node/admin"
)

func (n *Node) adminSources() admin.Sources {
	return admin.Sources{
		Node:    n.cfg.Name,
		Load:    loadView{n},
		Config:  configView{n},
		Ready:   n.ready,
		Metrics: promhttpHandler(n.registry),
		Pprof:   n.cfg.Pprof,
	}
}

// ready is the readiness check: a node that is draining or has nothing to
// route to should be taken out of an upstream load balancer's rotation.
func (n *Node) ready() error {
	if n.draining.Load() {
		return errors.New("shutting down")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.backends) == 0 {
		return errors.New("no backends configured")
	}
	return nil
}

type loadView struct{ n *Node }

func (v loadView) Load() admin.Load {
	n := v.n
	states := n.breakers.States()
	out := admin.Load{Node: n.cfg.Name, Backends: []admin.BackendLoad{}}
	for _, s := range n.proxy.Stats() {
		st, ok := states[s.ID]
		if !ok {
			st = breaker.Closed
		}
		out.Backends = append(out.Backends, admin.BackendLoad{
			ID:       s.ID,
			Local:    s.InFlight,
			Cluster:  s.InFlight,
			Peers:    []admin.PeerLoad{},
			Breaker:  map[string]string{n.cfg.Name: st.String()},
			Requests: s.Requests,
			Failures: s.Failures,
		})
	}
	return out
}

type configView struct{ n *Node }

func (v configView) Config() admin.Config {
	v.n.mu.Lock()
	defer v.n.mu.Unlock()
	out := admin.Config{Index: 0, Backends: make([]admin.Backend, 0, len(v.n.backends))}
	for _, b := range v.n.backends {
		out.Backends = append(out.Backends, admin.Backend{ID: b.ID, Address: b.Address, Weight: b.Weight, Drain: b.Drain})
	}
	return out
}
