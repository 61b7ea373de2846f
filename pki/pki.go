// Package pki owns the balancer's certificates: it makes a small test CA
// with node and client certificates (the `balancer certs` command), and it
// loads certificate, key and CA files into the tls.Configs that the admin
// API, its clients and the raft transport use. It imports the standard
// library only, and knows nothing of flags: callers name the flag in errors.
//
// Every config it builds requires TLS 1.3: the cluster's peers and tools
// are all this binary, so there is no old client to stay compatible with.
package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// LoadKeyPair reads a PEM certificate (chain) and its private key.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	// Read each file first so that a missing or unreadable one is named,
	// which tls.LoadX509KeyPair's errors do not always do.
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s with key %s: %w", certFile, keyFile, err)
	}
	return c, nil
}

// LoadPool reads a PEM file of one or more CA certificates.
func LoadPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", caFile)
	}
	return pool, nil
}

// ServerConfig is a TLS 1.3 server config presenting cert. With a non-nil
// clientCAs every client must present a certificate that chains to them.
func ServerConfig(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	if clientCAs != nil {
		c.ClientCAs = clientCAs
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c
}

// ClientConfig is a TLS 1.3 client config that trusts roots (nil: the
// system's roots) and presents cert when it has one.
func ClientConfig(roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}
