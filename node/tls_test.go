package node

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
	"github.com/thebalancer/balancer/pki"
	"github.com/thebalancer/balancer/proxy"
)

// testCerts makes a CA with node certificates for names and a "client"
// certificate in a temp dir, and returns the dir.
func testCerts(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.Generate(pki.Options{Dir: dir, Nodes: names, Hosts: []string{"127.0.0.1"}, Client: "client", Validity: time.Hour}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func filesOf(dir, name string) TLSFiles {
	return TLSFiles{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem"), CA: filepath.Join(dir, pki.CAFile)}
}

// clientTLS is what `balancer members -ca -cert -key` builds.
func clientTLS(t *testing.T, dir, name string) *tls.Config {
	t.Helper()
	pool, err := pki.LoadPool(filepath.Join(dir, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	if name == "" {
		return pki.ClientConfig(pool, nil)
	}
	c, err := pki.LoadKeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return pki.ClientConfig(pool, &c)
}

// setWeight sets backend a's weight and waits until every node applied it,
// retrying while the cluster has no leader (503), as an operator would:
// the test's short raft timers make an election under -race possible.
func setWeight(t *testing.T, c *admin.Client, w int32) admin.WriteResult {
	t.Helper()
	var res admin.WriteResult
	var err error
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err = c.SetWeight(context.Background(), "a", w, admin.WaitAppliedFor(5*time.Second))
		var ae *admin.Error
		if err == nil || !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("set weight %d: %v", w, err)
	}
	return res
}

func TestAdminOverTLSRequiresClientCertificate(t *testing.T) {
	dir := testCerts(t, "n1")
	other := testCerts(t, "n1")
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1})
	cfg.TLS = filesOf(dir, "n1")
	n, _ := startNode(t, cfg)
	ctx := context.Background()

	if _, err := admin.NewClient(n.AdminAddr(), "", admin.WithTLS(clientTLS(t, dir, "client"))).Members(ctx); err != nil {
		t.Fatalf("with the CA's client certificate: %v", err)
	}
	if _, err := admin.NewClient(n.AdminAddr(), "", admin.WithTLS(clientTLS(t, dir, ""))).Members(ctx); err == nil {
		t.Fatal("without a client certificate the admin API answered")
	}
	// A certificate from another CA: the node refuses it, whatever the
	// client trusts.
	foreign := clientTLS(t, other, "client")
	foreign.RootCAs = clientTLS(t, dir, "").RootCAs
	if _, err := admin.NewClient(n.AdminAddr(), "", admin.WithTLS(foreign)).Members(ctx); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	// Plain HTTP gets no admin data.
	resp, err := http.Get("http://" + n.AdminAddr() + "/v1/members")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered 200 on an HTTPS admin API")
		}
	}
}

