package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
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
// -gossip) and -bootstrap-expect 1 without -join bootstrap a single-voter
// cluster of themselves; with -join, a node first joins and then follows
// the rule for N. With -bootstrap-expect N a node waits until gossip shows N
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
	persister.Add(1)
	go func() { defer persister.Done(); n.savePeersLoop(ctx) }()
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
			// The cluster ID arrives as a state change too, with no config
			// index; advertise it at once rather than at the next tick.
			n.advertise()
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
			n.rememberPeers(time.Now())
		case <-reconcile.C:
			if leaderCancel != nil {
				n.reconcileVoters(ctx)
			}
			n.advertise()
		}
	}
}

// appliedIndex is the config index this node routes on: 0 before it has
// routed on a committed config.
func (n *Node) appliedIndex() uint64 {
	if c := n.routed.Load(); c != nil {
		return c.Index
	}
	return 0
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
	// Only now does this node route on cfg: what it reports as applied (the
	// admin API's config, the "applied" it gossips for ?wait=applied) must
	// not run ahead of its routing table.
	if n.routed.Swap(&cfg) == nil {
		n.warnIgnoredFlags(cfg)
	}
	n.advertise()
}

// warnIgnoredFlags says once, at the first applied config, which -backend
// flags that config contradicts. The flags only seed an empty config; a
// node restarted with edited flags would otherwise run on the replicated
// set with no sign that its flags did nothing.
func (n *Node) warnIgnoredFlags(cfg consensus.Config) {
	have := make(map[string]consensus.Backend, len(cfg.Backends))
	for _, b := range cfg.Backends {
		have[b.ID] = b
	}
	var differ []string
	for _, f := range n.cfg.Backends {
		b, ok := have[f.ID]
		switch {
		case !ok:
			differ = append(differ, f.ID+" (not in the config)")
		case b.Address != f.Address:
			differ = append(differ, fmt.Sprintf("%s (address %s in the config)", f.ID, b.Address))
		case b.Source == consensus.SourceStatic && b.SourceWeight != f.Weight:
			differ = append(differ, fmt.Sprintf("%s (seeded with weight %d)", f.ID, b.SourceWeight))
		}
	}
	if len(differ) > 0 {
		n.log.Warn("-backend flags only seed an empty config; these differ from the replicated config and are ignored: change backends through the admin API (balancer weights set, PUT /v1/backends/ID)",
			"config_index", cfg.Index, "backends", strings.Join(differ, ", "))
	}
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
	m := map[string]string{metaAdmin: n.adminAdvertised(), metaRaft: n.store.RaftAddr()}
	if n.cfg.BootstrapExpect > 0 {
		m[metaExpect] = strconv.Itoa(n.cfg.BootstrapExpect)
	}
	if has, _ := n.store.HasState(); has {
		m[metaInRaft] = "1"
	}
	// Peers of other clusters refuse us by it, and we them (gossip.Config.Cluster).
	if id := n.store.ClusterID(); id != "" {
		m[gossip.MetaCluster] = id
	}
	m[metaApplied] = strconv.FormatUint(n.appliedIndex(), 10)
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
	case n.gossip == nil, expect == 1 && len(n.cfg.Gossip.Join) == 0:
		n.log.Info("bootstrapping a single-node raft cluster")
		return n.store.BootstrapSelf()
	case expect == 0:
		n.log.Info("waiting to be added to the raft cluster by its leader")
		return nil
	}
	// Whoever is to found the cluster must first see who is there: a node
	// that bootstrapped alone before its join went through would be a
	// second raft cluster that no later contact repairs (both logs can hold
	// an entry of the same index and term). With seeds, even -bootstrap-
	// expect 1 waits for the join and then for founders to say no cluster
	// exists yet.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-n.gossip.Joined():
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
			n.whyNotFounding(expect, servers)
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

