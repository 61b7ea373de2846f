package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
)

// TestProcTLSClusterAndCLI runs three agents whose certificates come from
// `balancer certs`, with raft over mutual TLS and HTTPS admin APIs that
// require client certificates, and drives them with the CLI's TLS flags:
// a weight set through a follower is forwarded to the leader over HTTPS.
func TestProcTLSClusterAndCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"certs", "-out", dir, "-nodes", "n1,n2,n3", "-hosts", "127.0.0.1"}, &out, &errb); err != nil {
		t.Fatalf("certs: %v %s", err, errb.String())
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	backends := startDemoBackends(t, "a", "b")
	// Each agent passes its own node's files: the flags are the same for
	// all three apart from the name, so build them per agent.
	var agents []*agent
	base := t.TempDir()
	for i, n := range []string{"n1", "n2", "n3"} {
		args := []string{"-gossip", "127.0.0.1:0", "-raft", "127.0.0.1:0", "-bootstrap-expect", "3",
			"-backend", "a=" + backends["a"], "-backend", "b=" + backends["b"],
			"-tls-cert", f(n + ".pem"), "-tls-key", f(n + "-key.pem"), "-tls-ca", f("ca.pem"),
			"-raft-tls-cert", f(n + ".pem"), "-raft-tls-key", f(n + "-key.pem"), "-raft-tls-ca", f("ca.pem")}
		if i > 0 {
			args = append(args, "-join", agents[0].Gossip)
		}
		agents = append(agents, startAgent(t, n, filepath.Join(base, n), args...))
	}
	testutil.Eventually(t, 30*time.Second, "one leader seen by every node, config seeded everywhere", func() bool {
		l := agents[0].leaderName(t)
		if l == "" {
			return false
		}
		for _, a := range agents {
			if a.leaderName(t) != l || a.config(t).Index == 0 {
				return false
			}
		}
		return true
	})
	_, follower := followerOf(t, agents)
	https := "https://" + follower.Admin

	out.Reset()
	errb.Reset()
	err := run(context.Background(), []string{"weights", "set", "b", "4", "-admin", https,
		"-ca", f("ca.pem"), "-cert", f("client.pem"), "-key", f("client-key.pem")}, &out, &errb)
	if err != nil {
		t.Fatalf("weights set over TLS through a follower: %v %s", err, errb.String())
	}
	if !strings.Contains(out.String(), "applied on every node") {
		t.Fatalf("weights set answer: %q", out.String())
	}
	for _, a := range agents {
		for _, b := range a.config(t).Backends {
			if b.ID == "b" && b.Weight != 4 {
				t.Fatalf("%s applies b=%+v", a.name, b)
			}
		}
	}

	// The environment stands in for the flags, and a HOST:PORT address
	// means https once TLS files are given.
	t.Setenv("BALANCER_ADMIN", follower.Admin)
	t.Setenv("BALANCER_ADMIN_CA", f("ca.pem"))
	t.Setenv("BALANCER_ADMIN_CERT", f("client.pem"))
	t.Setenv("BALANCER_ADMIN_KEY", f("client-key.pem"))
	out.Reset()
	if err := run(context.Background(), []string{"members"}, &out, &errb); err != nil {
		t.Fatalf("members with env settings: %v", err)
	}
	if c := strings.Count(out.String(), "https://127.0.0.1:"); c != 3 {
		t.Fatalf("members should list three https admin URLs:\n%s", out.String())
	}
	// The status view asks every peer for its own part, over HTTPS with the
	// node's certificate: each must answer with its raft state.
	out.Reset()
	if err := run(context.Background(), []string{"status", "-json"}, &out, &errb); err != nil {
		t.Fatalf("status over TLS: %v", err)
	}
	var st admin.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("status -json: %v\n%s", err, out.String())
	}
	if len(st.Nodes) != 3 {
		t.Fatalf("status lists %d nodes, want 3: %+v", len(st.Nodes), st.Nodes)
	}
	for _, n := range st.Nodes {
		if n.Error != "" || n.Raft == nil {
			t.Errorf("status of %s over TLS: error %q, raft %+v", n.Name, n.Error, n.Raft)
		}
	}

	// Without a client certificate the node refuses.
	t.Setenv("BALANCER_ADMIN_CERT", "")
	t.Setenv("BALANCER_ADMIN_KEY", "")
	if err := run(context.Background(), []string{"weights"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "client certificate") {
		t.Fatalf("weights without a client certificate: %v; want a refusal that names the missing client certificate", err)
	}
	// Plain HTTP to an HTTPS node says what to do.
	t.Setenv("BALANCER_ADMIN_CA", "")
	if err := run(context.Background(), []string{"weights"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "https://") {
		t.Fatalf("weights over plain HTTP to an HTTPS node: %v; want a hint to use https://", err)
	}
	// A missing file is a usage error naming the flag and the file.
	errb.Reset()
	err = run(context.Background(), []string{"weights", "-ca", f("nope.pem")}, &out, &errb)
	if code := exitCode(err, &errb); code != 2 || !strings.Contains(errb.String(), "-ca") || !strings.Contains(errb.String(), "nope.pem") {
		t.Fatalf("missing -ca file: exit %d, %q", code, errb.String())
	}
}
