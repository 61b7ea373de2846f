package node

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/thebalancer/balancer/consensus"
	"github.com/thebalancer/balancer/gossip"
	"github.com/thebalancer/balancer/proxy"
)

// This file runs the node's side of the replicated config: bootstrapping
// raft exactly once, applying every committed config to the proxy, and the
// duties of the leader (seeding, voter membership, Consul sync).
//
// Bootstrap. A node with raft state never bootstraps again. A lone node (no
// -gossip) and -bootstrap-expect 1 bootstrap a single-voter cluster of
// themselves. With -bootstrap-expect N > 1 a node waits until gossip shows N
// alive members that all advertise the same expectation and none of which
// already belongs to a raft cluster; then every one of those N founders
// bootstraps with the identical list (the N members sorted by name), which
// raft accepts as one cluster. A node that sees a member already in a
// cluster, or more than N candidates, does not bootstrap and waits to be
// added by that cluster's leader; a node started with -join and without
// -bootstrap-expect never bootstraps. Two clusters could only form if two
// groups of N founders each saw exactly each other and nobody else, which
// -join (every node joins the same seeds, so every view converges) rules
// out in practice; the gossip view is re-read after a settling pause to
// catch a late joiner.

// Gossip metadata keys.
const (
	metaAdmin   = "admin"
	metaRaft    = "raft"
	metaExpect  = "expect"
	metaApplied = "applied"
	metaInRaft  = "in-raft" // "1" once the node has raft state
)

// consensusLoop drives the replicated config until ctx ends.
func (n *Node) consensusLoop(ctx context.Context) {
	if err := n.bootstrap(ctx); err != nil {
		if ctx.Err() == nil {
			n.log.Error("raft bootstrap", "err", err)
		}
	}
	configs := n.store.Subscribe()
	leadership := n.store.SubscribeLeadership()
	var members <-chan struct{}
	if n.gossip != nil {
		members = n.gossip.Subscribe()
	}
	reconcile := time.NewTicker(2 * time.Second)
	defer reconcile.Stop()
	// Every applied change is snapshotted right away (in the background,
	// coalesced), so a crashed node restarts on its last config.
	persist := make(chan struct{}, 1)
	var persister sync.WaitGroup
	persister.Add(1)
	go func() {
		defer persister.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-persist:
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := n.store.Snapshot(sctx); err != nil && ctx.Err() == nil {
				n.log.Warn("raft snapshot of the applied config", "err", err)
			}
			cancel()
		}
	}()
	defer persister.Wait()
	var leaderCancel context.CancelFunc
	stopLeading := func() {
		if leaderCancel != nil {
			leaderCancel()
			leaderCancel = nil
		}
	}
	defer stopLeading()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-configs:
			if !ok {
				return
			}
			n.applyReplicated()
			select {
			case persist <- struct{}{}:
			default:
			}
		case _, ok := <-leadership:
			if !ok {
				return
			}
			if n.store.IsLeader() {
				if leaderCancel == nil {
					n.log.Info("raft leadership gained")
					leaderCancel = n.startLeading(ctx)
				}
			} else if leaderCancel != nil {
				n.log.Info("raft leadership lost")
				stopLeading()
			}
		case <-members:
			if leaderCancel != nil {
				n.reconcileVoters(ctx)
			}
		case <-reconcile.C:
			if leaderCancel != nil {
				n.reconcileVoters(ctx)
			}
			n.advertise()
		}
	}
}

// applyReplicated hands the committed config to the proxy.
func (n *Node) applyReplicated() {
	cfg := n.store.Config()
	if cfg.Index == 0 {
		return // nothing committed yet: keep routing on the static seed
	}
	bs := make([]proxy.Backend, len(cfg.Backends))
	for i, b := range cfg.Backends {
		bs[i] = proxy.Backend{ID: b.ID, Address: b.Address, Weight: b.Weight, Drain: b.Drain}
	}
	n.setBackends(bs)
	n.replicated.Store(true)
	n.advertise()
}

