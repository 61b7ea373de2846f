package consensus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// serialOf is the serial number of c's leaf certificate.
func serialOf(t *testing.T, c tls.Certificate) *big.Int {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber
}

// servedSerial completes a client handshake with the raft listener at addr
// as a node with cert and returns the serial of the certificate it served.
func servedSerial(t *testing.T, addr string, cert tls.Certificate, pool *x509.CertPool) *big.Int {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestStreamSetConfigKeepsNodeCheckAndOpenConns replaces a stream's
// certificate: new handshakes get the new one, a connection made before
// keeps working, and the operator's client certificate is still refused,
// since the node-certificate check is part of every derived config.
func TestStreamSetConfigKeepsNodeCheckAndOpenConns(t *testing.T) {
	dir := testPKI(t, "n0", "n1")
	pool := poolOf(t, dir)
	oldCert, newCert := pairOf(t, dir, "n0"), signWithCA(t, dir, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	s0, accepted := startStream(t, &tls.Config{Certificates: []tls.Certificate{oldCert}, RootCAs: pool, ClientCAs: pool})
	addr := s0.Addr().String()
	n1 := pairOf(t, dir, "n1")

	if got := servedSerial(t, addr, n1, pool); got.Cmp(serialOf(t, oldCert)) != 0 {
		t.Fatalf("served serial %v before the change, want the first certificate's %v", got, serialOf(t, oldCert))
	}
	(<-accepted).Close()
	s1, _ := startStream(t, &tls.Config{Certificates: []tls.Certificate{n1}, RootCAs: pool, ClientCAs: pool})
	before, err := s1.Dial(raft.ServerAddress(addr), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	var beforeSrv net.Conn
	select {
	case beforeSrv = <-accepted:
		defer beforeSrv.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("n0 did not accept n1")
	}

	if err := s0.setConfig(&tls.Config{Certificates: []tls.Certificate{newCert}, RootCAs: pool, ClientCAs: pool}); err != nil {
		t.Fatalf("setConfig: %v", err)
	}
	if got := servedSerial(t, addr, n1, pool); got.Cmp(serialOf(t, newCert)) != 0 {
		t.Fatalf("served serial %v after the change, want the new certificate's %v", got, serialOf(t, newCert))
	}
	(<-accepted).Close()

	// The connection made before the change still carries data.
	if _, err := before.Write([]byte("ping")); err != nil {
		t.Fatalf("write on the connection made before the change: %v", err)
	}
	beforeSrv.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(beforeSrv, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read on the connection made before the change: %q %v", buf, err)
	}

	// The operator's client certificate from the same CA is still no node.
	cli := &tls.Config{Certificates: []tls.Certificate{pairOf(t, dir, "client")}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cli)
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err = c.Write([]byte{0}); err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("raft with the operator's client certificate after a change: %v; want a bad certificate alert", err)
	}
}

// startStream runs a TLS stream layer on a loopback port until the test
// ends, passing every connection it accepts to accepted.
func startStream(t *testing.T, cfg *tls.Config) (s *tlsStream, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s = newTLSStream(ln, nil, cfg, testLogger(t))
	t.Cleanup(func() { s.Close() })
	ch := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	return s, ch
}

// TestSetTLSRefusesAndKeeps: a setting that could not work is refused and
// the current one keeps serving; a plain-TCP store has nothing to replace.
func TestSetTLSRefusesAndKeeps(t *testing.T) {
	dir := testPKI(t, "n0", "n1")
	pool := poolOf(t, dir)
	cert := pairOf(t, dir, "n0")
	o := testOptions(t, "n0", t.TempDir(), testLogger(t))
	o.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool}
	s := openStore(t, o)

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		want string
	}{
		{"client-only certificate", &tls.Config{Certificates: []tls.Certificate{pairOf(t, dir, "client")}, RootCAs: pool, ClientCAs: pool}, "not a node certificate"},
		{"server-only certificate", &tls.Config{Certificates: []tls.Certificate{signWithCA(t, dir, x509.ExtKeyUsageServerAuth)}, RootCAs: pool, ClientCAs: pool}, "lacks client auth"},
		{"no CA", &tls.Config{Certificates: []tls.Certificate{pairOf(t, dir, "n1")}}, "-raft-tls-ca"},
		{"no certificate", &tls.Config{RootCAs: pool, ClientCAs: pool}, "-raft-tls-cert"},
	} {
		if err := s.SetTLS(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: SetTLS = %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	if got := servedSerial(t, s.RaftAddr(), pairOf(t, dir, "n1"), pool); got.Cmp(serialOf(t, cert)) != 0 {
		t.Errorf("served serial %v after refused changes, want the first certificate's %v", got, serialOf(t, cert))
	}

	// The same rule holds at start: a node whose own certificate peers
	// would refuse does not start, rather than fail every connection.
	bad := testOptions(t, "n2", t.TempDir(), testLogger(t))
	bad.TLS = &tls.Config{Certificates: []tls.Certificate{pairOf(t, dir, "client")}, RootCAs: pool, ClientCAs: pool}
	if st, err := Open(bad); err == nil || !strings.Contains(err.Error(), "not a node certificate") {
		if st != nil {
			st.Close()
		}
		t.Errorf("Open with a client-only raft certificate = %v, want it refused", err)
	}

	plain := openStore(t, testOptions(t, "p", t.TempDir(), testLogger(t)))
	if err := plain.SetTLS(o.TLS); !errors.Is(err, ErrNoTLS) {
		t.Errorf("SetTLS on a plain-TCP store = %v, want ErrNoTLS", err)
	}
}

// TestRaftCommitsAfterRotation rotates n1's certificate (same CA) in a
// three-node TLS cluster, then stops the leader n0. n1 and n2 have never
// talked (followers only hear from the leader), so the election and the
// next commit run over connections made after the rotation: n1's new
// certificate is what its peer accepts.
func TestRaftCommitsAfterRotation(t *testing.T) {
	dir := testPKI(t, "n0", "n1", "n2")
	pool := poolOf(t, dir)
	c := newClusterWith(t, 3, func(i int, o *Options) {
		o.TLS = &tls.Config{Certificates: []tls.Certificate{pairOf(t, dir, o.NodeID)}, RootCAs: pool, ClientCAs: pool}
	})
	res := c.apply(Seed(seedSet))
	c.waitApplied(res.Index)
	if l := c.waitLeader(); l.ID() != "n0" {
		t.Skipf("leader is %s, not the bootstrapped n0: the test needs n1 and n2 to be strangers", l.ID())
	}

	rotated := signWithCA(t, dir, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	n1 := c.stores[1]
	if err := n1.SetTLS(&tls.Config{Certificates: []tls.Certificate{rotated}, RootCAs: pool, ClientCAs: pool}); err != nil {
		t.Fatalf("SetTLS: %v", err)
	}
	if got := servedSerial(t, n1.RaftAddr(), pairOf(t, dir, "n2"), pool); got.Cmp(serialOf(t, rotated)) != 0 {
		t.Fatalf("n1 serves serial %v, want the rotated certificate's %v", got, serialOf(t, rotated))
	}
	// The old pooled connection from the leader still works meanwhile.
	res = c.apply(SetWeight("a", 4))
	c.waitApplied(res.Index)

	c.stop(0)
	res = c.apply(SetWeight("a", 6))
	c.waitApplied(res.Index)
	for _, s := range c.running() {
		if b, _ := s.Config().Backend("a"); b.Weight != 6 {
			t.Fatalf("%s: weight of a = %d, want 6", s.ID(), b.Weight)
		}
	}
}
