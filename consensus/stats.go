package consensus

import (
	"strconv"
	"strings"
	"time"
)

// Stats is a point-in-time view of this node's raft state, for metrics and
// the status page.
type Stats struct {
	State         string // "leader", "follower", "candidate" or "shutdown"
	Term          uint64
	CommitIndex   uint64
	AppliedIndex  uint64 // raft's applied log index (not only config changes)
	LastLogIndex  uint64
	SnapshotIndex uint64
	// ConfigChanges counts the committed entries that changed the config
	// and ConfigRejected those that could not be applied (both since this
	// process started, replayed entries included).
	ConfigChanges  uint64
	ConfigRejected uint64
	// LastContact is how long ago this node last heard from a leader: 0 on
	// the leader, -1 when it never has.
	LastContact time.Duration
}

// Stats reads raft's own statistics. raft reports them as strings (its
// Stats map is meant for humans), so a key that fails to parse reads as 0
// rather than failing a scrape. It may wait briefly for raft's main loop
// (it asks for the configuration); do not call it on a hot path.
func (s *Store) Stats() Stats {
	m := s.raft.Stats()
	u := func(k string) uint64 {
		v, _ := strconv.ParseUint(m[k], 10, 64)
		return v
	}
	st := Stats{
		State:          strings.ToLower(m["state"]),
		Term:           u("term"),
		CommitIndex:    u("commit_index"),
		AppliedIndex:   u("applied_index"),
		LastLogIndex:   u("last_log_index"),
		SnapshotIndex:  u("last_snapshot_index"),
		ConfigChanges:  s.fsm.changes.Load(),
		ConfigRejected: s.fsm.rejected.Load(),
	}
	switch last := s.raft.LastContact(); {
	case st.State == "leader":
		st.LastContact = 0
	case last.IsZero():
		st.LastContact = -1
	default:
		st.LastContact = time.Since(last)
	}
	return st
}
