package consensus

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

func TestNewClusterIDIsValidAndRandom(t *testing.T) {
	a, b := NewClusterID(), NewClusterID()
	if a == b {
		t.Fatalf("two cluster IDs are equal: %s", a)
	}
	for _, id := range []string{a, b} {
		if err := Validate(SetClusterID(id)); err != nil {
			t.Fatalf("NewClusterID() = %q: %v", id, err)
		}
	}
	for _, bad := range []string{"", "abc", strings.Repeat("A", ClusterIDLen), strings.Repeat("0", ClusterIDLen+1), strings.Repeat("g", ClusterIDLen)} {
		if err := Validate(SetClusterID(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetClusterID(%q): %v, want ErrInvalid", bad, err)
		}
	}
	if err := Validate(Command{Op: OpDelete, ID: "a", ClusterID: a}); !errors.Is(err, ErrInvalid) {
		t.Errorf("cluster_id on a delete: %v, want ErrInvalid", err)
	}
}

// The first committed ID wins; a later one changes nothing. Neither touches
// the backend config, so a Seed after the ID still finds it empty.
func TestFSMClusterIDSetOnce(t *testing.T) {
	f := newFSM()
	sub := f.subscribe()
	<-sub
	first, second := NewClusterID(), NewClusterID()
	res := fsmApply(t, f, 3, mustEncode(t, SetClusterID(first)))
	if res.Err != nil || !res.Changed || res.Index != 0 {
		t.Fatalf("first set: %+v", res)
	}
	if got := f.clusterID(); got != first {
		t.Fatalf("cluster ID %q, want %q", got, first)
	}
	select {
	case <-sub:
	default:
		t.Fatal("setting the ID did not signal subscribers (the node snapshots on that signal)")
	}
	res = fsmApply(t, f, 4, mustEncode(t, SetClusterID(second)))
	if res.Err != nil || res.Changed {
		t.Fatalf("second set: %+v, want a no-op", res)
	}
	if got := f.clusterID(); got != first {
		t.Fatalf("second set replaced the ID: %q, want %q", got, first)
	}
	res = fsmApply(t, f, 5, mustEncode(t, Seed(sampleConfig().Backends)))
	if res.Err != nil || !res.Changed || f.config().Index != 5 {
		t.Fatalf("seed after the ID: %+v (index %d)", res, f.config().Index)
	}
	if got := f.clusterID(); got != first {
		t.Fatalf("a config change lost the ID: %q", got)
	}
}

func TestFSMClusterIDSnapshotRestore(t *testing.T) {
	id := NewClusterID()
	src := newFSM()
	fsmApply(t, src, 2, mustEncode(t, SetClusterID(id)))
	fsmApply(t, src, 3, mustEncode(t, Seed(sampleConfig().Backends)))
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	dst := newFSM()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := dst.clusterID(); got != id {
		t.Fatalf("restored cluster ID %q, want %q", got, id)
	}
	if got := dst.config().Index; got != 3 {
		t.Fatalf("restored index %d, want 3", got)
	}

	// A snapshot written before cluster IDs existed loads, with no ID.
	old := `{"version":1,"config":{"index":7,"backends":[{"id":"a","address":"h:1","weight":1,"source":"static","source_weight":1}]}}`
	fresh := newFSM()
	if err := fresh.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatalf("old snapshot: %v", err)
	}
	if got := fresh.clusterID(); got != "" || fresh.config().Index != 7 {
		t.Fatalf("old snapshot: ID %q index %d", got, fresh.config().Index)
	}
	// Installed on a node that has the ID (an older leader's snapshot), it
	// does not make the node forget it.
	if err := dst.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	if got := dst.clusterID(); got != id || dst.config().Index != 7 {
		t.Fatalf("old snapshot over an ID: ID %q index %d", got, dst.config().Index)
	}

	bad := `{"version":1,"config":{"index":1,"backends":[]},"cluster_id":"not-hex"}`
	if err := newFSM().Restore(io.NopCloser(strings.NewReader(bad))); err == nil {
		t.Fatal("a snapshot with a malformed cluster ID was restored")
	}
}

// The ID survives a restart, both from a snapshot (known right after Open,
// before any election) and from the log alone (known once replayed).
func TestStoreClusterIDSurvivesRestart(t *testing.T) {
	for _, withSnapshot := range []bool{true, false} {
		name := "log"
		if withSnapshot {
			name = "snapshot"
		}
		t.Run(name, func(t *testing.T) {
			o := testOptions(t, "n0", t.TempDir(), testLogger(t))
			s := openStore(t, o)
			if s.ClusterID() != "" {
				t.Fatalf("new store has cluster ID %q", s.ClusterID())
			}
			if err := s.BootstrapSelf(); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 5*time.Second, "leader", func() error {
				if !s.IsLeader() {
					return errors.New(s.State())
				}
				return nil
			})
			id := NewClusterID()
			if res, err := s.Apply(ctxTimeout(t, 5*time.Second), SetClusterID(id)); err != nil || !res.Changed {
				t.Fatalf("set: %+v %v", res, err)
			}
			if res, err := s.Apply(ctxTimeout(t, 5*time.Second), SetClusterID(NewClusterID())); err != nil || res.Changed {
				t.Fatalf("second set: %+v %v, want a no-op", res, err)
			}
			if withSnapshot {
				if err := s.Snapshot(ctxTimeout(t, 5*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s = openStore(t, o)
			if withSnapshot && s.ClusterID() != id {
				t.Fatalf("after restart from a snapshot: cluster ID %q, want %q at once", s.ClusterID(), id)
			}
			testutil.Eventually(t, 10*time.Second, "cluster ID replayed", func() error {
				if got := s.ClusterID(); got != id {
					return errors.New("cluster ID " + got)
				}
				return nil
			})
		})
	}
}
