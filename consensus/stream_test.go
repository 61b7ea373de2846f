package consensus

import (
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/pki"
)

// testTLS makes a CA in a temp dir and returns a raft TLS config per node.
func testTLS(t *testing.T, nodes ...string) map[string]*tls.Config {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.Generate(pki.Options{Dir: dir, Nodes: nodes, Hosts: []string{"127.0.0.1"}, Validity: time.Hour}); err != nil {
		t.Fatal(err)
	}
	pool, err := pki.LoadPool(filepath.Join(dir, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*tls.Config{}
	for _, n := range nodes {
		cert, err := pki.LoadKeyPair(filepath.Join(dir, n+".pem"), filepath.Join(dir, n+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool}
	}
	return out
}

// TestRaftOverMutualTLS forms a three-node cluster over mutual TLS,
// replicates a weight, then shows that a node whose certificate comes from
// another CA is not added and leaves the cluster working.
func TestRaftOverMutualTLS(t *testing.T) {
	cfgs := testTLS(t, "n0", "n1", "n2")
	c := newClusterWith(t, 3, func(i int, o *Options) { o.TLS = cfgs[o.NodeID] })

	res := c.apply(Seed(seedSet))
	c.waitApplied(res.Index)
	res = c.apply(SetWeight("a", 7))
	c.waitApplied(res.Index)
	for _, s := range c.running() {
		if b, _ := s.Config().Backend("a"); b.Weight != 7 {
			t.Fatalf("%s: weight of a = %d, want 7", s.ID(), b.Weight)
		}
	}

	// An intruder with a certificate from its own CA (valid for 127.0.0.1).
	foreign := testTLS(t, "x")["x"]
	o := testOptions(t, "x", t.TempDir(), testLogger(t))
	o.TLS = foreign
	x := openStore(t, o)
	err := c.waitLeader().AddVoter(ctxTimeout(t, 5*time.Second), "x", x.RaftAddr())
	if !errors.Is(err, ErrPeerTLS) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("adding a node with a foreign CA's certificate: %v; want a refusal naming the certificate", err)
	}
	srv, err := c.waitLeader().Servers()
	if err != nil || len(srv) != 3 {
		t.Fatalf("servers after the refusal: %v %v", srv, err)
	}
	// The intruder cannot reach the cluster either: it never learns a config.
	res = c.apply(SetWeight("a", 9))
	c.waitApplied(res.Index)
	if idx := x.AppliedIndex(); idx != 0 {
		t.Fatalf("the intruder applied index %d", idx)
	}

	// A node speaking plain TCP cannot join a TLS cluster either.
	plain := openStore(t, testOptions(t, "p", t.TempDir(), testLogger(t)))
	if err := c.waitLeader().AddVoter(ctxTimeout(t, 5*time.Second), "p", plain.RaftAddr()); err == nil {
		t.Fatal("a plain-TCP node was added to a TLS cluster")
	}
}

func TestTLSOptionsValidate(t *testing.T) {
	o := testOptions(t, "n", t.TempDir(), nil)
	o.TLS = &tls.Config{}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "-raft-tls-cert") {
		t.Errorf("no certificate: %v", err)
	}
	o.TLS = testTLS(t, "n")["n"].Clone()
	o.TLS.RootCAs = nil
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "-raft-tls-ca") {
		t.Errorf("no CA: %v", err)
	}
}
