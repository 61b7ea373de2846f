package node

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

func TestPeersFileRoundTripAndDamage(t *testing.T) {
	dir := t.TempDir()
	if m, err := loadPeers(dir); m != nil || err != nil {
		t.Fatalf("no file: %v %v, want nothing and no error", m, err)
	}
	want := map[string]string{"n2": "10.0.0.2:7946", "n3": "10.0.0.3:7946"}
	if err := savePeers(dir, want); err != nil {
		t.Fatal(err)
	}
	if got, err := loadPeers(dir); err != nil || !maps.Equal(got, want) {
		t.Fatalf("loaded %v %v, want %v", got, err, want)
	}
	// A save that cannot complete leaves the last list whole.
	if os.Geteuid() != 0 { // root writes to read-only directories
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		if err := savePeers(dir, map[string]string{"n9": "10.0.0.9:7946"}); err == nil {
			t.Error("save into a read-only dir succeeded")
		}
		os.Chmod(dir, 0o700)
		if got, _ := loadPeers(dir); !maps.Equal(got, want) {
			t.Errorf("after a failed save: %v, want %v", got, want)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, peersFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadPeers(dir); err == nil {
		t.Error("a damaged file loaded without error")
	}
}
