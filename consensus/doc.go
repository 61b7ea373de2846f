// Package consensus owns the replicated backend configuration: the backend
// set, weights, drain flags and pins, the commands that change them, the raft
// FSM that applies those commands, and the raft node (Store) that persists
// them with raft-boltdb and replicates them over raft's TCP transport, or
// over mutual TLS 1.3 (stream.go) when Options.TLS is set.
//
// It imports raft, raft-boltdb/v2, go-hclog and the standard library only.
// It must not import consul/api, memberlist or any other package of this
// module: seeding (consensus/seed) and discovery (gossip) feed it through
// Store.Apply, Store.Bootstrap and Store.AddVoter, and the node wires them.
//
// What the package guarantees:
//   - Every node applies the same committed commands in the same order to the
//     same pure function (Config.apply), so every node holds the same Config
//     for a given index. FSM.Apply never panics: a command that is malformed
//     or does not fit the current config returns an error value
//     (ErrInvalid, ErrUnknownBackend, ErrConflict) and changes nothing.
//   - Config.Index is the raft log index of the last command that changed the
//     config. Commands that change nothing (a Seed of a non-empty config, a
//     Sync with nothing new) leave it alone, so long-polls wake only on change.
//   - The cluster ID (SetClusterID, Store.ClusterID) is set by the first
//     committed OpSetClusterID and never changes after; it is kept in
//     snapshots, so a restarted node knows it before it reaches a quorum.
//   - A Store bootstraps at most once: Bootstrap and BootstrapSelf are no-ops
//     on a node that has raft state (see HasState).
//
// What it leaves to the node: deciding when to bootstrap (bootstrap-expect),
// reconciling voters from gossip on the leader, forwarding writes from
// followers to the leader, and seeding or syncing from Consul.
package consensus
