package gossip

import (
	"fmt"

	"github.com/hashicorp/memberlist"
)

// MetaCluster is the metadata key under which a node advertises its
// cluster ID (see Config.Cluster).
const MetaCluster = "cluster"

// otherCluster is in every refusal error, so join can tell a refusal (which
// no retry fixes) from a seed that did not answer, and the log adapter can
// quieten memberlist's own line about each refused message.
const otherCluster = "belongs to another balancer cluster"

// maxRefused bounds the peers remembered as already warned about; past it
// the memory starts over (and each peer is warned about once more).
const maxRefused = 1024

var (
	_ memberlist.MergeDelegate = (*delegate)(nil)
	_ memberlist.AliveDelegate = (*delegate)(nil)
)

// NotifyMerge vets the member list of the other side of a join.
//
// memberlist v0.6.0 (net.go, mergeRemoteState) calls it only for push-pulls
// flagged as a join, on both ends, before merging the remote list; not for
// the periodic anti-entropy push-pull (NotifyAlive covers that). An error
// cancels the merge of that list. On the joining side Join returns it
// ("failed to join ADDR: ERR", and Join fails if no other address
// succeeded). On the contacted side it is only logged ("Failed push/pull
// merge"), and that side has already sent its own state back (handleConn
// sends before it merges): the joiner is stopped by its own check, which is
// why both sides check. One peer of another cluster refuses the whole list:
// joining it would be joining that cluster.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if err := d.g.admit(p); err != nil {
			return err
		}
	}
	return nil
}

// NotifyAlive vets every alive message: memberlist v0.6.0 (state.go,
// aliveNode) calls it for each one, from UDP gossip and from every
// push-pull merge (joins and anti-entropy alike), before it looks the node
// up. An error drops the message: a node not yet known is never added (no
// NotifyJoin, no probes, not in Members), and a known one keeps its old
// state and metadata. It runs under memberlist's node lock.
func (d *delegate) NotifyAlive(peer *memberlist.Node) error {
	return d.g.admit(peer)
}

// admit refuses a peer whose metadata names a cluster other than ours, when
// both are known. Ourselves, peers without an ID and undecodable metadata
// (dropped from Members anyway) are admitted.
func (g *Gossip) admit(n *memberlist.Node) error {
	if g.cfg.Cluster == nil || n.Name == g.cfg.Name {
		return nil
	}
	ours := g.cfg.Cluster()
	if ours == "" {
		return nil
	}
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		return nil
	}
	theirs := meta[MetaCluster]
	if theirs == "" || theirs == ours {
		return nil
	}
	g.st.otherCluster.Add(1)
	key := n.Name + "\x00" + theirs
	g.mu.Lock()
	first := !g.refused[key]
	if first {
		if g.refused == nil || len(g.refused) >= maxRefused {
			g.refused = make(map[string]bool)
		}
		g.refused[key] = true
	}
	g.mu.Unlock()
	if first {
		g.log.Warn("refusing a gossip peer of another balancer cluster: a -join or a remembered address (peers.json, a reused host:port) reached another cluster; fix -join, or give each cluster its own -gossip-key to keep them apart",
			"peer", n.Name, "addr", n.Address(), "peer_cluster", theirs, "our_cluster", ours)
	}
	return fmt.Errorf("member %s at %s %s (%s; this node is in %s)", n.Name, n.Address(), otherCluster, theirs, ours)
}
