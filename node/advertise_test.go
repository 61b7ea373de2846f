package node

import (
	"strings"
	"testing"
)

func TestLoopbackAdvertised(t *testing.T) {
	for _, tc := range []struct {
		name                string
		gossip, raft, admin string
		wantRaft, wantAdmin bool
	}{
		{"all loopback: one host", "127.0.0.1:7946", "127.0.0.1:0", "127.0.0.1:9090", false, false},
		{"defaults next to a routable gossip", "192.0.2.2:18944", "127.0.0.1:0", "127.0.0.1:9090", true, true},
		{"all routable", "192.0.2.2:7946", "192.0.2.2:7947", "192.0.2.2:9090", false, false},
		{"raft only", "10.0.0.1:7946", "127.0.0.5:7947", "10.0.0.1:9090", true, false},
		{"ipv6 loopback admin", "[2001:db8::1]:7946", "[2001:db8::1]:7947", "[::1]:9090", false, true},
		{"localhost by name", "10.0.0.1:7946", "localhost:7947", "node1.example:9090", true, false},
		{"wildcard gossip counts as routable", "0.0.0.0:7946", "127.0.0.1:7947", "10.0.0.1:9090", true, false},
		{"loopback gossip, routable rest", "127.0.0.1:7946", "10.0.0.1:7947", "10.0.0.1:9090", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raft, admin := loopbackAdvertised(tc.gossip, tc.raft, tc.admin)
			if raft != tc.wantRaft || admin != tc.wantAdmin {
				t.Errorf("loopbackAdvertised(%s, %s, %s) = %v, %v; want %v, %v", tc.gossip, tc.raft, tc.admin, raft, admin, tc.wantRaft, tc.wantAdmin)
			}
		})
	}
}

func TestValidateRefusesLoopbackPeersDial(t *testing.T) {
	base := func() Config {
		c := testConfig(t)
		c.Admin = "127.0.0.1:9090"
		c.Gossip.Bind = "192.0.2.2:18944"
		return c
	}
	c := base()
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted default loopback raft and admin addresses next to gossip on 192.0.2.2")
	}
	for _, want := range []string{"-raft (or -raft-advertise)", "-admin (or -admin-advertise)", "127.0.0.1:9090"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error spans lines: %q", err)
	}

	c = base()
	c.Raft.Advertise, c.AdminAdvertise = "192.0.2.2:7947", "192.0.2.2:9090"
	if err := c.Validate(); err != nil {
		t.Errorf("routable advertise addresses: %v", err)
	}

	c = base()
	c.RaftLoopbackOK, c.AdminLoopbackOK = true, true
	warn, err := c.checkAdvertised()
	if err != nil || len(warn) != 2 {
		t.Errorf("loopback chosen on purpose: warn %q, err %v; want two warnings and no error", warn, err)
	}

	c = base()
	c.AdminLoopbackOK = true
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "-admin") || !strings.Contains(err.Error(), "-raft") {
		t.Errorf("only the admin address chosen: %v; want an error naming -raft only", err)
	}
}
