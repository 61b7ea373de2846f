package consensus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

const (
	// defaultEnqueueTimeout bounds how long raft may take to accept a
	// proposal when the caller's context has no deadline.
	defaultEnqueueTimeout = 10 * time.Second
	// closeWaitTimeout bounds how long Close waits for goroutines blocked on
	// raft futures (see Store.Close).
	closeWaitTimeout = 2 * time.Second
	// nudgeEnqueueTimeout bounds how long Apply may spend handing raft the
	// barrier that pushes the commit index to followers (see nudge).
	nudgeEnqueueTimeout = 50 * time.Millisecond
	addrFile            = "raft-addr"
)

// Server is one member of the raft configuration.
type Server struct {
	ID      string `json:"id"`      // node name
	Address string `json:"address"` // raft HOST:PORT
	Voter   bool   `json:"voter"`
}

// Result is the outcome of a committed command.
type Result struct {
	// Index is the config index after the command: the command's raft index
	// if it changed the config, else the unchanged current index. Wait for
	// it with WaitIndex on any node to read your own write.
	Index uint64
	// Changed reports whether the command changed the config (false for a
	// Seed of a non-empty config or a command that set what was already set).
	Changed bool
}

// Store is one raft node holding the replicated Config. All methods are safe
// for concurrent use. Methods that wait (Apply, WaitIndex, AddVoter, ...) take
// a context and return when it ends; the rest return at once.
type Store struct {
	id   string
	addr string // the address peers dial
	log  *slog.Logger

	raft   *raft.Raft
	bolt   *raftboltdb.BoltStore
	snaps  raft.SnapshotStore
	fsm    *fsm
	unlock func() error // releases DataDir/LOCK
	stream *tlsStream   // raft's mutual TLS layer; nil on plain TCP

	obsCh   chan raft.Observation
	obs     *raft.Observer
	obsDone chan struct{} // closed when the observer loop has returned

	hbMu     sync.Mutex           // guards hbFailed
	hbFailed map[string]time.Time // peer -> last failed heartbeat from this node as leader

	// changeMu serialises AddVoter and RemoveServer: raft allows one
	// configuration change at a time, and prevIndex makes a racing one fail.
	// It is held while waiting for raft, never while raft calls us.
	changeMu sync.Mutex

	mu         sync.Mutex      // guards closing, leaderSubs and waiters.Add
	closing    bool            // Close has started
	leaderSubs []chan struct{} // buffer 1, coalesced
	waiters    sync.WaitGroup  // goroutines blocked on raft futures

	closed    chan struct{} // closed once raft has shut down
	closeOnce sync.Once
	closeErr  error
}

// Open starts a raft node: it creates DataDir if missing, opens raft.db and
// the snapshot store, restores the latest snapshot into the FSM (so a
// restarted node serves its last config at once), binds the TCP transport
// and starts raft. It does not bootstrap: a new node waits to be bootstrapped
// (Bootstrap, BootstrapSelf) or added by a leader (AddVoter); a node with
// state rejoins its cluster by itself. Close releases everything.
func Open(o Options) (*Store, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	hl := newHCLogger(logger, "raft", hclog.Info)

	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("-data-dir: %w", err)
	}
	s := &Store{
		id:      o.NodeID,
		log:     logger,
		fsm:     newFSM(),
		obsCh:   make(chan raft.Observation, 16),
		obsDone: make(chan struct{}),
		closed:  make(chan struct{}),
	}
	var cleanup []func() error
	fail := func(err error) (*Store, error) {
		for _, c := range slices.Backward(cleanup) {
			_ = c() // already failing; the first error is the one to report
		}
		return nil, err
	}
	unlock, err := lockDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	s.unlock = unlock
	cleanup = append(cleanup, unlock)

	dbPath := filepath.Join(o.DataDir, "raft.db")
	s.bolt, err = raftboltdb.New(raftboltdb.Options{Path: dbPath})
	if err != nil {
		return fail(fmt.Errorf("-data-dir: open raft store %s: %w", dbPath, err))
	}
	cleanup = append(cleanup, s.bolt.Close)
	s.snaps, err = raft.NewFileSnapshotStoreWithLogger(o.DataDir, o.SnapshotRetain, hl.Named("snapshot"))
	if err != nil {
		return fail(fmt.Errorf("-data-dir: open snapshot store in %s: %w", o.DataDir, err))
	}

	trans, err := listen(o, hl.Named("net"), logger, &s.stream)
	if err != nil {
		return fail(err)
	}
	cleanup = append(cleanup, trans.Close)
	s.addr = string(trans.LocalAddr())

	logs, err := raft.NewLogCache(512, s.bolt)
	if err != nil {
		return fail(fmt.Errorf("raft log cache: %w", err))
	}
	s.raft, err = raft.NewRaft(o.raftConfig(hl), s.fsm, logs, s.bolt, s.snaps, trans)
	if err != nil {
		return fail(fmt.Errorf("start raft: %w", err))
	}
	s.obs = raft.NewObserver(s.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState, raft.PeerObservation,
			raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	s.raft.RegisterObserver(s.obs)
	go s.observe()
	return s, nil
}