// advertise publishes this node's raft facts in its gossip metadata, so
// peers can bootstrap, find the leader's admin API and see applied indexes.
func (n *Node) advertise() {
	if n.gossip == nil {
		return
	}
	meta := n.meta()
	n.metaMu.Lock()
	same := equalMeta(meta, n.lastMeta)
	if !same {
		n.lastMeta = meta
	}
	n.metaMu.Unlock()
	if same {
		return
	}
	if err := n.gossip.UpdateMeta(meta, time.Second); err != nil {
		n.log.Debug("gossip meta update", "err", err)
	}
}

func (n *Node) meta() map[string]string {
	m := map[string]string{metaAdmin: n.advertisedAdmin(), metaRaft: n.store.RaftAddr()}
	if n.cfg.BootstrapExpect > 0 {
		m[metaExpect] = strconv.Itoa(n.cfg.BootstrapExpect)
	}
	if has, _ := n.store.HasState(); has {
		m[metaInRaft] = "1"
	}
	m[metaApplied] = strconv.FormatUint(n.store.AppliedIndex(), 10)
	return m
}

func equalMeta(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// bootstrap forms the raft cluster when this node is one of its founders.
func (n *Node) bootstrap(ctx context.Context) error {
	has, err := n.store.HasState()
	if err != nil {
		return err
	}
	if has {
		return nil
	}
	expect := n.cfg.BootstrapExpect
	switch {
	case n.gossip == nil, expect == 1:
		n.log.Info("bootstrapping a single-node raft cluster")
		return n.store.BootstrapSelf()
	case expect == 0:
		n.log.Info("waiting to be added to the raft cluster by its leader")
		return nil
	}
	n.log.Info("waiting for the expected raft servers", "expect", expect)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last []consensus.Server
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if has, _ := n.store.HasState(); has {
			return nil // added by a leader meanwhile
		}
		servers, ok := n.founders(expect)
		if !ok {
			last = nil
			continue
		}
		// Settle: the same list on two consecutive looks.
		if !sameServers(servers, last) {
			last = servers
			continue
		}
		n.log.Info("bootstrapping raft", "servers", len(servers))
		return n.store.Bootstrap(servers)
	}
}

// founders returns the bootstrap list when exactly expect alive members
// advertise a raft address and the same expectation, none is in a cluster
// already, and this node is one of them.
func (n *Node) founders(expect int) ([]consensus.Server, bool) {
	var out []consensus.Server
	self := false
	for _, m := range n.gossip.Members() {
		if m.State != gossip.StateAlive || m.Meta[metaRaft] == "" {
			continue
		}
		if m.Meta[metaInRaft] == "1" {
			return nil, false // a cluster exists: wait to be added
		}
		if m.Meta[metaExpect] != strconv.Itoa(expect) {
			continue
		}
		if m.Name == n.cfg.Name {
			self = true
		}
		out = append(out, consensus.Server{ID: m.Name, Address: m.Meta[metaRaft], Voter: true})
	}
	if len(out) != expect || !self {
		return nil, false
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, true
}

func sameServers(a, b []consensus.Server) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].Address != b[i].Address {
			return false
		}
	}
	return true
}

// startLeading runs lead in the background until the returned func is called.
func (n *Node) startLeading(ctx context.Context) context.CancelFunc {
	lctx, cancel := context.WithCancel(ctx)
	go n.lead(lctx)
	return cancel
}

// lead runs the leader's duties until ctx ends (leadership lost or shutdown).
func (n *Node) lead(ctx context.Context) {
	if err := n.store.Barrier(ctx); err != nil {
		n.log.Warn("raft barrier after gaining leadership", "err", err)
		return
	}
	n.seedStatic(ctx)
	n.reconcileVoters(ctx)
	if n.consul != nil {
		n.runConsul(ctx)
	}
}