// whyNotFounding warns, once per distinct set, when more members than
// expected are candidates: none of them will ever bootstrap (any one of them
// might otherwise found a cluster the others never join), and the operator
// has to stop the extra ones or start them with another expectation.
func (n *Node) whyNotFounding(expect int, candidates []consensus.Server) {
	if len(candidates) <= expect {
		n.tooMany = ""
		return
	}
	names := make([]string, len(candidates))
	for i, c := range candidates {
		names[i] = c.ID
	}
	key := strings.Join(names, ",")
	if key == n.tooMany {
		return
	}
	n.tooMany = key
	n.log.Warn(fmt.Sprintf("%d members advertise -bootstrap-expect %d and none is in a raft cluster yet, so none bootstraps: start exactly %d with that expectation, or give the extra ones -bootstrap-expect 0 to be added by the leader",
		len(candidates), expect, expect), "candidates", key)
}

// founders returns the bootstrap list when exactly expect alive members
// advertise a raft address and the same expectation, none is in a cluster
// already, and this node is one of them. When that fails because more
// members qualify, it returns them with false.
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
	if len(out) > expect {
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		return out, false
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
	// Absences are timed from when this leadership began: what the node saw
	// while it last led may have healed and failed again since.
	n.reapMu.Lock()
	n.missing, n.kept = nil, nil
	n.reapMu.Unlock()
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
	n.nameCluster(ctx)
	n.seedStatic(ctx)
	n.reconcileVoters(ctx)
	if n.consul != nil {
		n.runConsul(ctx)
	}
}

// nameCluster gives a raft cluster that has no ID one: the first leader
// does (after the barrier, so it has applied any ID committed before it),
// and a leader of a cluster formed by an older version does once upgraded.
// Should two leaders race, the first ID committed wins on every node.
func (n *Node) nameCluster(ctx context.Context) {
	if n.store.ClusterID() != "" {
		return
	}
	if _, err := n.store.Apply(ctx, consensus.SetClusterID(consensus.NewClusterID())); err != nil {
		// The next leadership tries again; until then gossip admits peers
		// of any cluster, as before cluster IDs existed.
		n.log.Warn("cannot commit the cluster ID", "err", err)
		return
	}
	n.log.Info("named the raft cluster", "cluster", n.store.ClusterID())
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
	// A node that is stopping changes no membership: when a whole cluster
	// stops at once (Ctrl-C on make run, a host-wide shutdown), leadership
	// lands on whichever node is still draining, and it would remove every
	// peer that left before it. The servers removed that way never learn
	// it; restarted, two of them could elect a leader of the old
	// configuration beside it and overwrite what it committed alone.
	if n.gossip == nil || !n.store.IsLeader() || n.draining.Load() {
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
	ours := n.store.ClusterID()
	for _, m := range n.gossip.Members() {
		addr := m.Meta[metaRaft]
		switch theirs := m.Meta[gossip.MetaCluster]; {
		case m.Name == n.cfg.Name || addr == "":
		case ours != "" && theirs != "" && theirs != ours:
			// Gossip refuses such members, but only from when this node
			// knows its ID: one admitted before (it joined in the moment
			// between our bootstrap and the leader naming the cluster)
			// stays listed, as memberlist keeps a member its probes reach.
			n.voterTrouble(m.Name, addr, "not adding raft voter: it belongs to another cluster",
				fmt.Errorf("its cluster ID is %s, ours %s", theirs, ours))
		case m.State == gossip.StateAlive && known[m.Name] != addr:
			err := n.store.AddVoter(cctx, m.Name, addr)
			if errors.Is(err, consensus.ErrPeerTLS) {
				// A member without a valid raft certificate must not hold
				// up the members after it; say so once per address, not
				// every reconcile.
				n.voterTrouble(m.Name, addr, "not adding raft voter: it failed the TLS handshake", err)
				continue
			}
			if err != nil {
				// An unreachable member is retried on the next reconcile;
				// it does not hold up the members after it either.
				n.voterTrouble(m.Name, addr, "add raft voter failed; retrying", err)
				if reconcileOver(cctx, err) {
					return
				}
				continue
			}
			n.refusedMu.Lock()
			delete(n.refused, m.Name)
			n.refusedMu.Unlock()
			n.log.Info("added raft voter", "member", m.Name, "raft", addr)
		case m.State == gossip.StateLeft && known[m.Name] != "":
			if err := n.store.RemoveServer(cctx, m.Name); err != nil {
				n.log.Warn("remove raft server", "member", m.Name, "err", err)
				if reconcileOver(cctx, err) {
					return
				}
				continue
			}
			n.log.Info("removed raft server that left", "member", m.Name)
		}
	}
	n.reapDead(cctx, servers)
}

// reconcileOver reports whether err from one member's change ends this
// reconcile for all of them: leadership is lost, the store is closing or
// the round's deadline passed. Other errors concern that member alone.
func reconcileOver(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, consensus.ErrNotLeader) || errors.Is(err, consensus.ErrNoLeader)
}