// listen binds the raft TCP transport. With port 0 it first tries the
// address this data dir was bound to last time (see Options.Bind).
// With Options.TLS it runs over mutual TLS and sets *stream.
func listen(o Options, logger hclog.Logger, log *slog.Logger, stream **tlsStream) (*raft.NetworkTransport, error) {
	var adv net.Addr
	if o.Advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", o.Advertise)
		if err != nil {
			return nil, fmt.Errorf("raft advertise address %q: %w", o.Advertise, err)
		}
		adv = a
	}
	bind := func(addr string) (*raft.NetworkTransport, error) {
		tc := &raft.NetworkTransportConfig{MaxPool: 3, Timeout: 10 * time.Second, Logger: logger}
		if o.TLS == nil {
			return raft.NewTCPTransportWithConfig(addr, adv, tc)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		*stream = newTLSStream(ln, adv, o.TLS, log)
		tc.Stream = *stream
		return raft.NewNetworkTransportWithConfig(tc), nil
	}
	path := filepath.Join(o.DataDir, addrFile)
	host, port, _ := net.SplitHostPort(o.Bind)
	var trans *raft.NetworkTransport
	if port == "0" {
		if prev, err := os.ReadFile(path); err == nil {
			if h, p, err := net.SplitHostPort(strings.TrimSpace(string(prev))); err == nil && h == host && p != "0" {
				trans, _ = bind(net.JoinHostPort(h, p)) // taken meanwhile: pick a new port below
			}
		}
	}
	if trans == nil {
		var err error
		if trans, err = bind(o.Bind); err != nil {
			return nil, fmt.Errorf("-raft %s: %w", o.Bind, err)
		}
	}
	// LocalAddr is the advertise address when one is set, so only a
	// transport without one tells us the bound port.
	if _, bound, err := net.SplitHostPort(string(trans.LocalAddr())); err == nil && adv == nil {
		// Best effort: without the file a restart merely picks a new port.
		_ = os.WriteFile(path, []byte(net.JoinHostPort(host, bound)+"\n"), 0o600)
	}
	return trans, nil
}

// observe turns raft observations into coalesced leadership signals and
// keeps track of the peers this node, as leader, fails to heartbeat.
func (s *Store) observe() {
	defer close(s.obsDone)
	for {
		select {
		case o := <-s.obsCh:
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				s.hbMu.Lock()
				if s.hbFailed == nil {
					s.hbFailed = make(map[string]time.Time)
				}
				s.hbFailed[string(d.PeerID)] = time.Now()
				s.hbMu.Unlock()
				continue
			case raft.ResumedHeartbeatObservation:
				s.hbMu.Lock()
				delete(s.hbFailed, string(d.PeerID))
				s.hbMu.Unlock()
				continue
			}
			s.mu.Lock()
			for _, ch := range s.leaderSubs {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			s.mu.Unlock()
		case <-s.closed:
			return
		}
	}
}

// heartbeatFailureWindow is how recent a failed heartbeat must be for
// Unreachable: raft retries a failing peer at least every half heartbeat
// timeout, or after a dial that may take the transport's 10 s timeout; a
// lost "resumed" observation then expires instead of sticking.
const heartbeatFailureWindow = 30 * time.Second