func TestTLSFileErrorsNameFlagAndFile(t *testing.T) {
	dir := testCerts(t, "n1")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	cases := []struct {
		name string
		edit func(c *Config)
		want []string
	}{
		{"missing admin cert", func(c *Config) { c.TLS = filesOf(dir, "n1"); c.TLS.Cert = missing }, []string{"-tls-cert", missing}},
		{"missing admin CA", func(c *Config) { c.TLS = filesOf(dir, "n1"); c.TLS.CA = missing }, []string{"-tls-ca", missing}},
		{"admin key without cert", func(c *Config) { c.TLS.Key = missing }, []string{"-tls-key needs -tls-cert"}},
		{"CA without cert", func(c *Config) { c.TLS.CA = missing }, []string{"-tls-ca needs -tls-cert"}},
		{"raft without CA", func(c *Config) { c.RaftTLS = filesOf(dir, "n1"); c.RaftTLS.CA = "" }, []string{"-raft-tls-ca"}},
		{"missing raft key", func(c *Config) { c.RaftTLS = filesOf(dir, "n1"); c.RaftTLS.Key = missing }, []string{"-raft-tls-key", missing}},
		{"cert with the wrong key", func(c *Config) { c.TLS = filesOf(dir, "n1"); c.TLS.Key = filepath.Join(dir, "client-key.pem") }, []string{"-tls-cert", "private key does not match"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.edit(&cfg)
			n, err := New(cfg)
			if err == nil {
				n.close()
				t.Fatal("New accepted the config")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestRaftMutualTLSCluster runs three nodes with raft over mutual TLS and
// HTTPS admin APIs that require client certificates: they form one raft
// cluster, a weight written to a follower is forwarded to the leader over
// HTTPS and replicated, and a fourth node whose certificates come from
// another CA gossips its way in but never becomes a raft voter, while the
// cluster keeps committing writes and still adds a legitimate fifth node.
func TestRaftMutualTLSCluster(t *testing.T) {
	dir := testCerts(t, "n1", "n2", "n3", "n5")
	intruderDir := testCerts(t, "n4")
	be := proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1}
	nodes := startClusterWith(t, 3, func(i int, c *Config) {
		c.TLS = filesOf(dir, c.Name)
		c.RaftTLS = filesOf(dir, c.Name)
		if i == 0 {
			c.BootstrapExpect = 1
		}
	}, be)
	cli := func(n *testNode) *admin.Client {
		return admin.NewClient(n.AdminAddr(), "", admin.WithTLS(clientTLS(t, dir, "client")))
	}
	voters := func(n *testNode) int {
		s, err := n.store.Servers()
		if err != nil {
			return 0
		}
		return len(s)
	}
	testutil.Eventually(t, 20*time.Second, "three raft voters and a seeded config on every node", func() bool {
		for _, n := range nodes {
			if voters(n) != 3 || n.store.AppliedIndex() == 0 {
				return false
			}
		}
		return true
	})
	var follower *testNode
	testutil.Eventually(t, 10*time.Second, "a known leader", func() bool {
		for _, n := range nodes {
			if !n.store.IsLeader() {
				follower = n
			}
		}
		name, addr := follower.Leader()
		return name != "" && strings.HasPrefix(addr, "https://")
	})
	res := setWeight(t, cli(follower), 5)
	if res.Leader == follower.Name() || !res.AppliedEverywhere {
		t.Fatalf("write answered %+v: want it forwarded to the leader and applied everywhere", res)
	}

	intruder := startClusterWith(t, 1, func(_ int, c *Config) {
		c.Name = "n4"
		c.TLS = filesOf(intruderDir, "n4")
		c.RaftTLS = filesOf(intruderDir, "n4")
		c.Gossip.Join = []string{nodes[0].GossipAddr()}
	}, be)[0]
	testutil.Eventually(t, 10*time.Second, "the intruder in the gossip view", func() bool {
		m, err := cli(nodes[0]).Members(context.Background())
		return err == nil && len(m.Members) == 4
	})
	// The leader reconciles voters on every member event and on a timer;
	// give it several rounds to (wrongly) add n4, writing meanwhile.
	for w := int32(6); w <= 8; w++ {
		if res := setWeight(t, cli(nodes[0]), w); !res.AppliedEverywhere {
			t.Fatalf("write with an intruder around: %+v", res)
		}
	}
	for _, n := range nodes {
		if v := voters(n); v != 3 {
			t.Fatalf("%s sees %d raft servers; the intruder must not be one", n.Name(), v)
		}
		if b, _ := n.store.Config().Backend("a"); b.Weight != 8 {
			t.Fatalf("%s: weight %d, want 8", n.Name(), b.Weight)
		}
	}
	if idx := intruder.store.AppliedIndex(); idx != 0 {
		t.Fatalf("the intruder applied config index %d", idx)
	}

	// The refused member does not hold up a legitimate one that joins after it.
	late := startClusterWith(t, 1, func(_ int, c *Config) {
		c.Name = "n5"
		c.TLS = filesOf(dir, "n5")
		c.RaftTLS = filesOf(dir, "n5")
		c.Gossip.Join = []string{nodes[0].GossipAddr()}
	}, be)[0]
	testutil.Eventually(t, 20*time.Second, "n5 a raft voter with the cluster's config", func() bool {
		if b, _ := late.store.Config().Backend("a"); b.Weight != 8 {
			return false
		}
		for _, n := range nodes {
			if voters(n) != 4 {
				return false
			}
		}
		return true
	})
}

// TestReconcileSkipsUnreachableMember: a gossip member whose raft address
// refuses connections is not a certificate problem, but it must not hold
// up the members after it (gossip lists them by name) either.
func TestReconcileSkipsUnreachableMember(t *testing.T) {
	dir := testCerts(t, "n1", "n4", "n5")
	be := proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1}
	dead := testutil.FreeAddr(t)
	first := startClusterWith(t, 1, func(_ int, c *Config) {
		c.TLS = filesOf(dir, c.Name)
		c.RaftTLS = filesOf(dir, c.Name)
		c.BootstrapExpect = 1
	}, be)[0]
	cli := admin.NewClient(first.AdminAddr(), "", admin.WithTLS(clientTLS(t, dir, "client")))
	voters := func() int {
		s, err := first.store.Servers()
		if err != nil {
			return 0
		}
		return len(s)
	}
	testutil.Eventually(t, 20*time.Second, "n1 the leader of a seeded config", func() bool {
		return first.store.IsLeader() && first.store.AppliedIndex() > 0
	})
	join := func(name string, edit func(c *Config)) {
		startClusterWith(t, 1, func(_ int, c *Config) {
			c.Name = name
			c.TLS = filesOf(dir, name)
			c.RaftTLS = filesOf(dir, name)
			c.Gossip.Join = []string{first.GossipAddr()}
			if edit != nil {
				edit(c)
			}
		}, be)
	}
	// n4 advertises a raft address nobody listens on.
	join("n4", func(c *Config) { c.Raft.Advertise = dead })
	testutil.Eventually(t, 10*time.Second, "n4 in the gossip view", func() bool {
		m, err := cli.Members(context.Background())
		return err == nil && len(m.Members) == 2
	})
	join("n5", nil)
	testutil.Eventually(t, 20*time.Second, "n5 a raft voter despite n4", func() bool {
		return voters() == 2
	})
	s, _ := first.store.Servers()
	for _, sv := range s {
		if sv.ID == "n4" {
			t.Fatalf("n4, unreachable at %s, is a raft server: %+v", dead, s)
		}
	}
}
