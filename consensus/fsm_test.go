package consensus

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// sampleConfig: one static, two consul (one pinned), one api backend.
func sampleConfig() Config {
	return Config{Index: 10, Backends: []Backend{
		{ID: "a", Address: "10.0.0.1:80", Weight: 5, Source: SourceStatic, SourceWeight: 5},
		{ID: "c", Address: "10.0.0.3:80", Weight: 7, Source: SourceConsul, SourceWeight: 3, Pinned: true},
		{ID: "d", Address: "10.0.0.4:80", Weight: 2, Source: SourceConsul, SourceWeight: 2},
		{ID: "e", Address: "10.0.0.5:80", Weight: 4, Source: SourceAPI, SourceWeight: 4, Drain: true},
	}}
}

func configEqual(a, b Config) bool { return reflect.DeepEqual(a, b) }

// edit returns sampleConfig at index 11 after fn changed its backends.
func edit(fn func(bs []Backend) []Backend) Config {
	c := sampleConfig()
	c.Backends = fn(c.Backends)
	c.Index = 11
	return c
}

func TestConfigApply(t *testing.T) {
	empty := Config{Backends: []Backend{}}
	tests := []struct {
		name    string
		start   Config // zero value = sampleConfig()
		cmd     Command
		want    Config // ignored when wantErr is set; zero = unchanged
		wantErr error
	}{
		{name: "upsert new without weight gets default, api source, no pin",
			cmd: Upsert("b", "10.0.0.2:80", nil, true),
			want: edit(func(bs []Backend) []Backend {
				return append(bs[:1], append([]Backend{{ID: "b", Address: "10.0.0.2:80", Weight: DefaultWeight, Drain: true, Source: SourceAPI, SourceWeight: DefaultWeight}}, bs[1:]...)...)
			})},
		{name: "upsert new with weight pins it",
			cmd: Upsert("z", "h:1", w32(9), false),
			want: edit(func(bs []Backend) []Backend {
				return append(bs, Backend{ID: "z", Address: "h:1", Weight: 9, Source: SourceAPI, SourceWeight: 9, Pinned: true})
			})},
		{name: "upsert existing keeps source and weight, replaces address and drain",
			cmd:  Upsert("e", "10.9.9.9:81", nil, false),
			want: edit(func(bs []Backend) []Backend { bs[3].Address, bs[3].Drain = "10.9.9.9:81", false; return bs })},
		{name: "upsert existing consul backend with weight pins it",
			cmd:  Upsert("d", "10.0.0.4:80", w32(50), false),
			want: edit(func(bs []Backend) []Backend { bs[2].Weight, bs[2].Pinned = 50, true; return bs })},
		{name: "upsert with identical values changes nothing",
			cmd: Upsert("a", "10.0.0.1:80", nil, false)},
		{name: "set weight pins",
			cmd:  SetWeight("a", 0),
			want: edit(func(bs []Backend) []Backend { bs[0].Weight, bs[0].Pinned = 0, true; return bs })},
		{name: "set weight unknown", cmd: SetWeight("nope", 1), wantErr: ErrUnknownBackend},
		{name: "set weight out of range", cmd: SetWeight("a", MaxWeight+1), wantErr: ErrInvalid},
		{name: "clear pin restores source weight",
			cmd:  ClearPin("c"),
			want: edit(func(bs []Backend) []Backend { bs[1].Weight, bs[1].Pinned = 3, false; return bs })},
		{name: "clear pin unknown", cmd: ClearPin("x"), wantErr: ErrUnknownBackend},
		{name: "clear pin of unpinned is a no-op", cmd: ClearPin("d")},
		{name: "set drain",
			cmd:  SetDrain("a", true),
			want: edit(func(bs []Backend) []Backend { bs[0].Drain = true; return bs })},
		{name: "set drain unknown", cmd: SetDrain("x", true), wantErr: ErrUnknownBackend},
		{name: "delete",
			cmd:  Delete("e"),
			want: edit(func(bs []Backend) []Backend { return bs[:3] })},
		{name: "delete unknown", cmd: Delete("x"), wantErr: ErrUnknownBackend},
		{name: "conditional write at the current index applies",
			cmd:  SetDrain("a", true).If(10),
			want: edit(func(bs []Backend) []Backend { bs[0].Drain = true; return bs })},
		{name: "conditional write at an old index conflicts", cmd: SetDrain("a", true).If(9), wantErr: ErrConflict},
		{name: "conditional delete of unknown conflicts before lookup", cmd: Delete("x").If(3), wantErr: ErrConflict},
		{name: "invalid beats conflict", cmd: SetWeight("a", -1).If(3), wantErr: ErrInvalid},
		{name: "unknown op", cmd: Command{Op: "drop_table"}, wantErr: ErrInvalid},
		{name: "seed of a non-empty config is a no-op",
			cmd: Seed([]Backend{{ID: "q", Address: "h:1", Weight: 1, Source: SourceStatic}})},
		{name: "seed of an empty config replaces the set, sorted, source weight = weight",
			start: empty,
			cmd: Seed([]Backend{
				{ID: "q", Address: "h:2", Weight: 2, Source: SourceConsul, Pinned: true, SourceWeight: 99},
				{ID: "p", Address: "h:1", Weight: 1, Source: SourceStatic, Drain: true}}),
			want: Config{Index: 11, Backends: []Backend{
				{ID: "p", Address: "h:1", Weight: 1, Source: SourceStatic, SourceWeight: 1, Drain: true},
				{ID: "q", Address: "h:2", Weight: 2, Source: SourceConsul, SourceWeight: 2}}}},
		{name: "seed of an emptied config (index > 0) is a no-op",
			start: Config{Index: 4, Backends: []Backend{}},
			cmd:   Seed([]Backend{{ID: "q", Address: "h:1", Weight: 1, Source: SourceStatic}})},
		{name: "seed conditional on a stale index conflicts", cmd: Seed(nil).If(1), wantErr: ErrConflict},
		{name: "sync adds, removes, updates and keeps pins and other sources",
			cmd: Sync(SourceConsul, []Backend{
				{ID: "c", Address: "10.0.1.3:80", Weight: 4},                       // pinned: keeps weight 7
				{ID: "f", Address: "10.0.0.6:80", Weight: 6, Source: SourceConsul}, // new
				{ID: "a", Address: "10.6.6.6:80", Weight: 1},                       // static's id: skipped
			}), // d is gone
			want: Config{Index: 11, Backends: []Backend{
				{ID: "a", Address: "10.0.0.1:80", Weight: 5, Source: SourceStatic, SourceWeight: 5},
				{ID: "c", Address: "10.0.1.3:80", Weight: 7, Source: SourceConsul, SourceWeight: 4, Pinned: true},
				{ID: "e", Address: "10.0.0.5:80", Weight: 4, Source: SourceAPI, SourceWeight: 4, Drain: true},
				{ID: "f", Address: "10.0.0.6:80", Weight: 6, Source: SourceConsul, SourceWeight: 6},
			}}},
		{name: "sync updates an unpinned weight and keeps drain",
			start: edit(func(bs []Backend) []Backend { bs[2].Drain = true; return bs }),
			cmd: Sync(SourceConsul, []Backend{
				{ID: "c", Address: "10.0.0.3:80", Weight: 3},
				{ID: "d", Address: "10.0.0.4:80", Weight: 8}}),
			want: Config{Index: 11, Backends: []Backend{
				{ID: "a", Address: "10.0.0.1:80", Weight: 5, Source: SourceStatic, SourceWeight: 5},
				{ID: "c", Address: "10.0.0.3:80", Weight: 7, Source: SourceConsul, SourceWeight: 3, Pinned: true},
				{ID: "d", Address: "10.0.0.4:80", Weight: 8, Source: SourceConsul, SourceWeight: 8, Drain: true},
				{ID: "e", Address: "10.0.0.5:80", Weight: 4, Source: SourceAPI, SourceWeight: 4, Drain: true},
			}}},
		{name: "sync with what is already there changes nothing",
			cmd: Sync(SourceConsul, []Backend{
				{ID: "c", Address: "10.0.0.3:80", Weight: 3},
				{ID: "d", Address: "10.0.0.4:80", Weight: 2}})},
		{name: "sync of an empty static set removes only static backends",
			cmd:  Sync(SourceStatic, nil),
			want: edit(func(bs []Backend) []Backend { return bs[1:] })},
		{name: "sync with a foreign source is invalid",
			cmd: Sync(SourceConsul, []Backend{{ID: "c", Address: "h:1", Weight: 1, Source: SourceAPI}}), wantErr: ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := tc.start
			if start.Backends == nil {
				start = sampleConfig()
			}
			orig := start.clone()
			got, changed, err := start.apply(tc.cmd, 11)
			if !configEqual(start, orig) {
				t.Fatalf("apply modified its receiver:\n%+v", start)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if changed || !configEqual(got, orig) {
					t.Fatalf("a refused command changed the config: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			want := tc.want
			if want.Backends == nil {
				want = orig
			}
			if !configEqual(got, want) {
				t.Fatalf("config\n got %+v\nwant %+v", got, want)
			}
			if changed != (want.Index == 11) {
				t.Fatalf("changed = %v, want index %d", changed, want.Index)
			}
			checkWellFormed(t, got)
		})
	}
}

func mustEncode(t testing.TB, c Command) []byte {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fsmApply(t testing.TB, f *fsm, index uint64, data []byte) applyResult {
	t.Helper()
	res, ok := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(applyResult)
	if !ok {
		t.Fatalf("FSM.Apply did not return an applyResult")
	}
	return res
}

// TestFSMApplyBadEntries: entries that were committed but are garbage or do
// not fit the config return an error value, keep the config and its index,
// and do not panic.
func TestFSMApplyBadEntries(t *testing.T) {
	f := newFSM()
	if res := fsmApply(t, f, 3, mustEncode(t, Seed(sampleConfig().Backends))); res.Err != nil || !res.Changed || res.Index != 3 {
		t.Fatalf("seed: %+v", res)
	}
	before := f.config()
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"nil", nil, ErrInvalid},
		{"version only", []byte{1}, ErrInvalid},
		{"unknown version", []byte{9, '{', '}'}, ErrInvalid},
		{"not json", []byte("\x01\xff\xfe"), ErrInvalid},
		{"unknown op", []byte("\x01{\"op\":\"rm_rf\"}"), ErrInvalid},
		{"weight out of range", []byte("\x01{\"op\":\"set_weight\",\"id\":\"a\",\"weight\":20000}"), ErrInvalid},
		{"unknown backend", mustEncode(t, Delete("ghost")), ErrUnknownBackend},
		{"lost race", mustEncode(t, Delete("a").If(2)), ErrConflict},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := fsmApply(t, f, uint64(10+i), tc.data)
			if !errors.Is(res.Err, tc.want) {
				t.Fatalf("err = %v, want %v", res.Err, tc.want)
			}
			if res.Index != before.Index || res.Changed || !configEqual(f.config(), before) {
				t.Fatalf("refused entry changed the config: %+v", res)
			}
		})
	}
	// A later good entry still applies, at its own index.
	if res := fsmApply(t, f, 30, mustEncode(t, SetWeight("a", 1))); res.Err != nil || res.Index != 30 || f.config().Index != 30 {
		t.Fatalf("good entry after bad ones: %+v", res)
	}
}