// minVoters is the smallest raft configuration reaping leaves: below three
// voters one more loss stops writes, so a dead server of a three-voter
// cluster stays until a replacement has joined.
const minVoters = 3

// reapDead removes the raft servers whose nodes have been dead or absent
// from gossip for ReapAfter and that the leader fails to heartbeat. Without it a node lost for good would count
// towards quorum forever: its replacement (a new name) joins as an extra
// voter, and a 4-voter cluster with one dead tolerates no further loss.
// Left members are removed at once by reconcileVoters; a reaped node that
// comes back is added again like any joiner.
func (n *Node) reapDead(ctx context.Context, servers []consensus.Server) {
	present := make(map[string]bool)
	raftHolder := make(map[string]string) // raft address -> alive member advertising it
	for _, m := range n.gossip.Members() {
		if m.State == gossip.StateAlive || m.State == gossip.StateSuspect {
			present[m.Name] = true
			if a := m.Meta[metaRaft]; a != "" {
				raftHolder[a] = m.Name
			}
		}
	}
	// A replacement started on a dead server's raft address proves the old
	// server gone, and cannot join while the old one holds the address
	// (AddVoter refuses): remove the old one now, whatever -raft-reap-after
	// says. The replacement takes its place at the next reconcile.
	for _, s := range servers {
		holder, taken := raftHolder[s.Address]
		if !taken || holder == s.ID || present[s.ID] || s.ID == n.cfg.Name {
			continue
		}
		if err := n.store.RemoveServer(ctx, s.ID); err != nil {
			n.log.Warn("remove replaced raft server", "member", s.ID, "err", err)
			return
		}
		n.log.Info("removed raft server: a new member now uses its raft address", "member", s.ID, "raft", s.Address, "new_member", holder)
		return // the configuration changed: the next reconcile works from the new one
	}
	if n.cfg.ReapAfter <= 0 {
		return
	}
	now := time.Now()
	n.reapMu.Lock()
	if n.missing == nil {
		n.missing = make(map[string]time.Time)
	}
	var due []string
	voters := 0
	voter := make(map[string]bool, len(servers)) // every server; true for voters
	for _, s := range servers {
		voter[s.ID] = s.Voter
		if s.Voter {
			voters++
		}
		if s.ID == n.cfg.Name || present[s.ID] {
			delete(n.missing, s.ID)
			continue
		}
		since, seen := n.missing[s.ID]
		switch {
		case !seen:
			n.missing[s.ID] = now
		case now.Sub(since) >= n.cfg.ReapAfter && n.store.Unreachable(s.ID):
			// Gossip alone is not enough: a node on a stale gossip key is
			// "dead" to gossip while raft still reaches it.
			due = append(due, s.ID)
		}
	}
	for id := range n.missing {
		if _, ok := voter[id]; !ok {
			delete(n.missing, id)
		}
	}
	for id := range n.kept {
		if _, ok := n.missing[id]; !ok {
			delete(n.kept, id)
		}
	}
	n.reapMu.Unlock()
	sort.Strings(due)
	for _, id := range due {
		if voter[id] && voters-1 < minVoters {
			n.reapMu.Lock()
			first := !n.kept[id]
			if n.kept == nil {
				n.kept = make(map[string]bool)
			}
			n.kept[id] = true
			n.reapMu.Unlock()
			if first {
				n.log.Warn("raft server dead, kept until a replacement joins: removing it would leave fewer than 3 voters",
					"member", id, "voters", voters)
			}
			return
		}
		if err := n.store.RemoveServer(ctx, id); err != nil {
			n.log.Warn("remove dead raft server", "member", id, "err", err)
			return
		}
		if voter[id] {
			voters--
		}
		n.log.Info("removed raft server dead for longer than -raft-reap-after", "member", id, "after", n.cfg.ReapAfter)
	}
}

