package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"

	"github.com/thebalancer/balancer/gossip"
)

// peersFile holds the gossip addresses of the members this node last saw
// alive, so that a node restarted without -join finds its cluster again. The
// README's quick start starts the first node without -join; after a graceful
// stop the leader removes it from raft, and only gossip can bring it back.
const peersFile = "peers.json"

type peersDoc struct {
	Members map[string]string `json:"members"` // name -> gossip HOST:PORT
}

// loadPeers reads the members remembered in dir. A missing file is no
// error; a damaged one is, but the caller only logs it: the node can still
// start with -join.
func loadPeers(dir string) (map[string]string, error) {
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
	return doc.Members, nil
}

// savePeers writes members to dir, replacing the file only once the new one
// is complete, so a full disk or a crash mid-write leaves the old list.
func savePeers(dir string, members map[string]string) error {
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

// rememberPeers saves the alive peers when they differ from what was last
// saved. An empty set is never saved: a node cut off from everyone must
// still know where its cluster was when it restarts.
func (n *Node) rememberPeers() {
	if n.gossip == nil {
		return
	}
	alive := make(map[string]string)
	for _, m := range n.gossip.Members() {
		if m.Name != n.cfg.Name && m.State == gossip.StateAlive && m.Addr != "" {
			alive[m.Name] = m.Addr
		}
	}
	if len(alive) == 0 || maps.Equal(alive, n.savedPeers) {
		return
	}
	if err := savePeers(n.cfg.DataDir, alive); err != nil {
		if n.peersErr == nil || n.peersErr.Error() != err.Error() {
			n.log.Warn("cannot save the cluster's members to the data dir; a restart without -join may not find the cluster", "err", err)
		}
		n.peersErr = err
		return
	}
	n.savedPeers, n.peersErr = alive, nil
}
