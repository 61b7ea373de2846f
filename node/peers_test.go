package node

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPeersFileRoundTripExpiryAndDamage(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	if m, err := loadPeers(dir, now); m != nil || err != nil {
		t.Fatalf("no file: %v %v, want nothing and no error", m, err)
	}
	want := map[string]knownPeer{
		"n2": {Addr: "10.0.0.2:7946", Seen: now.Add(-time.Hour)},
		"n3": {Addr: "10.0.0.3:7946", Seen: now.Add(-peersKeep - time.Minute)}, // away too long
	}
	if err := savePeers(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := loadPeers(dir, now)
	if err != nil || len(got) != 1 || got["n2"].Addr != "10.0.0.2:7946" {
		t.Fatalf("loaded %v %v, want n2 only (n3 unseen for longer than %v)", got, err, peersKeep)
	}
	if !maps.Equal(rejoinAddrs(got), map[string]string{"n2": "10.0.0.2:7946"}) {
		t.Errorf("rejoin list %v", rejoinAddrs(got))
	}
	if err := os.WriteFile(filepath.Join(dir, peersFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadPeers(dir, now); err == nil {
		t.Error("a damaged file loaded without error")
	}
}