// Unreachable reports whether this node, as leader, has recently failed to
// heartbeat the server id: raft's own evidence that the server is gone, as
// opposed to what gossip believes. Always false on a follower.
func (s *Store) Unreachable(id string) bool {
	if !s.IsLeader() {
		return false
	}
	s.hbMu.Lock()
	defer s.hbMu.Unlock()
	at, ok := s.hbFailed[id]
	return ok && time.Since(at) < heartbeatFailureWindow
}

// ID returns the node's raft server ID.
func (s *Store) ID() string { return s.id }

// RaftAddr returns the raft address peers dial: the advertise address, or
// the bound one (with the real port when Bind asked for port 0).
func (s *Store) RaftAddr() string { return s.addr }

// SetTLS replaces the raft TLS setting (as Options.TLS: this node's
// certificate and the CA pools peers are verified against) for the
// connections made from now on, in both directions; established
// connections are not cut, so raft's pooled connections keep the old
// certificate until they close. A cfg that cannot secure raft, or whose
// certificate lacks the server and client auth usages peers demand, is
// refused and the current setting stays. A store started without TLS
// returns ErrNoTLS: switching to TLS needs every node at once, a restart.
// Safe to call from any goroutine; it does not block on raft.
func (s *Store) SetTLS(cfg *tls.Config) error {
	if s.stream == nil {
		return ErrNoTLS
	}
	return s.stream.setConfig(cfg)
}

// HasState reports whether this node has raft state on disk (a log, a term
// or a snapshot): it was bootstrapped or has joined a cluster before. A node
// with state must never be bootstrapped again; it rejoins by itself.
func (s *Store) HasState() (bool, error) {
	ok, err := raft.HasExistingState(s.bolt, s.bolt, s.snaps)
	if err != nil {
		return false, fmt.Errorf("read raft state: %w", err)
	}
	return ok, nil
}

// BootstrapSelf bootstraps a single-voter cluster of this node alone. Use it
// only for -bootstrap-expect 1 or a lone node without cluster flags: a node
// that is meant to join others must never call it (two clusters would form,
// and adding one's nodes to the other silently diverges their configs). It
// is a no-op on a node with state.
func (s *Store) BootstrapSelf() error {
	return s.Bootstrap([]Server{{ID: s.id, Address: s.addr, Voter: true}})
}

// Bootstrap bootstraps a new cluster with the given voters, which must
// include this node (same ID and RaftAddr). For -bootstrap-expect N every
// founder must call it with the identical list (the same IDs and addresses);
// it is sorted by ID here, so discovery order does not matter. It is a no-op
// on a node that has raft state (HasState), including one that another
// founder's leader has already reached, so calling it again after a restart
// or a race is safe.
func (s *Store) Bootstrap(servers []Server) error {
	if len(servers) == 0 {
		return fmt.Errorf("bootstrap: no servers")
	}
	var cfg raft.Configuration
	self := false
	for _, sv := range servers {
		if sv.ID == "" || sv.Address == "" {
			return fmt.Errorf("bootstrap: server %q at %q: ID and address are required", sv.ID, sv.Address)
		}
		if !sv.Voter {
			return fmt.Errorf("bootstrap: server %s: founders must be voters", sv.ID)
		}
		for _, o := range cfg.Servers {
			if string(o.ID) == sv.ID || string(o.Address) == sv.Address {
				return fmt.Errorf("bootstrap: server %s at %s is listed twice", sv.ID, sv.Address)
			}
		}
		if sv.ID == s.id {
			if sv.Address != s.addr {
				return fmt.Errorf("bootstrap: this node %s is listed at %s but its raft address is %s", sv.ID, sv.Address, s.addr)
			}
			self = true
		}
		cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(sv.ID), Address: raft.ServerAddress(sv.Address)})
	}
	if !self {
		return fmt.Errorf("bootstrap: the server list does not include this node %s", s.id)
	}
	slices.SortFunc(cfg.Servers, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })

	has, err := s.HasState()
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if has {
		return nil
	}
	if err := s.raft.BootstrapCluster(cfg).Error(); err != nil {
		if errors.Is(err, raft.ErrCantBootstrap) {
			return nil // state appeared since HasState: someone else got here first
		}
		return fmt.Errorf("bootstrap: %w", s.mapErr(err))
	}
	s.log.Info("bootstrapped a new raft cluster", "voters", len(cfg.Servers))
	return nil
}

