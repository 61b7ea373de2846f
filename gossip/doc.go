// Package gossip shares each balancer node's live per-backend load (in-flight
// count and circuit-breaker state) with its peers over
// github.com/hashicorp/memberlist, and keeps this node's view of every live
// peer's latest report, so that least-connection decisions are cluster-wide.
//
// It owns the memberlist instance and its delegates, the versioned report
// codec, the per-peer view with ages, and the eviction of dead, left and
// stale peers. It imports memberlist and the standard library only: never
// proxy, consensus or breaker; the node translates between them.
//
// # Use
//
//	g, err := gossip.New(cfg)          // validates, binds the sockets
//	go g.Run(ctx)                      // join, send, evict; Leave+Shutdown when ctx ends
//	g.Publish(states)                  // any goroutine, as often as you like: cheap
//	for range g.Subscribe() { g.Peers() ... }  // rebuild routing on change
//
// # Wire format (version 1)
//
// Every message starts with a version byte (1) and a kind byte. Integers are
// varints (encoding/binary): "uvarint" unsigned, "varint" zigzag-signed.
// Strings are a uvarint length and that many bytes.
//
//	report chunk (kind 1), one UDP packet, at most MaxMessageSize (1,100) bytes:
//	  byte    version = 1
//	  byte    kind = 1
//	  string  origin node name      (1..128 bytes)
//	  uvarint seq                   per-node report sequence number
//	  uvarint chunk index           0 .. count-1
//	  uvarint chunk count           1 .. MaxChunks (128)
//	  uvarint entries               n, at most remaining bytes / 4
//	  n times:
//	    string  backend ID          (1..255 bytes)
//	    varint  in-flight count     (zigzag)
//	    byte    breaker             0 closed, 1 open, 2 half-open
//
//	bye (kind 2), sent just before memberlist's Leave:
//	  byte version = 1, byte kind = 2, string origin, uvarint seq
//
//	push-pull state (kind 3), memberlist's TCP LocalState/MergeRemoteState:
//	  byte version = 1, byte kind = 3, uvarint count,
//	  count times: uvarint length + one report chunk as above
//
// An 11-byte ID ("backend-001") makes a 14-byte entry: ~76 entries per
// chunk, 200 backends in 3 chunks (2.8 KB); "10.0.1.1:8080"-style IDs fit
// ~60 per chunk.
// Node metadata (Config.Meta, in memberlist's NodeMeta, at most 512 bytes)
// is version byte 1, a uvarint pair count, then key and value strings in
// key order.
//
// The decoder rejects anything else (other versions or kinds, truncation,
// trailing bytes, lengths over the caps, an entry count the remaining bytes
// cannot hold, unknown breaker values) with an error and never panics; it
// allocates in proportion to the input and copies every string it keeps.
// Dropped messages are counted in Stats.DecodeErrors and logged at Debug.
//
// # Sequence numbers and freshness
//
// A node starts its seq at the Unix time in nanoseconds when New ran and
// adds one per send round (rounds are at least 1ms apart), so seqs only
// grow, also across a restart. Every round sends the node's full state under
// a new seq, split into chunks. (A seq more than 1ms worth of nanoseconds
// below the applied one cannot be reordering, which would take a million
// rounds: it is taken as a restarted node whose clock went back.)
//
// A receiver assembles the chunks of one seq and replaces the peer's report
// only when all chunks of a seq newer than the applied one have arrived: a
// report is always one consistent snapshot, with every backend exactly once,
// even when backends are added or removed and chunk boundaries move. A chunk
// of a newer seq abandons an unfinished older assembly; chunks of a seq at or
// below the applied one are ignored and counted (StaleIgnored, Duplicates).
// The chunks of a round leave back to back, so waiting for all of them costs
// microseconds; a lost chunk costs one round, repaired by the next one (at
// most SendInterval later: the last change of a burst is sent twice) or by
// push-pull. Per-chunk freshness would tolerate loss a little better but
// could mix chunks cut at different boundaries.
//
// A report leaves the view when it is older than ReportTTL (a peer that
// stopped sending), at once when memberlist reports the peer dead or left
// (NotifyLeave), and at once when the peer announces its leave (bye). Only
// reports of members memberlist lists as alive are visible; a report that
// arrives before memberlist announces its sender is held (for at most 64
// unknown origins) and shows up when the member joins.
//
// # Sending
//
// Publish only stores the state and wakes the sender. The sender goroutine
// sends at once on the first change after a quiet SendInterval, then at most
// once per SendInterval while changes keep coming (coalescing), once more
// SendInterval after the last change (so that one lost packet does not leave
// peers on an old state until the refresh), and at least every ReportTTL/3
// with or without changes, so peers' copies never expire while the node
// lives. It sends each chunk to every alive member with
// memberlist's SendBestEffort: one UDP packet, one hop, so the delay is one
// packet flight whatever the cluster size. That costs (members-1) packets per
// chunk per round and suits the clusters this balancer targets (up to about
// ten nodes). memberlist's TransmitLimitedQueue is not used (GetBroadcasts
// returns nothing): receivers do not re-broadcast user messages, so a
// piggybacked report reaches only RetransmitMult*log(N) random members and,
// measured on 5 nodes, most reports never reach all peers. For much larger
// clusters the next step would be a queue of NamedBroadcasts ("origin/chunk")
// plus re-broadcast of first-seen seqs by receivers.
//
// memberlist's periodic push-pull carries the chunks of the last round as
// the kind-3 state, applied with the same rules, to repair anything lost,
// and gives a joining node every peer's state at once.
//
// # Membership
//
// The member table is kept from memberlist's EventDelegate (NotifyJoin,
// NotifyLeave, NotifyUpdate), whose callbacks run under memberlist's node
// lock: they only update the table under a short mutex and never call back
// into memberlist. memberlist v0.6.0 tells users neither suspicion nor
// whether a departed node left or failed (Node.State stays zero), so the
// table says "left" for a member that sent a bye before going and "dead"
// otherwise, and "suspect" for a member memberlist still lists as alive but
// that has not been heard from for ReportTTL. Config.DeadNodeReclaimTime
// (default: at once) lets a node restarted under the same name at a new
// address rejoin as soon as its old process is declared dead.
//
// Config.Cluster keeps two clusters from merging: a peer advertising
// another cluster's ID under MetaCluster is refused by memberlist's
// AliveDelegate (it never becomes a member) and MergeDelegate (a join that
// would merge it fails, and the joining side's Join returns why); see
// cluster.go for what memberlist v0.6.0 does with each refusal.
//
// memberlist's own log lines go to Config.Logger at their level.
package gossip
