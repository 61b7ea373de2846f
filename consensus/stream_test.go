package consensus

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/thebalancer/balancer/internal/testutil"
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
	if err := c.waitLeader().AddVoter(ctxTimeout(t, 5*time.Second), "p", plain.RaftAddr()); !errors.Is(err, ErrPeerTLS) {
		t.Fatalf("adding a plain-TCP node to a TLS cluster: %v; want ErrPeerTLS", err)
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

// testPKI makes a CA with node certificates and a client-only certificate
// "client" (as `balancer certs -client` does) in a temp dir.
func testPKI(t *testing.T, nodes ...string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.Generate(pki.Options{Dir: dir, Nodes: nodes, Hosts: []string{"127.0.0.1"}, Client: "client", Validity: time.Hour}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pairOf loads NAME.pem and NAME-key.pem from dir.
func pairOf(t *testing.T, dir, name string) tls.Certificate {
	t.Helper()
	c, err := pki.LoadKeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// poolOf loads dir's CA.
func poolOf(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	pool, err := pki.LoadPool(filepath.Join(dir, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// signWithCA issues a certificate for 127.0.0.1 with the given extended
// key usages from dir's CA, for certificates pki.Generate does not make.
func signWithCA(t *testing.T, dir string, usage ...x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	ca := pairOf(t, dir, "ca")
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "odd"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestRaftRefusesOperatorCertificate: the operator's client certificate
// chains to the same CA as the nodes' (the README uses one ca.pem for
// -tls-ca and -raft-tls-ca) but must not speak raft; node certificates
// still do, and a dialling node refuses a peer without client auth usage.
func TestRaftRefusesOperatorCertificate(t *testing.T) {
	dir := testPKI(t, "n0", "n1")
	pool := poolOf(t, dir)
	nodeCfg := func(name string) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{pairOf(t, dir, name)}, RootCAs: pool, ClientCAs: pool}
	}
	s0, accepted := startStream(t, nodeCfg("n0"))
	addr := s0.Addr().String()

	// The operator's certificate: TLS 1.3 lets the client finish its side
	// of the handshake first, so the refusal arrives on the first read.
	cli := &tls.Config{Certificates: []tls.Certificate{pairOf(t, dir, "client")}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cli)
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err = c.Write([]byte{0}); err == nil { // raft's AppendEntries RPC type
			_, err = c.Read(make([]byte, 1))
		}
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("raft with the operator's client certificate: %v; want a bad certificate alert", err)
	}
	select {
	case c := <-accepted:
		c.Close()
		t.Fatal("raft accepted a connection from the operator's client certificate")
	case <-time.After(200 * time.Millisecond):
	}

	// A node certificate is still accepted.
	s1, _ := startStream(t, nodeCfg("n1"))
	nc, err := s1.Dial(raft.ServerAddress(addr), 5*time.Second)
	if err != nil {
		t.Fatalf("node n1 dialling n0: %v", err)
	}
	defer nc.Close()
	select {
	case a := <-accepted:
		a.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("n0 did not accept n1's node certificate")
	}

	// The dialling side checks too: a peer answering with a server-only
	// certificate from the CA is not a node.
	srvCfg := &tls.Config{Certificates: []tls.Certificate{signWithCA(t, dir, x509.ExtKeyUsageServerAuth)},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	odd, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer odd.Close()
	go func() {
		for {
			c, err := odd.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	_, err = s1.Dial(raft.ServerAddress(odd.Addr().String()), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "lacks client auth usage") {
		t.Fatalf("dialling a peer with a server-only certificate: %v; want a refusal naming the usage", err)
	}
}

func TestNodeUsage(t *testing.T) {
	for _, tc := range []struct {
		usage []x509.ExtKeyUsage
		want  string
	}{
		{[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, ""},
		{[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, ""},
		{[]x509.ExtKeyUsage{x509.ExtKeyUsageAny}, ""},
		{[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, "lacks server auth usage; the operator's client certificate cannot speak raft"},
		{[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, "lacks client auth usage"},
		{nil, "lacks server auth usage"},
	} {
		err := nodeUsage(tc.usage)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("nodeUsage(%v) = %v, want %q", tc.usage, err, tc.want)
		}
	}
}

// TestAddVoterRefusedByPeer: a peer with a certificate from the cluster's
// CA that trusts another CA would refuse every connection from the cluster,
// but in TLS 1.3 it does so only after the dialler's handshake completed.
// The leader must still see the refusal and not add it as a voter that
// never votes.
func TestAddVoterRefusedByPeer(t *testing.T) {
	cfgs := testTLS(t, "n0", "n1", "n2", "x")
	c := newClusterWith(t, 3, func(i int, o *Options) { o.TLS = cfgs[o.NodeID] })
	c.waitLeader()

	other := poolOf(t, testPKI(t, "y"))
	o := testOptions(t, "x", t.TempDir(), testLogger(t))
	o.TLS = cfgs["x"].Clone()
	o.TLS.RootCAs, o.TLS.ClientCAs = other, other
	x := openStore(t, o)
	err := c.waitLeader().AddVoter(ctxTimeout(t, 5*time.Second), "x", x.RaftAddr())
	if !errors.Is(err, ErrPeerTLS) || !strings.Contains(err.Error(), "refused this node's certificate") {
		t.Fatalf("adding a peer that refuses the cluster's certificates: %v; want ErrPeerTLS naming the refusal", err)
	}
	srv, err := c.waitLeader().Servers()
	if err != nil || len(srv) != 3 {
		t.Fatalf("servers after the refusal: %v %v", srv, err)
	}
}

// TestAddVoterUnreachableIsNotTLS: a server nobody listens for is not
// added, but the error is not ErrPeerTLS: it is not a certificate problem
// and may heal, so callers retry it and log it as unreachable.
func TestAddVoterUnreachableIsNotTLS(t *testing.T) {
	cfgs := testTLS(t, "n0")
	c := newClusterWith(t, 1, func(i int, o *Options) { o.TLS = cfgs[o.NodeID] })
	addr := testutil.FreeAddr(t)
	err := c.waitLeader().AddVoter(ctxTimeout(t, 5*time.Second), "gone", addr)
	if err == nil || errors.Is(err, ErrPeerTLS) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("adding a server nobody listens for: %v; want a connection refused that is not ErrPeerTLS", err)
	}
}