// Apply validates c, proposes it on this node (which must be the leader),
// and waits until it is committed and applied here. A nil error means the
// command is applied on the leader; followers apply it shortly after (wait
// for Result.Index with WaitIndex to read your write on another node).
//
// Errors: ErrInvalid, ErrUnknownBackend, ErrConflict (the FSM refused it:
// nothing changed); ErrNotLeader (forward to Leader()); ErrNoLeader (no
// leader, no quorum, or the outcome is unknown: see errors.go). If ctx ends
// before raft answers, Apply returns ErrNoLeader wrapping ctx.Err() when the
// deadline passed, or ctx.Err() when it was cancelled; the command may still
// be applied later. When the FSM refuses the command, Result.Index is the
// unchanged current config index (useful in a 409 answer).
//
// After a change commits, Apply also appends a raft barrier without waiting
// for it, so followers learn the new commit index at once: applied on all
// three nodes in about 2 ms instead of CommitTimeout..2×CommitTimeout.
func (s *Store) Apply(ctx context.Context, c Command) (Result, error) {
	if err := Validate(c); err != nil {
		return Result{}, err
	}
	data, err := EncodeCommand(c)
	if err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("apply: not proposed: %w", err)
	}
	if s.raft.State() != raft.Leader {
		return Result{}, s.notLeader()
	}
	f := s.raft.Apply(data, enqueueTimeout(ctx))
	if err := s.await(ctx, f); err != nil {
		if proposed(err) {
			return Result{}, fmt.Errorf("%w (%w)", s.mapErr(err), ErrOutcomeUnknown)
		}
		return Result{}, s.mapErr(err)
	}
	resp, ok := f.Response().(applyResult)
	if !ok {
		return Result{}, fmt.Errorf("apply: unexpected FSM response %T", f.Response())
	}
	if resp.Changed {
		s.nudge()
	}
	return Result{Index: resp.Index, Changed: resp.Changed}, resp.Err
}

// nudge makes followers apply the entry just committed now rather than
// after up to 2×CommitTimeout: raft tells followers the new commit index
// only with the next AppendEntries, which an idle leader sends after a
// random CommitTimeout..2×CommitTimeout. A barrier entry is such a message.
// Nobody waits for it: a lost nudge only means the usual delay.
func (s *Store) nudge() {
	_ = s.raft.Barrier(nudgeEnqueueTimeout)
}

// Barrier waits until every entry committed before the call is applied to
// this node's FSM. A new leader calls it before acting on Config (seeding,
// syncing). Leader only.
func (s *Store) Barrier(ctx context.Context) error {
	if s.raft.State() != raft.Leader {
		return s.notLeader()
	}
	if err := s.await(ctx, s.raft.Barrier(enqueueTimeout(ctx))); err != nil {
		return s.mapErr(err)
	}
	return nil
}

// Snapshot persists the applied config in a raft snapshot now, so that a
// node that crashes comes back with it at once, before it can reach a
// quorum (raft replays its log only once a leader confirms the commit
// index). Config changes are rare and a snapshot is a few KiB, so the node
// calls it after every applied change. Nothing new to snapshot is not an error.
func (s *Store) Snapshot(ctx context.Context) error {
	err := s.await(ctx, s.raft.Snapshot())
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return err
}

// Config returns the config applied on this node: a copy the caller may
// keep and change. On a follower it may lag the leader by a heartbeat.
func (s *Store) Config() Config { return s.fsm.config().clone() }

// ClusterID returns the raft cluster's ID as applied on this node (see
// SetClusterID), or "" while none is known: before the leader has named a
// new cluster, on a node not yet in a cluster, or on a follower still
// catching up. A restarted node has it from its snapshot. Once set it never
// changes.
func (s *Store) ClusterID() string { return s.fsm.clusterID() }

// AppliedIndex returns Config().Index without copying the config.
func (s *Store) AppliedIndex() uint64 { return s.fsm.config().Index }

