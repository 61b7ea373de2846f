package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/thebalancer/balancer/gossip"
)

// peersFile holds the gossip addresses of the members this node has seen
// alive, so that a node restarted without -join finds its cluster again. The
// README's quick start starts the first node without -join; after a graceful
// stop the leader removes it from raft, and only gossip can bring it back.
const peersFile = "peers.json"

// peersKeep is how long a member not seen alive stays in the file, the same
// time gossip keeps trying a member declared dead.
const peersKeep = 72 * time.Hour

// knownPeer is one remembered member: where it was last seen alive, and when.
type knownPeer struct {
	Addr string    `json:"addr"`
	Seen time.Time `json:"seen"`
}

type peersDoc struct {
	Members map[string]knownPeer `json:"members"`
}

// loadPeers reads the members remembered in dir, leaving out those not seen
// for peersKeep. A missing file is no error; a damaged one is, but the
// caller only logs it: the node can still start with -join.
func loadPeers(dir string, now time.Time) (map[string]knownPeer, error) {
	b, err := os.ReadFile(filepath.Join(dir, peersFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var doc peersDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, peersFile), err)
	}
	maps.DeleteFunc(doc.Members, func(_ string, p knownPeer) bool { return p.Addr == "" || now.Sub(p.Seen) > peersKeep })
	return doc.Members, nil
}

// savePeers writes members to dir, replacing the file only once the new one
// is complete, so a full disk or a crash mid-write leaves the old list.
func savePeers(dir string, members map[string]knownPeer) error {
	b, err := json.MarshalIndent(peersDoc{Members: members}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, peersFile+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, peersFile))
}

// rejoinAddrs turns remembered members into gossip's Rejoin list.
func rejoinAddrs(known map[string]knownPeer) map[string]string {
	out := make(map[string]string, len(known))
	for name, p := range known {
		out[name] = p.Addr
	}
	return out
}

// rememberPeers adds the members alive now to the remembered ones and hands
// the list to the saver when a member or an address is new. Members are
// never dropped for being away: the one a restarted node can reach may be
// any of them. They go after peersKeep without being seen alive.
func (n *Node) rememberPeers(now time.Time) {
	if n.gossip == nil {
		return
	}
	changed := false
	for _, m := range n.gossip.Members() {
		if m.Name == n.cfg.Name || m.State != gossip.StateAlive || m.Addr == "" {
			continue
		}
		old, ok := n.known[m.Name]
		changed = changed || !ok || old.Addr != m.Addr
		n.known[m.Name] = knownPeer{Addr: m.Addr, Seen: now}
	}
	for name, p := range n.known {
		if now.Sub(p.Seen) > peersKeep {
			delete(n.known, name)
			changed = true
		}
	}
	if !changed || len(n.known) == 0 {
		return
	}
	select { // the saver takes the newest list; an older one waiting is dropped
	case <-n.peersSave:
	default:
	}
	n.peersSave <- maps.Clone(n.known)
}

// savePeersLoop writes the lists rememberPeers hands over, off the
// consensus loop: an fsync on a slow disk must not hold up applying configs.
func (n *Node) savePeersLoop(ctx context.Context) {
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case known := <-n.peersSave:
			err := savePeers(n.cfg.DataDir, known)
			switch {
			case err != nil && err.Error() != lastErr:
				n.log.Warn("cannot save the cluster's members to the data dir; a restart without -join may not find the cluster", "err", err)
				lastErr = err.Error()
			case err == nil:
				lastErr = ""
			}
		}
	}
}
