package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/thebalancer/balancer/pki"
)

// TLSFiles names the PEM files of one TLS setting: this node's certificate
// and key, and the CA it verifies peers (or clients) against.
type TLSFiles struct {
	Cert string
	Key  string
	CA   string
}

// validateAdminTLS checks -tls-cert, -tls-key and -tls-ca without reading them.
func (f TLSFiles) validateAdmin() error {
	switch {
	case f.Cert != "" && f.Key == "":
		return errors.New("-tls-cert needs -tls-key: the certificate's private key")
	case f.Key != "" && f.Cert == "":
		return errors.New("-tls-key needs -tls-cert: the certificate it belongs to")
	case f.CA != "" && f.Cert == "":
		return errors.New("-tls-ca needs -tls-cert and -tls-key: client certificates are verified only on an HTTPS admin API")
	}
	return nil
}

// validateRaft checks -raft-tls-cert, -raft-tls-key and -raft-tls-ca:
// mutual TLS needs all three.
func (f TLSFiles) validateRaft() error {
	if f == (TLSFiles{}) {
		return nil
	}
	for _, x := range []struct{ flag, file string }{{"-raft-tls-cert", f.Cert}, {"-raft-tls-key", f.Key}, {"-raft-tls-ca", f.CA}} {
		if x.file == "" {
			return fmt.Errorf("%s: raft mutual TLS needs -raft-tls-cert, -raft-tls-key and -raft-tls-ca together", x.flag)
		}
	}
	return nil
}

// ErrNoTLS is returned by ReloadTLS on a node started without TLS files.
var ErrNoTLS = errors.New("no TLS files to reload: the node runs without -tls-cert and -raft-tls-cert")

// adminTLS is one load of -tls-cert, -tls-key and -tls-ca. It is replaced
// whole, so that no handshake pairs one load's certificate with
// another's CA.
type adminTLS struct {
	leaf    *x509.Certificate
	server  *tls.Config // what the admin API presents and verifies clients with
	forward *tls.Config // what a follower shows and trusts when it forwards a write
}

// raftTLS is one load of -raft-tls-cert, -raft-tls-key and -raft-tls-ca.
type raftTLS struct {
	leaf *x509.Certificate
	cfg  *tls.Config // for consensus.Options.TLS and Store.SetTLS
}

// tlsState is a node's current TLS material; ReloadTLS replaces it. The
// pointers are read on every new connection and never change from or to
// nil after New.
type tlsState struct {
	admin atomic.Pointer[adminTLS] // nil: plain HTTP
	raft  atomic.Pointer[raftTLS]  // nil: plain TCP
}

// adminServer is the admin listener's config, or nil for plain HTTP.
// Each handshake takes the config of the load current at its start.
func (s *tlsState) adminServer() *tls.Config {
	if s.admin.Load() == nil {
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.admin.Load().server, nil
		},
	}
}

// forward is the current client config for forwarding writes to the
// leader's HTTPS admin API.
func (s *tlsState) forward() *tls.Config {
	if a := s.admin.Load(); a != nil {
		return a.forward
	}
	return nil
}

// loadTLS reads every file named in the config; errors name the flag and
// the file. A nil result means the setting is off.
func loadTLS(c Config) (*adminTLS, *raftTLS, error) {
	var a *adminTLS
	var r *raftTLS
	var err error
	if c.TLS.Cert != "" {
		if a, err = loadAdminTLS(c.TLS); err != nil {
			return nil, nil, err
		}
	}
	if c.RaftTLS.Cert != "" {
		if r, err = loadRaftTLS(c.RaftTLS); err != nil {
			return nil, nil, err
		}
	}
	return a, r, nil
}

