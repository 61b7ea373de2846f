package consensus

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestOptionsValidate(t *testing.T) {
	good := func() Options {
		o := DefaultOptions()
		o.NodeID, o.DataDir = "n1", "/tmp/x"
		return o
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("defaults + node + dir: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no node", func(o *Options) { o.NodeID = "" }, "-node"},
		{"no data dir", func(o *Options) { o.DataDir = "" }, "-data-dir"},
		{"bind without port", func(o *Options) { o.Bind = "127.0.0.1" }, `-raft "127.0.0.1": want HOST:PORT`},
		{"bind bad port", func(o *Options) { o.Bind = "127.0.0.1:70000" }, "-raft"},
		{"bind wildcard", func(o *Options) { o.Bind = "0.0.0.0:7000" }, "wildcard"},
		{"bind empty host", func(o *Options) { o.Bind = ":7000" }, "wildcard"},
		{"advertise port 0", func(o *Options) { o.Bind, o.Advertise = "0.0.0.0:7000", "10.0.0.1:0" }, "advertise address"},
		{"advertise wildcard", func(o *Options) { o.Advertise = "0.0.0.0:7000" }, "advertise address"},
		{"lease above heartbeat", func(o *Options) { o.LeaderLeaseTimeout = 2 * o.HeartbeatTimeout }, "LeaderLeaseTimeout"},
		{"tiny heartbeat", func(o *Options) { o.HeartbeatTimeout = time.Millisecond }, "raft timers"},
		{"no snapshots kept", func(o *Options) { o.SnapshotRetain = 0 }, "snapshot retain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good()
			tc.edit(&o)
			if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want mention of %q", err, tc.want)
			}
		})
	}
	o := good()
	o.Bind, o.Advertise = "0.0.0.0:7000", "10.0.0.1:7000"
	if err := o.Validate(); err != nil {
		t.Fatalf("wildcard bind with advertise: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	logger := testLogger(t)
	dir := t.TempDir()
	s := openStore(t, testOptions(t, "x", dir, logger))

	start := time.Now()
	if _, err := Open(testOptions(t, "y", dir, logger)); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open on the same dir = %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("second Open blocked instead of failing")
	}

	o := testOptions(t, "z", t.TempDir(), logger)
	o.Bind = s.RaftAddr() // taken
	if _, err := Open(o); err == nil || !strings.Contains(err.Error(), "-raft") {
		t.Fatalf("Open on a bound port = %v", err)
	}
	// The failed Open released its data dir.
	openStore(t, testOptions(t, "z", o.DataDir, logger))

	if _, err := Open(Options{}); err == nil {
		t.Fatal("Open with zero options succeeded")
	}
}

func TestAdvertise(t *testing.T) {
	o := testOptions(t, "adv", t.TempDir(), testLogger(t))
	o.Advertise = "127.0.0.1:7999"
	s := openStore(t, o)
	if s.RaftAddr() != "127.0.0.1:7999" {
		t.Fatalf("RaftAddr = %s, want the advertise address", s.RaftAddr())
	}
	if _, _, err := net.SplitHostPort(s.RaftAddr()); err != nil {
		t.Fatal(err)
	}
}

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "raft", hclog.Info)
	l.Debug("hidden debug")
	l.Trace("hidden trace")
	l.Named("net").With("peer", "n2").Warn("slow", "rtt", 5)
	l.StandardLogger(nil).Print("[ERR] from the std logger")
	out := buf.String()
	if strings.Contains(out, "hidden") {
		t.Fatalf("below-Info records leaked:\n%s", out)
	}
	for _, want := range []string{"level=WARN msg=slow logger=raft.net peer=n2 rtt=5", `level=ERROR msg="from the std logger" logger=raft`} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in:\n%s", want, out)
		}
	}
	l.SetLevel(hclog.Debug)
	if !l.IsDebug() || l.GetLevel() != hclog.Debug || l.Named("x").(*slogLogger).GetLevel() != hclog.Debug {
		t.Fatal("SetLevel not shared")
	}
}

func TestRaftExpectedStatesAreNotErrors(t *testing.T) {
	if got := demote(hclog.Error, "failed to take snapshot", []any{"error", fmt.Errorf("x: %w", raft.ErrNothingNewToSnapshot)}); got != hclog.Debug {
		t.Errorf("nothing-new snapshot logged at %v", got)
	}
	if got := demote(hclog.Error, "failed to take snapshot", []any{"error", errors.New("disk full")}); got != hclog.Error {
		t.Errorf("a real snapshot failure must stay an error, got %v", got)
	}
}
