package node

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
	"github.com/thebalancer/balancer/pki"
	"github.com/thebalancer/balancer/proxy"
)

// reissue replaces NAME.pem and NAME-key.pem in dir with a new node
// certificate from dir's CA, valid for validity, and returns its serial.
func reissue(t *testing.T, dir, name string, validity time.Duration) *big.Int {
	t.Helper()
	ca, err := pki.LoadKeyPair(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"balancer"}, OrganizationalUnit: []string{"reissued"}},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return serial
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// install copies the files of from over those of to, as an operator
// replacing certificates in place does.
func install(t *testing.T, from, to TLSFiles) {
	t.Helper()
	for _, p := range [][2]string{{from.Cert, to.Cert}, {from.Key, to.Key}, {from.CA, to.CA}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, p[1], b)
	}
}

// liveFiles names certificate, key and CA files in a fresh temp dir that
// the node is started with and that tests overwrite.
func liveFiles(t *testing.T) TLSFiles {
	d := t.TempDir()
	return TLSFiles{Cert: filepath.Join(d, "cert.pem"), Key: filepath.Join(d, "key.pem"), CA: filepath.Join(d, "ca.pem")}
}

// served opens a new TLS connection to addr and returns the serial of the
// certificate the server presented.
func served(t *testing.T, addr string, cfg *tls.Config) *big.Int {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// keptConn is one HTTP/1.1 connection to the admin API, kept open across
// reloads.
type keptConn struct {
	c  *tls.Conn
	br *bufio.Reader
}

func dialKept(t *testing.T, addr string, cfg *tls.Config) *keptConn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keptConn{c: c, br: bufio.NewReader(c)}
}