// voterTrouble logs why a member is not (yet) a voter: at Warn the first
// time for its address and reason, at Debug on the reconciles after, which
// retry it every few seconds.
func (n *Node) voterTrouble(name, addr, msg string, err error) {
	key := addr + "\x00" + msg
	n.refusedMu.Lock()
	first := n.refused[name] != key
	if first {
		if n.refused == nil {
			n.refused = make(map[string]string)
		}
		n.refused[name] = key
	}
	n.refusedMu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	n.log.Log(context.Background(), level, msg, "member", name, "raft", addr, "err", err)
}

// transferLeadership hands leadership over before this node stops, so the
// cluster does not wait out an election timeout.
func (n *Node) transferLeadership() {
	if !n.store.IsLeader() || n.gossip == nil {
		return
	}
	if servers, err := n.store.Servers(); err == nil && len(servers) < 2 {
		return // a one-voter cluster: nobody to hand over to
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
func (n *Node) Leader() (name, admin string) {
	id, _ := n.store.Leader()
	if id == "" {
		return "", ""
	}
	if id == n.cfg.Name {
		return id, n.adminAdvertised()
	}
	if n.gossip != nil {
		for _, m := range n.gossip.Members() {
			if m.Name == id {
				return id, adminAddr(m.Meta[metaAdmin])
			}
		}
	}
	return id, ""
}

// WaitIndex blocks until this node applied idx.
func (n *Node) WaitIndex(ctx context.Context, idx uint64) error {
	return n.store.WaitIndex(ctx, idx)
}

// WaitApplied blocks until every raft server reports (through gossip
// metadata) that it applied idx.
func (n *Node) WaitApplied(ctx context.Context, idx uint64) error {
	if err := n.store.WaitIndex(ctx, idx); err != nil {
		return err
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		lagging, unheard := n.behind(idx)
		if len(lagging) == 0 {
			// Waiting on servers nobody can hear would only make every
			// write with a node down take the whole bound: say so now.
			if len(unheard) > 0 {
				return fmt.Errorf("not confirmed applied on %s: cannot be heard from", strings.Join(unheard, ", "))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not confirmed applied on %s: %w", strings.Join(append(lagging, unheard...), ", "), ctx.Err())
		case <-tick.C:
		}
	}
}

// behind lists the raft servers not known to have applied idx: lagging,
// those whose advertised applied index is below it, and unheard, those this
// node cannot hear (suspect, dead, left or unknown to gossip), which may
// well be proxying on an older config: a node cut off is exactly the one an
// operator asking "applied everywhere?" needs to hear about.
func (n *Node) behind(idx uint64) (lagging, unheard []string) {
	if n.gossip == nil {
		return nil, nil
	}
	servers, err := n.store.Servers()
	if err != nil {
		return []string{"(raft configuration unavailable)"}, nil
	}
	members := make(map[string]gossip.Member)
	for _, m := range n.gossip.Members() {
		members[m.Name] = m
	}
	for _, s := range servers {
		if s.ID == n.cfg.Name {
			if applied := n.appliedIndex(); applied < idx {
				lagging = append(lagging, fmt.Sprintf("%s (at %d)", s.ID, applied))
			}
			continue
		}
		m, ok := members[s.ID]
		switch {
		case !ok:
			unheard = append(unheard, s.ID+" (not in gossip)")
		case m.State != gossip.StateAlive:
			unheard = append(unheard, s.ID+" ("+m.State+")")
		default:
			applied, _ := strconv.ParseUint(m.Meta[metaApplied], 10, 64)
			if applied < idx {
				lagging = append(lagging, fmt.Sprintf("%s (at %d)", s.ID, applied))
			}
		}
	}
	return lagging, unheard
}