// seedStatic commits the -backend flags when nothing was ever committed.
func (n *Node) seedStatic(ctx context.Context) {
	if len(n.cfg.Backends) == 0 || n.store.Config().Index != 0 {
		return
	}
	bs := make([]consensus.Backend, len(n.cfg.Backends))
	for i, b := range n.cfg.Backends {
		bs[i] = consensus.Backend{ID: b.ID, Address: b.Address, Weight: b.Weight, Drain: b.Drain,
			Source: consensus.SourceStatic, SourceWeight: b.Weight}
	}
	res, err := n.store.Apply(ctx, consensus.Seed(bs))
	if err != nil {
		n.log.Warn("seed config from -backend flags", "err", err)
		return
	}
	n.log.Info("seeded the replicated config from -backend flags", "index", res.Index, "backends", len(bs))
}

// reconcileVoters adds alive gossip members as voters and removes those
// that left gracefully. Only the leader calls it, one change at a time.
func (n *Node) reconcileVoters(ctx context.Context) {
	if n.gossip == nil || !n.store.IsLeader() {
		return
	}
	servers, err := n.store.Servers()
	if err != nil {
		return
	}
	known := make(map[string]string, len(servers))
	for _, s := range servers {
		known[s.ID] = s.Address
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, m := range n.gossip.Members() {
		addr := m.Meta[metaRaft]
		switch {
		case m.Name == n.cfg.Name || addr == "":
		case m.State == gossip.StateAlive && known[m.Name] != addr:
			if err := n.store.AddVoter(cctx, m.Name, addr); err != nil {
				n.log.Warn("add raft voter", "member", m.Name, "err", err)
				return
			}
			n.log.Info("added raft voter", "member", m.Name, "raft", addr)
		case m.State == gossip.StateLeft && known[m.Name] != "":
			if err := n.store.RemoveServer(cctx, m.Name); err != nil {
				n.log.Warn("remove raft server", "member", m.Name, "err", err)
				return
			}
			n.log.Info("removed raft server that left", "member", m.Name)
		}
	}
}

// transferLeadership hands leadership over before this node stops, so the
// cluster does not wait out an election timeout.
func (n *Node) transferLeadership() {
	if !n.store.IsLeader() || n.gossip == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := n.store.TransferLeadership(ctx); err != nil {
		n.log.Warn("raft leadership transfer", "err", err)
		return
	}
	n.log.Info("raft leadership transferred")
}

// The admin API's ConfigWriter, implemented over the store.

// Apply proposes cmd on this node.
func (n *Node) Apply(ctx context.Context, cmd consensus.Command) (consensus.Result, error) {
	return n.store.Apply(ctx, cmd)
}

// Leader returns the raft leader's node name and admin address.
func (n *Node) Leader() (name, adminAddr string) {
	id, _ := n.store.Leader()
	if id == "" {
		return "", ""
	}
	if id == n.cfg.Name {
		return id, n.advertisedAdmin()
	}
	if n.gossip != nil {
		for _, m := range n.gossip.Members() {
			if m.Name == id {
				return id, m.Meta[metaAdmin]
			}
		}
	}
	return id, ""
}

// WaitIndex blocks until this node applied idx.
func (n *Node) WaitIndex(ctx context.Context, idx uint64) error {
	return n.store.WaitIndex(ctx, idx)
}

// WaitApplied blocks until every alive member in the raft cluster reports
// (through gossip metadata) that it applied idx.
func (n *Node) WaitApplied(ctx context.Context, idx uint64) error {
	if err := n.store.WaitIndex(ctx, idx); err != nil {
		return err
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		behind := n.behind(idx)
		if len(behind) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not yet applied on %v: %w", behind, ctx.Err())
		case <-tick.C:
		}
	}
}

// behind lists alive raft members whose advertised applied index is below idx.
func (n *Node) behind(idx uint64) []string {
	if n.gossip == nil {
		return nil
	}
	servers, err := n.store.Servers()
	if err != nil {
		return []string{"(raft configuration unavailable)"}
	}
	voters := make(map[string]bool, len(servers))
	for _, s := range servers {
		voters[s.ID] = true
	}
	var out []string
	for _, m := range n.gossip.Members() {
		if m.State != gossip.StateAlive || !voters[m.Name] || m.Name == n.cfg.Name {
			continue
		}
		applied, _ := strconv.ParseUint(m.Meta[metaApplied], 10, 64)
		if applied < idx {
			out = append(out, m.Name)
		}
	}
	return out
}