// WaitIndex blocks until this node's config index is at least idx, ctx ends
// (ctx.Err() is wrapped), or the store closes (ErrClosed). A long-poll for
// "newer than N" waits for N+1. It wakes on every config change; it never
// polls.
func (s *Store) WaitIndex(ctx context.Context, idx uint64) error {
	for {
		st := s.fsm.cur.Load()
		if st.cfg.Index >= idx {
			return nil
		}
		select {
		case <-st.next:
		case <-ctx.Done():
			return fmt.Errorf("wait for config index %d (applied %d): %w", idx, st.cfg.Index, ctx.Err())
		case <-s.closed:
			return fmt.Errorf("wait for config index %d (applied %d): %w", idx, st.cfg.Index, ErrClosed)
		}
	}
}

// Subscribe returns a channel that receives a signal (buffer 1, coalesced)
// after the applied config changes; read Config() then. It starts with one
// pending signal, so the reader acts on the current config first. Close
// closes it. Each call returns a new channel; call it once per consumer.
func (s *Store) Subscribe() <-chan struct{} { return s.fsm.subscribe() }

// SubscribeLeadership returns a channel that receives a signal (buffer 1,
// coalesced) when this node's raft state, the known leader or the peer set
// changes; read IsLeader()/Leader() then. It starts with one pending signal.
// Signals never block raft (a raft observer that drops when full). Close
// closes it. The node uses it to react to leadership gain: Barrier, seed,
// reconcile voters.
func (s *Store) SubscribeLeadership() <-chan struct{} {
	ch := make(chan struct{}, 1)
	ch <- struct{}{}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		close(ch)
		return ch
	}
	s.leaderSubs = append(s.leaderSubs, ch)
	return ch
}

// Leader returns the current leader's ID and raft address, or empty strings
// when no leader is known.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the raft leader right now.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// State returns "leader", "follower", "candidate" or "shutdown".
func (s *Store) State() string { return strings.ToLower(s.raft.State().String()) }

// Servers returns the latest raft configuration known to this node (on a
// follower it may lag the leader's).
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", s.mapErr(err))
	}
	var out []Server
	for _, sv := range f.Configuration().Servers {
		out = append(out, Server{ID: string(sv.ID), Address: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddVoter adds a voter, or updates the address of a known one, and waits
// until the change is committed. It is a no-op if id is already a voter at
// addr. Leader only. Changes are serialised, and each names the
// configuration index it was computed from, so a concurrent change makes it
// fail rather than clobber (retry on the next reconcile).
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	if id == "" {
		return fmt.Errorf("add voter: empty server ID")
	}
	if _, err := splitHostPort("add voter "+id+": raft address", addr, false); err != nil {
		return err
	}
	// A voter this node cannot reach (or, over TLS, complete the mutual
	// handshake with) would count towards quorum without ever voting:
	// check before adding it.
	if err := s.checkPeer(ctx, addr); err != nil {
		return fmt.Errorf("add voter %s: not adding a server this node cannot reach over raft: %w", id, err)
	}
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	if s.raft.State() != raft.Leader {
		return s.notLeader()
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("add voter %s: %w", id, s.mapErr(err))
	}
	for _, sv := range cf.Configuration().Servers {
		if string(sv.ID) == id && string(sv.Address) == addr && sv.Suffrage == raft.Voter {
			return nil
		}
		if string(sv.ID) != id && string(sv.Address) == addr {
			return fmt.Errorf("add voter %s: raft address %s belongs to server %s; remove it first", id, addr, sv.ID)
		}
	}
	f := s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), cf.Index(), enqueueTimeout(ctx))
	if err := s.await(ctx, f); err != nil {
		return fmt.Errorf("add voter %s: %w", id, s.mapErr(err))
	}
	return nil
}

// peerCheckTimeout bounds checkPeer: ample for a handshake between voters,
// and short enough that the leader's reconcile round (5s) gets past a
// member whose raft address swallows packets to the members after it.
const peerCheckTimeout = 2 * time.Second

