package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// Default loopback raft and admin addresses next to a routable gossip
// address are refused; the same addresses typed on purpose are not.
func TestAgentLoopbackNextToRoutableGossip(t *testing.T) {
	base := []string{"agent", "-node", "t", "-listen", "127.0.0.1:0", "-data-dir", t.TempDir(), "-gossip", "192.0.2.2:18944"}
	err := run(context.Background(), base, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-raft (or -raft-advertise)") || !strings.Contains(err.Error(), "-admin (or -admin-advertise)") {
		t.Fatalf("defaults: %v; want an error naming -raft and -admin", err)
	}
	if code := exitCode(err, io.Discard); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	// Chosen on purpose, the addresses pass validation. The agent then
	// runs, or fails to bind 192.0.2.2 where no interface has it; either
	// way it returns when ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = run(ctx, append(base, "-raft", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-shutdown-timeout", "1s"), io.Discard, io.Discard)
	if err != nil && strings.Contains(err.Error(), "loopback") {
		t.Errorf("explicit loopback addresses: %v; want only a warning", err)
	}
}