func loadAdminTLS(f TLSFiles) (*adminTLS, error) {
	cert, leaf, err := loadPair(f)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	var pool *x509.CertPool
	if f.CA != "" {
		if pool, err = pki.LoadPool(f.CA); err != nil {
			return nil, fmt.Errorf("-tls-ca: %w", err)
		}
	}
	server := pki.ServerConfig(cert, pool)
	// This config replaces the listener's for the handshake
	// (GetConfigForClient), so it must offer the protocols that ServeTLS
	// adds to the listener's.
	server.NextProtos = []string{"h2", "http/1.1"}
	// A resumed session skips client certificate verification: a ticket
	// from before a reload would let its holder in under the old CA. The
	// admin API's clients keep no session cache, so this costs nothing.
	server.SessionTicketsDisabled = true
	// A follower forwards writes to the leader as a client: it trusts the
	// admin CA (the system's roots without one) and shows its own
	// certificate, which a leader with -tls-ca demands.
	return &adminTLS{leaf: leaf, server: server, forward: pki.ClientConfig(pool, &cert)}, nil
}

func loadRaftTLS(f TLSFiles) (*raftTLS, error) {
	cert, leaf, err := loadPair(f)
	if err != nil {
		return nil, fmt.Errorf("-raft-tls-cert/-raft-tls-key: %w", err)
	}
	pool, err := pki.LoadPool(f.CA)
	if err != nil {
		return nil, fmt.Errorf("-raft-tls-ca: %w", err)
	}
	return &raftTLS{leaf: leaf, cfg: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool}}, nil
}

// loadPair reads f's certificate and key and parses the leaf, for logs
// and metrics.
func loadPair(f TLSFiles) (tls.Certificate, *x509.Certificate, error) {
	cert, err := pki.LoadKeyPair(f.Cert, f.Key)
	if err != nil {
		return cert, nil, err
	}
	leaf := cert.Leaf // set by tls.X509KeyPair unless GODEBUG x509keypairleaf=0
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return cert, nil, fmt.Errorf("%s: %w", f.Cert, err)
		}
	}
	return cert, leaf, nil
}

// ReloadTLS rereads the admin API's and raft's certificate, key and CA
// files from the paths the node was started with; the agent calls it on
// SIGHUP. New handshakes use the new material, in both directions (for
// the admin API: serving, verifying clients, forwarding writes); open
// connections keep theirs and are not cut.
//
// Each listener reloads all or nothing: if one of its files is missing or
// unparsable, or the key does not match the certificate (or, for raft,
// the certificate is not a node certificate), it keeps its old material
// and the error says which file and why; the other listener still
// reloads. Each successful reload is logged at INFO with the new
// certificate's subject, serial and expiry. A valid certificate that peers
// do not trust (another CA) is not detected here: peers refuse this
// node's new connections. It returns ErrNoTLS when the node has no TLS.
//
// Safe from any goroutine; concurrent calls run one after the other.
func (n *Node) ReloadTLS() error {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	oldAdmin, oldRaft := n.tls.admin.Load(), n.tls.raft.Load()
	if oldAdmin == nil && oldRaft == nil {
		return ErrNoTLS
	}
	var errs []error
	if oldAdmin != nil {
		a, err := loadAdminTLS(n.cfg.TLS)
		if err != nil {
			errs = append(errs, fmt.Errorf("admin TLS not reloaded, still serving %s: %w", certName(oldAdmin.leaf), err))
		} else {
			n.tls.admin.Store(a)
			n.logReloaded("admin", a.leaf)
		}
	}
	if oldRaft != nil {
		r, err := loadRaftTLS(n.cfg.RaftTLS)
		if err == nil {
			if err = n.store.SetTLS(r.cfg); err != nil {
				err = fmt.Errorf("%s: %w", n.cfg.RaftTLS.Cert, err)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("raft TLS not reloaded, still using %s: %w", certName(oldRaft.leaf), err))
		} else {
			n.tls.raft.Store(r)
			n.logReloaded("raft", r.leaf)
		}
	}
	return errors.Join(errs...)
}

func (n *Node) logReloaded(listener string, leaf *x509.Certificate) {
	attrs := []any{"listener", listener, "subject", leaf.Subject.String(), "serial", fmt.Sprintf("%X", leaf.SerialNumber),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		// Loaded as asked, as at start; but peers and clients will refuse it.
		n.log.Warn("TLS certificate reloaded, but it is not valid now", attrs...)
		return
	}
	n.log.Info("TLS certificate reloaded: new connections use it", attrs...)
}

// certName identifies a certificate in an error message.
func certName(leaf *x509.Certificate) string {
	return fmt.Sprintf("%q (serial %X, expires %s)", leaf.Subject.String(), leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
}