// checkPeer connects to addr and hangs up; over TLS it completes the
// handshake and waits to see whether the peer accepts this node's
// certificate. TLS failures wrap ErrPeerTLS; an unreachable peer's do not
// (see tlsStream.probe). raft's transport drops a connection that closes
// before its first RPC without a word.
func (s *Store) checkPeer(ctx context.Context, addr string) error {
	if s.stream != nil {
		return s.stream.probe(ctx, addr, peerCheckTimeout)
	}
	d := net.Dialer{Timeout: peerCheckTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// RemoveServer removes a server from the raft configuration and waits until
// the change is committed; a no-op if it is not a member. Leader only. A
// leader that removes itself steps down once the change commits.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	if s.raft.State() != raft.Leader {
		return s.notLeader()
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("remove server %s: %w", id, s.mapErr(err))
	}
	if !slices.ContainsFunc(cf.Configuration().Servers, func(sv raft.Server) bool { return string(sv.ID) == id }) {
		return nil
	}
	f := s.raft.RemoveServer(raft.ServerID(id), cf.Index(), enqueueTimeout(ctx))
	if err := s.await(ctx, f); err != nil {
		return fmt.Errorf("remove server %s: %w", id, s.mapErr(err))
	}
	return nil
}

// TransferLeadership hands leadership to the most up-to-date voter and
// waits for the transfer, so a graceful leave does not make the cluster wait
// out an election timeout. It is a no-op on a node that is not the leader.
func (s *Store) TransferLeadership(ctx context.Context) error {
	if s.raft.State() != raft.Leader {
		return nil
	}
	if err := s.await(ctx, s.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("transfer leadership: %w", s.mapErr(err))
	}
	return nil
}

// Close stops the node: it snapshots the FSM (best effort, so a restart
// serves this config before it reaches a quorum), shuts raft down (not
// graceful: call TransferLeadership first on a leader), closes the
// subscription channels, raft.db and the data dir lock. It is idempotent;
// every call returns the first call's error. Waits in progress end with
// ErrClosed (wrapped in ErrNoLeader for writes).
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Store) close() error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()

	if err := s.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		s.log.Warn("raft snapshot before shutdown skipped", "err", err)
	}
	errs := []error{s.raft.Shutdown().Error()} // also closes the transport
	s.raft.DeregisterObserver(s.obs)
	close(s.closed)
	<-s.obsDone

	// raft resolves a pending future on shutdown, except one whose entry was
	// committed but not yet handed to the FSM (raft v1.7.3 drops those);
	// don't let such a waiter hold Close forever.
	done := make(chan struct{})
	go func() { s.waiters.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeWaitTimeout):
		s.log.Warn("raft futures still pending after shutdown; not waiting for them")
	}

	s.fsm.close()
	s.mu.Lock()
	for _, ch := range s.leaderSubs {
		close(ch)
	}
	s.leaderSubs = nil
	s.mu.Unlock()

	errs = append(errs, s.bolt.Close(), s.unlock())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close raft store: %w", err)
	}
	return nil
}

// await waits for a raft future or the end of ctx. raft futures have no
// channel, so a goroutine (counted in s.waiters) waits on Error(); if ctx
// ends first the goroutine finishes when raft resolves the future.
func (s *Store) await(ctx context.Context, f raft.Future) error {
	if ctx.Done() == nil {
		return f.Error()
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return f.Error() // raft is shutting down and resolves it
	}
	s.waiters.Add(1)
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer s.waiters.Done()
		done <- f.Error()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enqueueTimeout is the time raft may take to accept a proposal: what is
// left of ctx, or defaultEnqueueTimeout.
func enqueueTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return defaultEnqueueTimeout
}

// notLeader explains why this node cannot take a write.
func (s *Store) notLeader() error {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return fmt.Errorf("%w: %w", ErrNoLeader, ErrClosed)
	}
	id, addr := s.Leader()
	if id == "" || id == s.id {
		return ErrNoLeader
	}
	return fmt.Errorf("%w: the leader is %s at %s", ErrNotLeader, id, addr)
}

// mapErr translates raft's and the context's errors into the package's
// contract errors, keeping the cause matchable.
// proposed reports whether an Apply that failed with err may still commit:
// the entry reached raft's log (or may have) before the failure. Not leader,
// a leadership transfer and an enqueue timeout all fail before that.
func proposed(err error) bool {
	return errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrAbortedByRestore) ||
		errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}

func (s *Store) mapErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return s.notLeader()
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrNoLeader, ErrClosed)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return fmt.Errorf("%w: leadership lost before the change committed, so it may or may not be applied: %w", ErrNoLeader, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: raft did not accept the change in time: %w", ErrNoLeader, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: not committed before the deadline; it may still be applied: %w", ErrNoLeader, err)
	}
	return err
}
