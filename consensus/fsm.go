package consensus

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// apply is the state transition of the replicated config: a pure,
// deterministic function of the current config, the command and the command's
// raft log index. It validates cmd itself, because a committed entry may not
// have been validated by the current binary. On error it returns c unchanged.
// changed reports whether the backend set differs; only then does the result
// carry index as its Index.
func (c Config) apply(cmd Command, index uint64) (next Config, changed bool, err error) {
	if err := Validate(cmd); err != nil {
		return c, false, err
	}
	if cmd.IfIndex != 0 && cmd.IfIndex != c.Index {
		return c, false, fmt.Errorf("%w: config index is %d, the write expected %d", ErrConflict, c.Index, cmd.IfIndex)
	}
	bs := slices.Clone(c.Backends)
	i, found := findBackend(bs, cmd.ID)
	if !found {
		switch cmd.Op {
		case OpSetWeight, OpClearPin, OpSetDrain, OpDelete:
			return c, false, fmt.Errorf("%w: %q", ErrUnknownBackend, cmd.ID)
		}
	}
	switch cmd.Op {
	case OpUpsert:
		if found {
			b := &bs[i]
			b.Address, b.Drain = cmd.Address, cmd.Drain
			if cmd.Weight != nil {
				b.Weight, b.Pinned = *cmd.Weight, true
			}
			break
		}
		b := Backend{ID: cmd.ID, Address: cmd.Address, Weight: DefaultWeight, Drain: cmd.Drain, Source: SourceAPI}
		if cmd.Weight != nil {
			b.Weight, b.Pinned = *cmd.Weight, true
		}
		b.SourceWeight = b.Weight
		bs = slices.Insert(bs, i, b)
	case OpSetWeight:
		bs[i].Weight, bs[i].Pinned = *cmd.Weight, true
	case OpClearPin:
		bs[i].Weight, bs[i].Pinned = bs[i].SourceWeight, false
	case OpSetDrain:
		bs[i].Drain = cmd.Drain
	case OpDelete:
		bs = slices.Delete(bs, i, i+1)
	case OpSeed:
		if c.Index != 0 {
			return c, false, nil // not empty: another seed (or a write) came first
		}
		bs = make([]Backend, 0, len(cmd.Backends))
		for _, in := range cmd.Backends {
			bs = append(bs, Backend{ID: in.ID, Address: in.Address, Weight: in.Weight, Drain: in.Drain,
				Source: in.Source, SourceWeight: in.Weight})
		}
		sortBackends(bs)
	case OpSync:
		bs = syncSource(c.Backends, cmd.Source, cmd.Backends)
	}
	if slices.Equal(bs, c.Backends) {
		return c, false, nil
	}
	return Config{Index: index, Backends: bs}, true, nil
}

// syncSource implements OpSync: it returns a new sorted set built from the
// current one (bs, sorted, not modified) and the source's set.
func syncSource(bs []Backend, source string, in []Backend) []Backend {
	want := make(map[string]Backend, len(in))
	for _, b := range in {
		want[b.ID] = b
	}
	out := make([]Backend, 0, len(bs)+len(in))
	for _, b := range bs {
		if b.Source != source {
			out = append(out, b) // other sources are never touched
			continue
		}
		w, ok := want[b.ID]
		if !ok {
			continue // gone from the source
		}
		b.Address, b.SourceWeight = w.Address, w.Weight
		if !b.Pinned {
			b.Weight = w.Weight
		}
		out = append(out, b)
	}
	for _, w := range in {
		if _, exists := findBackend(bs, w.ID); exists {
			continue // updated above, or owned by another source
		}
		out = append(out, Backend{ID: w.ID, Address: w.Address, Weight: w.Weight, Drain: w.Drain,
			Source: source, SourceWeight: w.Weight})
	}
	sortBackends(out)
	return out
}

// applyResult is what FSM.Apply returns for every log entry; it arrives as
// raft.ApplyFuture.Response(). Index is the config index after the entry
// (the entry's index if it changed the config, the unchanged index if not),
// so a caller can wait for exactly that index on any node.
type applyResult struct {
	Index   uint64
	Changed bool
	Err     error
}

// state is one published config and cluster ID, plus the channel closed
// when it is replaced.
type state struct {
	cfg       Config        // immutable
	clusterID string        // "" until an OpSetClusterID is applied
	next      chan struct{} // closed when a newer state is published
}

// fsm is the raft.FSM. raft calls Apply, Snapshot and Restore from its single
// FSM goroutine; readers (Store.Config, WaitIndex) load the published state
// pointer without locks. Snapshot.Persist runs on another goroutine but only
// reads an immutable Config.
type fsm struct {
	cur atomic.Pointer[state]

	// Counted for metrics only; never read by Apply.
	changes  atomic.Uint64 // entries that changed the config since start
	rejected atomic.Uint64 // entries that failed to decode or apply

	mu     sync.Mutex      // guards subs and closed
	subs   []chan struct{} // buffer 1, coalesced change signals
	closed bool
}

var _ raft.FSM = (*fsm)(nil)

