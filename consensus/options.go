package consensus

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Options configures a Store. Start from DefaultOptions, set NodeID, Bind and
// DataDir, and call Validate (Open does too).
type Options struct {
	// NodeID is the raft server ID: the node's name (-node). It must be
	// unique in the cluster and stable across restarts.
	NodeID string
	// Bind is the raft TCP transport address HOST:PORT (-raft). Port 0 picks
	// a free port the first time and reuses it on later starts from the same
	// DataDir while it is free, because peers keep this address in the raft
	// configuration. A wildcard host (0.0.0.0, ::) needs Advertise.
	Bind string
	// Advertise is the HOST:PORT peers dial, if not the bound address.
	Advertise string
	// DataDir holds raft.db (raft-boltdb: log and stable store), snapshots/
	// and a LOCK file (-data-dir). It is created if missing.
	DataDir string
	// TLS, when set, runs raft over mutual TLS 1.3 (-raft-tls-cert,
	// -raft-tls-key, -raft-tls-ca): Certificates is this node's identity,
	// presented when it accepts and when it dials; ClientCAs verifies the
	// peers that dial in and RootCAs the peers it dials, whose certificates
	// must also name the host of their raft address. Every node of a
	// cluster needs it, or none. nil: plain TCP.
	TLS *tls.Config
	// Logger receives raft's own log at Info and above (never its DEBUG
	// output). nil means slog.Default().
	Logger *slog.Logger

	// Raft timers, defaults from raft.DefaultConfig. Tests shrink them.
	HeartbeatTimeout   time.Duration // follower without contact for this long starts an election
	ElectionTimeout    time.Duration // candidate without a result for this long retries
	LeaderLeaseTimeout time.Duration // leader without quorum contact for this long steps down; <= HeartbeatTimeout
	CommitTimeout      time.Duration // longest a follower waits to learn a new commit index when idle

	SnapshotInterval  time.Duration // how often raft checks whether to snapshot
	SnapshotThreshold uint64        // log entries since the last snapshot that trigger one
	SnapshotRetain    int           // snapshots kept in DataDir/snapshots, >= 1
	TrailingLogs      uint64        // log entries kept after a snapshot, for slow followers
}

// DefaultOptions returns raft's default timers, a Bind of 127.0.0.1:0 and no
// NodeID or DataDir.
func DefaultOptions() Options {
	d := raft.DefaultConfig()
	return Options{
		Bind:               "127.0.0.1:0",
		HeartbeatTimeout:   d.HeartbeatTimeout,
		ElectionTimeout:    d.ElectionTimeout,
		LeaderLeaseTimeout: d.LeaderLeaseTimeout,
		CommitTimeout:      d.CommitTimeout,
		SnapshotInterval:   d.SnapshotInterval,
		SnapshotThreshold:  d.SnapshotThreshold,
		SnapshotRetain:     2,
		TrailingLogs:       d.TrailingLogs,
	}
}

// Validate checks o without touching the network or the disk. Messages name
// the flag (-node, -raft, -data-dir) or the timer and the allowed range.
func (o Options) Validate() error {
	if o.NodeID == "" {
		return fmt.Errorf("-node: a node name is required (it is the raft server ID)")
	}
	bindHost, err := splitHostPort("-raft", o.Bind, true)
	if err != nil {
		return err
	}
	if o.Advertise != "" {
		h, err := splitHostPort("raft advertise address", o.Advertise, false)
		if err != nil {
			return err
		}
		if ip, err := netip.ParseAddr(h); err == nil && ip.IsUnspecified() {
			return fmt.Errorf("raft advertise address %q: a wildcard address cannot be dialled by peers", o.Advertise)
		}
	} else if ip, err := netip.ParseAddr(bindHost); bindHost == "" || err == nil && ip.IsUnspecified() {
		return fmt.Errorf("-raft %q: peers cannot dial a wildcard address; bind a specific IP or set an advertise address", o.Bind)
	}
	if o.DataDir == "" {
		return fmt.Errorf("-data-dir: required (raft log, stable store and snapshots live there)")
	}
	if o.TLS != nil {
		if err := checkNodeTLS(o.TLS); err != nil {
			return err
		}
	}
	if o.SnapshotRetain < 1 {
		return fmt.Errorf("raft snapshot retain %d: want at least 1", o.SnapshotRetain)
	}
	if err := raft.ValidateConfig(o.raftConfig(nil)); err != nil {
		return fmt.Errorf("raft timers: %w", err)
	}
	return nil
}

// splitHostPort checks HOST:PORT with a numeric port; port 0 only if zeroOK.
func splitHostPort(what, addr string, zeroOK bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s %q: want HOST:PORT", what, addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 && !zeroOK {
		lo := 1
		if zeroOK {
			lo = 0
		}
		return "", fmt.Errorf("%s %q: port must be a number %d-65535", what, addr, lo)
	}
	return host, nil
}

// raftConfig builds raft's config; logger may be nil for validation only.
func (o Options) raftConfig(logger hclog.Logger) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(o.NodeID)
	c.HeartbeatTimeout = o.HeartbeatTimeout
	c.ElectionTimeout = o.ElectionTimeout
	c.LeaderLeaseTimeout = o.LeaderLeaseTimeout
	c.CommitTimeout = o.CommitTimeout
	c.SnapshotInterval = o.SnapshotInterval
	c.SnapshotThreshold = o.SnapshotThreshold
	c.TrailingLogs = o.TrailingLogs
	// A voter removed while it is still running (a leader that gave up on
	// it during a long partition) stays up as a non-member, so the leader's
	// reconciliation can add it back when it reappears in gossip.
	c.ShutdownOnRemove = false
	if logger != nil {
		c.Logger = logger
	} else {
		c.LogOutput = io.Discard
	}
	return c
}
