package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate implements memberlist.Delegate and memberlist.EventDelegate for
// a Gossip, keeping those methods out of Gossip's exported API.
//
// memberlist calls them from its own goroutines (the packet handler, the
// push-pull and probe loops) and, for the EventDelegate, while holding its
// node lock. So every method here returns quickly: it takes Gossip.mu for a
// short update, never calls back into memberlist (Members, NumMembers, Send*
// would deadlock or stall the packet loop), never blocks on a channel, and
// keeps no reference to a buffer memberlist owns.
type delegate struct{ g *Gossip }

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// NotifyConflict hears of two addresses for one name. When the name is ours,
// the cluster still lists a previous process of this node (restarted on a
// new address before the cluster declared the old one dead) and refuses
// our address; the reclaim loop re-joins until the old entry is dead and
// ours is accepted. Conflicts between other nodes are memberlist's to log.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	g := d.g
	if existing.Name != g.cfg.Name {
		return
	}
	g.conflicts.Add(1)
	select {
	case g.conflict <- other.Address():
	default:
	}
}

// NodeMeta returns the encoded Config.Meta (validated to fit limit).
func (d *delegate) NodeMeta(limit int) []byte {
	b := *d.g.meta.Load()
	if len(b) > limit {
		return nil // never exceed memberlist's limit: it would panic
	}
	return b
}

// NotifyMsg handles one report chunk or bye, from UDP (SendBestEffort) or
// TCP. It decodes without the lock (the decoder copies what it keeps) and
// drops malformed input with a counter and a debug log.
func (d *delegate) NotifyMsg(b []byte) {
	g := d.g
	g.st.msgsRecv.Add(1)
	g.st.bytesRecv.Add(uint64(len(b)))
	m, err := decodeMessage(b)
	if err != nil {
		g.st.decodeErrs.Add(1)
		g.log.Debug("gossip message dropped", "bytes", len(b), "err", err)
		return
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.received(m, now) {
		g.notify()
	}
}

// GetBroadcasts returns nothing: reports go out through the sender's
// SendBestEffort, not memberlist's piggybacked gossip (see the package doc).
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState returns the chunks of the last send round as a state bundle
// for push-pull, memberlist's periodic TCP anti-entropy exchange.
func (d *delegate) LocalState(join bool) []byte {
	p := d.g.last.Load()
	if p == nil {
		return nil
	}
	return encodeState(*p)
}

// MergeRemoteState applies a peer's state bundle like the same chunks
// arriving by UDP: stale and duplicate seqs are ignored.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	g := d.g
	if len(buf) == 0 {
		return
	}
	g.st.statesRecv.Add(1)
	g.st.bytesRecv.Add(uint64(len(buf)))
	chunks, err := decodeState(buf)
	if err != nil {
		g.st.decodeErrs.Add(1)
		g.log.Debug("gossip push-pull state dropped", "bytes", len(buf), "err", err)
		return
	}
	msgs := make([]message, 0, len(chunks))
	for _, c := range chunks {
		g.st.msgsRecv.Add(1)
		m, err := decodeMessage(c)
		if err != nil {
			g.st.decodeErrs.Add(1)
			g.log.Debug("gossip push-pull chunk dropped", "bytes", len(c), "err", err)
			continue
		}
		msgs = append(msgs, m)
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := false
	for _, m := range msgs {
		changed = g.received(m, now) || changed
	}
	if changed {
		g.notify()
	}
}

// NotifyJoin records a member that is new or back from dead or left, and
// asks the sender to send our state soon so the newcomer sees it at once.
// The member's name and address leave the lost set: it is back, or it now
// holds the address of a member that is not.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	g := d.g
	meta := d.meta(n)
	now := time.Now()
	addr := n.Address()
	g.mu.Lock()
	r := g.rec(n.Name)
	r.member = true
	r.node = copyNode(n)
	r.meta = meta
	r.state, r.since, r.bye = StateAlive, now, false
	delete(g.lost, n.Name)
	taken := g.dropLostAt(addr)
	if n.Name != g.cfg.Name {
		g.force.Store(true)
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	g.notify()
	g.mu.Unlock()
	g.logTaken(taken, addr, n.Name)
}

// NotifyLeave drops the member's report at once. memberlist v0.6.0 does not
// say whether the member left or failed (Node.State is not filled in), so
// the member is "left" if it announced its leave (a bye) and "dead" if not.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	g := d.g
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.rec(n.Name)
	r.member = true
	r.node = copyNode(n)
	r.state = StateDead
	switch addr := n.Address(); {
	case r.bye || n.Name == g.cfg.Name:
		r.state = StateLeft
		delete(g.lost, n.Name)
	case g.aliveAt()[addr] != "":
		// Another member already uses the address: nothing to reconnect.
		delete(g.lost, n.Name)
	default:
		if g.lost == nil { // a Gossip not made by New (tests of the view)
			g.lost = make(map[string]lostMember)
		}
		g.lost[n.Name] = lostMember{addr: addr, since: now}
	}
	r.since = now
	r.report, r.pend = nil, nil
	g.notify()
}

// NotifyUpdate records a member's new address or metadata. A lost member
// whose address it now holds is no longer tried.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	g := d.g
	meta := d.meta(n)
	addr := n.Address()
	g.mu.Lock()
	r := g.rec(n.Name)
	r.member = true
	r.node = copyNode(n)
	r.meta = meta
	taken := g.dropLostAt(addr)
	g.notify()
	g.mu.Unlock()
	g.logTaken(taken, addr, n.Name)
}

func (d *delegate) meta(n *memberlist.Node) map[string]string {
	m, err := decodeMeta(n.Meta)
	if err != nil {
		d.g.st.decodeErrs.Add(1)
		d.g.log.Debug("gossip member meta dropped", "node", n.Name, "err", err)
	}
	return m
}

// rec returns the record for name, creating it. Caller holds mu.
func (g *Gossip) rec(name string) *nodeRec {
	r := g.nodes[name]
	if r == nil {
		r = &nodeRec{name: name}
		g.nodes[name] = r
	}
	return r
}

// copyNode copies what the sender needs: memberlist owns *n and its Meta.
func copyNode(n *memberlist.Node) memberlist.Node {
	c := *n
	c.Addr = append([]byte(nil), n.Addr...)
	c.Meta = nil
	return c
}