func newFSM() *fsm {
	f := &fsm{}
	f.cur.Store(&state{cfg: Config{Backends: []Backend{}}, next: make(chan struct{})})
	return f
}

func (f *fsm) config() Config { return f.cur.Load().cfg }

func (f *fsm) clusterID() string { return f.cur.Load().clusterID }

// publish replaces the config, keeping the cluster ID.
func (f *fsm) publish(cfg Config) { f.publishState(cfg, f.clusterID()) }

// publishState replaces the state, wakes waiters and signals subscribers
// without blocking. Called only from raft's FSM goroutine (or before raft
// starts).
func (f *fsm) publishState(cfg Config, clusterID string) {
	old := f.cur.Swap(&state{cfg: cfg, clusterID: clusterID, next: make(chan struct{})})
	close(old.next)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending
		}
	}
}

// subscribe returns a channel (buffer 1) that receives a signal after every
// config change, coalescing signals the reader has not taken yet. It starts
// with one pending signal, so the reader first acts on the current config.
// It is closed by close.
func (f *fsm) subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	ch <- struct{}{}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		close(ch)
		return ch
	}
	f.subs = append(f.subs, ch)
	return ch
}

func (f *fsm) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	for _, ch := range f.subs {
		close(ch)
	}
	f.subs = nil
}

// Apply applies one committed log entry. It never panics and never blocks:
// an entry it cannot decode or apply changes nothing and returns its error
// in the applyResult.
func (f *fsm) Apply(l *raft.Log) any {
	cur := f.config()
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		f.rejected.Add(1)
		return applyResult{Index: cur.Index, Err: err}
	}
	if cmd.Op == OpSetClusterID {
		return f.setClusterID(cur, cmd)
	}
	next, changed, err := cur.apply(cmd, l.Index)
	if err != nil {
		f.rejected.Add(1)
		return applyResult{Index: cur.Index, Err: err}
	}
	if changed {
		f.changes.Add(1)
		f.publish(next)
	}
	return applyResult{Index: next.Index, Changed: changed}
}

// setClusterID applies OpSetClusterID: the first one committed wins. It
// publishes (and so signals subscribers, which snapshot) even though the
// config is unchanged, so the ID reaches the node's gossip metadata and its
// next snapshot at once.
func (f *fsm) setClusterID(cur Config, cmd Command) applyResult {
	if err := Validate(cmd); err != nil {
		f.rejected.Add(1)
		return applyResult{Index: cur.Index, Err: err}
	}
	if cmd.IfIndex != 0 && cmd.IfIndex != cur.Index {
		f.rejected.Add(1)
		return applyResult{Index: cur.Index, Err: fmt.Errorf("%w: config index is %d, the write expected %d", ErrConflict, cur.Index, cmd.IfIndex)}
	}
	if f.clusterID() != "" {
		return applyResult{Index: cur.Index}
	}
	f.publishState(cur, cmd.ClusterID)
	return applyResult{Index: cur.Index, Changed: true}
}

// Snapshot captures the current config and cluster ID: the published state
// is immutable, so this copies a pointer and returns at once.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	st := f.cur.Load()
	return snapshot{cfg: st.cfg, clusterID: st.clusterID}, nil
}

// snapshotDoc is the snapshot file format: JSON, versioned. ClusterID was
// added without a version bump: it is optional, a snapshot without it (from
// an older node) still loads, and an older node reading a newer snapshot
// ignores the field (encoding/json skips unknown fields here).
type snapshotDoc struct {
	Version   int    `json:"version"`
	Config    Config `json:"config"`
	ClusterID string `json:"cluster_id,omitempty"`
}

const snapshotV1 = 1

// Restore replaces the whole state with the snapshot's. raft calls it at
// startup (from the latest snapshot) and when the leader installs one.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var doc snapshotDoc
	if err := json.NewDecoder(rc).Decode(&doc); err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	if doc.Version != snapshotV1 {
		return fmt.Errorf("snapshot version %d: this node reads version %d", doc.Version, snapshotV1)
	}
	cfg := doc.Config.clone()
	sortBackends(cfg.Backends)
	id := doc.ClusterID
	switch {
	case id != "" && !validClusterID(id):
		return fmt.Errorf("snapshot cluster_id %.40q: want %d lowercase hex digits", id, ClusterIDLen)
	case id == "":
		// A snapshot from a node that predates cluster IDs (it refused
		// OpSetClusterID) says nothing about the ID, and the ID this FSM
		// holds can only be this cluster's first committed one, which
		// never changes: keep it rather than forget it. At startup the
		// FSM holds none, so this keeps nothing.
		id = f.clusterID()
	}
	f.publishState(cfg, id)
	return nil
}

type snapshot struct {
	cfg       Config
	clusterID string
}

// Persist writes the snapshot as JSON. raft runs it concurrently with Apply;
// it reads only the immutable Config it captured.
func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(snapshotDoc{Version: snapshotV1, Config: s.cfg, ClusterID: s.clusterID}); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

func (snapshot) Release() {}
