package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Options says which certificates Generate makes.
type Options struct {
	// Dir receives the files; it is created (0700) if missing.
	Dir string
	// Nodes names one certificate per node: NAME.pem and NAME-key.pem,
	// valid for server and client authentication, so one file pair serves
	// a node's admin API, raft in both directions and write forwarding.
	Nodes []string
	// Hosts are the IP addresses and DNS names every node certificate is
	// valid for (peers and clients check the name they dial against them).
	// The node's own name is added as a DNS name.
	Hosts []string
	// Client names a client-only certificate (CLIENT.pem, CLIENT-key.pem)
	// for the CLI and curl; empty: none.
	Client string
	// Validity is how long the certificates are valid from now.
	Validity time.Duration
	// Force replaces an existing CA. Without it Generate refuses, because
	// every certificate the old CA signed stops being trusted.
	Force bool
}

// Files written by Generate besides the node and client pairs.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// ErrCAExists is returned when Dir already holds a CA and Force is unset.
var ErrCAExists = errors.New("a CA already exists")

// Validate checks o without touching the disk.
func (o Options) Validate() error {
	if o.Dir == "" {
		return errors.New("-out: a directory is required")
	}
	if len(o.Nodes) == 0 && o.Client == "" {
		return errors.New("-nodes: name at least one node (or a -client)")
	}
	seen := map[string]bool{}
	names := append([]string(nil), o.Nodes...)
	if o.Client != "" {
		names = append(names, o.Client)
	}
	for _, n := range names {
		if err := validName(n); err != nil {
			return err
		}
		if n == "ca" {
			return fmt.Errorf("name %q is taken by the CA's files", n)
		}
		if seen[n] {
			return fmt.Errorf("name %q given twice (nodes and client share a file namespace)", n)
		}
		seen[n] = true
	}
	if len(o.Nodes) > 0 && len(o.Hosts) == 0 {
		return errors.New("-hosts: name the IP addresses or DNS names the nodes are reached at")
	}
	for _, h := range o.Hosts {
		if h == "" || strings.ContainsAny(h, " /:") && net.ParseIP(h) == nil {
			return fmt.Errorf("-hosts: %q is neither an IP address nor a DNS name", h)
		}
	}
	if o.Validity < time.Hour {
		return fmt.Errorf("-days: validity %v is too short", o.Validity)
	}
	return nil
}

// validName accepts names that are safe as file names and DNS labels.
func validName(n string) error {
	if n == "" || len(n) > 63 {
		return fmt.Errorf("name %q: want 1..63 characters", n)
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') || n[0] == '.' {
			return fmt.Errorf("name %q: use letters, digits, '-', '_' and '.' only", n)
		}
	}
	return nil
}

// Generate makes a new CA (P-256 ECDSA) in o.Dir and signs the node and
// client certificates with it. Keys are written 0600, certificates 0644.
// It returns the paths written, in order.
func Generate(o Options) ([]string, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	caPath := filepath.Join(o.Dir, CAFile)
	if _, err := os.Stat(caPath); err == nil && !o.Force {
		return nil, fmt.Errorf("%w at %s: pass -force to replace it (every certificate it signed stops being trusted)", ErrCAExists, caPath)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now()
	notBefore, notAfter := now.Add(-5*time.Minute), now.Add(o.Validity) // tolerate a little clock skew
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "balancer CA", Organization: []string{"balancer"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	var written []string
	if err := writePair(o.Dir, "ca", caDER, caKey, &written); err != nil {
		return written, err
	}
	var ips []net.IP
	var dns []string
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	issue := func(name string, usage []x509.ExtKeyUsage, dns []string, ips []net.IP) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: name, Organization: []string{"balancer"}},
			NotBefore:    notBefore,
			NotAfter:     notAfter,
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  usage,
			DNSNames:     dns,
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		return writePair(o.Dir, name, der, key, &written)
	}
	for _, n := range o.Nodes {
		names := append([]string{n}, dns...)
		if err := issue(n, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, names, ips); err != nil {
			return written, fmt.Errorf("node %s: %w", n, err)
		}
	}
	if o.Client != "" {
		if err := issue(o.Client, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil); err != nil {
			return written, fmt.Errorf("client %s: %w", o.Client, err)
		}
	}
	return written, nil
}

// serial is a random 128-bit serial number, as RFC 5280 recommends.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n.Add(n, big.NewInt(1))
}

// writePair writes NAME.pem and NAME-key.pem.
func writePair(dir, name string, der []byte, key *ecdsa.PrivateKey, written *[]string) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	certPath := filepath.Join(dir, name+".pem")
	keyPath := filepath.Join(dir, name+"-key.pem")
	if err := writePEM(keyPath, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	*written = append(*written, keyPath)
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	*written = append(*written, certPath)
	return nil
}

// writePEM replaces path with one PEM block, with perm even if the file
// existed with wider permissions.
func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