func (k *keptConn) get(path string) (int, error) {
	k.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: admin\r\n\r\n", path); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func gauge(t *testing.T, n *Node, name, label, value string) (float64, bool) {
	t.Helper()
	fams, err := n.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestReloadTLSAdmin rotates the admin API's certificate in place: to a
// new leaf from the same CA, then to another CA's set. New connections get
// the new certificate and the new CA decides which clients get in, while a
// connection opened at the start keeps working; broken files are refused
// whole and the last good set stays.
func TestReloadTLSAdmin(t *testing.T) {
	dirA := testCerts(t, "n1")
	live := liveFiles(t)
	install(t, filesOf(dirA, "n1"), live)
	var logs testutil.SyncBuffer
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1})
	cfg.TLS = live
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	n, _ := startNode(t, cfg)
	addr := n.AdminAddr()
	clientA := clientTLS(t, dirA, "client")

	first := served(t, addr, clientA)
	if want := testutil.CertSerial(t, filepath.Join(dirA, "n1.pem")); first.Cmp(want) != 0 {
		t.Fatalf("served serial %X, want %X", first, want)
	}
	old := dialKept(t, addr, clientA)
	if code, err := old.get("/v1/members"); err != nil || code != http.StatusOK {
		t.Fatalf("GET on the first connection: %d %v", code, err)
	}

	// A new leaf from the same CA, valid longer.
	renewed := reissue(t, dirA, "n1", 3*time.Hour)
	install(t, filesOf(dirA, "n1"), live)
	if err := n.ReloadTLS(); err != nil {
		t.Fatalf("ReloadTLS: %v", err)
	}
	if got := served(t, addr, clientA); got.Cmp(renewed) != 0 {
		t.Fatalf("after the reload a new connection got serial %X, want the renewed %X", got, renewed)
	}
	if code, err := old.get("/v1/members"); err != nil || code != http.StatusOK {
		t.Fatalf("GET on the connection opened before the reload: %d %v", code, err)
	}
	if got := old.c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(first) != 0 {
		t.Errorf("the open connection's certificate changed to %X", got)
	}
	if got := n.tls.forward().Certificates[0].Leaf.SerialNumber; got.Cmp(renewed) != 0 {
		t.Errorf("forwarding shows serial %X, want the renewed %X", got, renewed)
	}
	if s := logs.String(); !strings.Contains(s, "TLS certificate reloaded") || !strings.Contains(s, fmt.Sprintf("serial=%X", renewed)) {
		t.Errorf("no INFO line naming the new certificate:\n%s", s)
	}
	want := float64(n.tls.admin.Load().leaf.NotAfter.Unix())
	if v, ok := gauge(t, n, "balancer_tls_cert_expiry_timestamp_seconds", "listener", "admin"); !ok || v != want {
		t.Errorf("expiry gauge = %v (present %v), want %v", v, ok, want)
	}

	// Another CA's set: the CA the node verifies clients with changes too.
	dirB := testCerts(t, "n1")
	install(t, filesOf(dirB, "n1"), live)
	if err := n.ReloadTLS(); err != nil {
		t.Fatalf("ReloadTLS to CA B: %v", err)
	}
	setB := testutil.CertSerial(t, filepath.Join(dirB, "n1.pem"))
	if got := served(t, addr, clientTLS(t, dirB, "client")); got.Cmp(setB) != 0 {
		t.Fatalf("serial %X after the switch to CA B, want %X", got, setB)
	}
	staleClient := clientTLS(t, dirA, "client")
	staleClient.RootCAs = clientTLS(t, dirB, "").RootCAs
	if _, err := admin.NewClient(addr, "", admin.WithTLS(staleClient)).Members(t.Context()); err == nil {
		t.Error("a client certificate from the replaced CA was still accepted")
	}
	if code, err := old.get("/v1/members"); err != nil || code != http.StatusOK {
		t.Fatalf("GET on the first connection after the CA change: %d %v", code, err)
	}

	// Broken sets. Each starts from a valid new leaf of CA B, so that a
	// partial reload would show up as that leaf being served.
	garbage := []byte("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n\x00\xff")
	for _, tc := range []struct {
		name  string
		spoil func()
		want  []string
	}{
		{"garbage certificate", func() { writeFile(t, live.Cert, garbage) }, []string{"-tls-cert", live.Cert}},
		{"empty key", func() { writeFile(t, live.Key, nil) }, []string{"-tls-cert/-tls-key", live.Key}},
		{"missing key", func() { os.Remove(live.Key) }, []string{live.Key, "no such file"}},
		{"key of another certificate", func() {
			b, err := os.ReadFile(filepath.Join(dirB, "client-key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, live.Key, b)
		}, []string{"private key does not match"}},
		{"garbage CA", func() { writeFile(t, live.CA, garbage) }, []string{"-tls-ca", live.CA}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reissue(t, dirB, "n1", time.Hour)
			install(t, filesOf(dirB, "n1"), live)
			tc.spoil()
			err := n.ReloadTLS()
			if err == nil {
				t.Fatal("ReloadTLS accepted broken files")
			}
			for _, w := range append(tc.want, "admin TLS not reloaded") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if got := served(t, addr, clientTLS(t, dirB, "client")); got.Cmp(setB) != 0 {
				t.Errorf("serial %X after a refused reload, want the last good %X", got, setB)
			}
		})
	}
	if code, err := old.get("/v1/members"); err != nil || code != http.StatusOK {
		t.Fatalf("GET on the first connection after refused reloads: %d %v", code, err)
	}
}

func TestReloadTLSWithoutTLS(t *testing.T) {
	n, _ := startNode(t, testConfig(t, proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1}))
	if err := n.ReloadTLS(); !errors.Is(err, ErrNoTLS) {
		t.Fatalf("ReloadTLS without TLS = %v, want ErrNoTLS", err)
	}
}