type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	src := newFSM()
	fsmApply(t, src, 5, mustEncode(t, Seed(sampleConfig().Backends)))
	fsmApply(t, src, 6, mustEncode(t, SetWeight("d", 77)))
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after Snapshot must not leak into it.
	fsmApply(t, src, 7, mustEncode(t, Delete("a")))

	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed || sink.cancelled {
		t.Fatalf("persist: %v closed=%v cancelled=%v", err, sink.closed, sink.cancelled)
	}
	snap.Release()

	dst := newFSM()
	fsmApply(t, dst, 99, mustEncode(t, Seed([]Backend{{ID: "old", Address: "h:1", Weight: 1, Source: SourceAPI}})))
	sub := dst.subscribe()
	<-sub // initial signal
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	got := dst.config()
	if got.Index != 6 {
		t.Fatalf("restored index %d, want 6", got.Index)
	}
	if _, ok := got.Backend("old"); ok {
		t.Fatal("restore kept old state")
	}
	if b, _ := got.Backend("d"); b.Weight != 77 || !b.Pinned {
		t.Fatalf("restored d = %+v", b)
	}
	if _, ok := got.Backend("a"); !ok {
		t.Fatal("snapshot saw a change made after Snapshot()")
	}
	select {
	case <-sub:
	default:
		t.Fatal("restore did not signal subscribers")
	}

	for _, bad := range []string{"", "{", `{"version":2,"config":{}}`} {
		if err := newFSM().Restore(io.NopCloser(strings.NewReader(bad))); err == nil {
			t.Fatalf("restore of %q succeeded", bad)
		}
	}
}

func TestFSMSubscribe(t *testing.T) {
	f := newFSM()
	ch := f.subscribe()
	select {
	case <-ch:
	default:
		t.Fatal("no initial signal")
	}
	fsmApply(t, f, 2, mustEncode(t, Seed(sampleConfig().Backends)))
	fsmApply(t, f, 3, mustEncode(t, SetWeight("a", 3)))
	fsmApply(t, f, 4, mustEncode(t, Delete("zz"))) // refused: no signal of its own
	<-ch                                           // the two changes coalesce into one signal
	select {
	case <-ch:
		t.Fatal("signals were not coalesced, or a refused entry signalled")
	default:
	}
	f.close()
	if _, ok := <-ch; ok {
		t.Fatal("close did not close the channel")
	}
	if _, ok := <-f.subscribe(); !ok {
		// a subscription after close gets its initial signal, then a closed channel
		t.Fatal("late subscribe: no initial signal")
	}
}
