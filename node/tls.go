package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

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

// tlsSetup is what a node's TLS files load into.
type tlsSetup struct {
	admin   *tls.Config // admin API server; nil: plain HTTP
	forward *tls.Config // client for forwarding writes to the leader's HTTPS admin API
	raft    *tls.Config // raft's mutual TLS; nil: plain TCP
}

// loadTLS reads every file named in the config; errors name the flag and the file.
func loadTLS(c Config) (tlsSetup, error) {
	var s tlsSetup
	if c.TLS.Cert != "" {
		cert, err := pki.LoadKeyPair(c.TLS.Cert, c.TLS.Key)
		if err != nil {
			return s, fmt.Errorf("-tls-cert/-tls-key: %w", err)
		}
		var pool *x509.CertPool
		if c.TLS.CA != "" {
			if pool, err = pki.LoadPool(c.TLS.CA); err != nil {
				return s, fmt.Errorf("-tls-ca: %w", err)
			}
		}
		s.admin = pki.ServerConfig(cert, pool)
		// A follower forwards writes to the leader as a client: it trusts
		// the admin CA (the system's roots without one) and shows its own
		// certificate, which a leader with -tls-ca demands.
		s.forward = pki.ClientConfig(pool, &cert)
	}
	if c.RaftTLS.Cert != "" {
		cert, err := pki.LoadKeyPair(c.RaftTLS.Cert, c.RaftTLS.Key)
		if err != nil {
			return s, fmt.Errorf("-raft-tls-cert/-raft-tls-key: %w", err)
		}
		pool, err := pki.LoadPool(c.RaftTLS.CA)
		if err != nil {
			return s, fmt.Errorf("-raft-tls-ca: %w", err)
		}
		s.raft = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool}
	}
	return s, nil
}