// TestReloadTLSRaft rotates one node's raft certificate (same CA) in a
// two-node cluster: new raft handshakes get it and the cluster still
// commits. Broken raft files are refused while the admin files, which
// are fine, still reload: each listener stands alone.
func TestReloadTLSRaft(t *testing.T) {
	dir := testCerts(t, "n1", "n2")
	lives := map[string][2]TLSFiles{}
	be := proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1}
	nodes := startClusterWith(t, 2, func(i int, c *Config) {
		l := [2]TLSFiles{liveFiles(t), liveFiles(t)} // admin, raft
		install(t, filesOf(dir, c.Name), l[0])
		install(t, filesOf(dir, c.Name), l[1])
		lives[c.Name] = l
		c.TLS, c.RaftTLS = l[0], l[1]
		if i == 0 {
			c.BootstrapExpect = 1
		}
	}, be)
	cli := admin.NewClient(nodes[0].AdminAddr(), "", admin.WithTLS(clientTLS(t, dir, "client")))
	testutil.Eventually(t, 20*time.Second, "two raft voters and a seeded config on every node", func() bool {
		for _, n := range nodes {
			s, err := n.store.Servers()
			if err != nil || len(s) != 2 || n.store.AppliedIndex() == 0 {
				return false
			}
		}
		return true
	})
	n2 := nodes[1]
	raftClient := clientTLS(t, dir, "n1") // raft wants a node certificate
	if got, want := served(t, n2.store.RaftAddr(), raftClient), testutil.CertSerial(t, filepath.Join(dir, "n2.pem")); got.Cmp(want) != 0 {
		t.Fatalf("n2's raft serves %X, want %X", got, want)
	}

	renewed := reissue(t, dir, "n2", 2*time.Hour)
	install(t, filesOf(dir, "n2"), lives["n2"][1])
	if err := n2.ReloadTLS(); err != nil {
		t.Fatalf("ReloadTLS: %v", err)
	}
	if got := served(t, n2.store.RaftAddr(), raftClient); got.Cmp(renewed) != 0 {
		t.Fatalf("after the reload n2's raft serves %X, want the renewed %X", got, renewed)
	}
	want := float64(n2.tls.raft.Load().leaf.NotAfter.Unix())
	if v, ok := gauge(t, n2.Node, "balancer_tls_cert_expiry_timestamp_seconds", "listener", "raft"); !ok || v != want {
		t.Errorf("raft expiry gauge = %v (present %v), want %v", v, ok, want)
	}
	if res := setWeight(t, cli, 4); !res.AppliedEverywhere {
		t.Fatalf("write after the raft reload: %+v", res)
	}

	// The operator's client certificate from the same CA parses and
	// matches its key, but peers would refuse it: refused here already.
	install(t, TLSFiles{Cert: filepath.Join(dir, "client.pem"), Key: filepath.Join(dir, "client-key.pem"), CA: filepath.Join(dir, pki.CAFile)}, lives["n2"][1])
	if err := n2.ReloadTLS(); err == nil || !strings.Contains(err.Error(), "not a node certificate") || !strings.Contains(err.Error(), lives["n2"][1].Cert) {
		t.Fatalf("ReloadTLS with a client-only raft certificate = %v; want a refusal naming the file", err)
	}
	if got := served(t, n2.store.RaftAddr(), raftClient); got.Cmp(renewed) != 0 {
		t.Errorf("after a refused raft reload n2's raft serves %X, want the last good %X", got, renewed)
	}
	install(t, filesOf(dir, "n2"), lives["n2"][1])

	// Broken raft CA; the admin files hold a valid new leaf.
	adminRenewed := reissue(t, dir, "n2", time.Hour)
	install(t, filesOf(dir, "n2"), lives["n2"][0])
	writeFile(t, lives["n2"][1].CA, []byte("junk"))
	err := n2.ReloadTLS()
	if err == nil || !strings.Contains(err.Error(), "raft TLS not reloaded") || !strings.Contains(err.Error(), lives["n2"][1].CA) {
		t.Fatalf("ReloadTLS with a broken raft CA = %v; want an error naming the raft CA file", err)
	}
	if strings.Contains(err.Error(), "admin TLS") {
		t.Errorf("the admin reload failed too: %v", err)
	}
	if got := served(t, n2.store.RaftAddr(), raftClient); got.Cmp(renewed) != 0 {
		t.Errorf("after a refused raft reload n2's raft serves %X, want the last good %X", got, renewed)
	}
	if got := served(t, n2.AdminAddr(), clientTLS(t, dir, "client")); got.Cmp(adminRenewed) != 0 {
		t.Errorf("n2's admin API serves %X, want the reloaded %X", got, adminRenewed)
	}
	if res := setWeight(t, cli, 5); !res.AppliedEverywhere {
		t.Fatalf("write after the refused reload: %+v", res)
	}
}
