package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/pki"
)

// TestProcSIGHUPReloadsTLS rotates a running agent's admin certificates
// the way an operator would: `balancer certs -force` over the files the
// agent was started with (a new CA too), then SIGHUP. New handshakes get
// the new certificate; a broken file on the next SIGHUP is refused with an
// ERROR naming it, and the agent keeps serving the last good one.
func TestProcSIGHUPReloadsTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	certs := func(force bool) {
		t.Helper()
		args := []string{"certs", "-out", dir, "-nodes", "n1", "-hosts", "127.0.0.1"}
		if force {
			args = append(args, "-force")
		}
		var out, errb bytes.Buffer
		if err := run(context.Background(), args, &out, &errb); err != nil {
			t.Fatalf("certs: %v %s", err, errb.String())
		}
	}
	certs(false)
	f := func(name string) string { return filepath.Join(dir, name) }
	backends := startDemoBackends(t, "a")
	a := startAgent(t, "n1", t.TempDir(), "-backend", "a="+backends["a"],
		"-tls-cert", f("n1.pem"), "-tls-key", f("n1-key.pem"), "-tls-ca", f("ca.pem"))
	testutil.Eventually(t, 10*time.Second, "the HTTPS admin API answers", func() error {
		_, err := a.client().Members(context.Background())
		return err
	})
	// handshake connects as the operator with the files in dir now.
	handshake := func() (*big.Int, error) {
		pool, err := pki.LoadPool(f("ca.pem"))
		if err != nil {
			return nil, err
		}
		cert, err := pki.LoadKeyPair(f("client.pem"), f("client-key.pem"))
		if err != nil {
			return nil, err
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", a.Admin, pki.ClientConfig(pool, &cert))
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
	}
	first, err := handshake()
	if err != nil {
		t.Fatal(err)
	}

	certs(true)
	rotated := testutil.CertSerial(t, f("n1.pem"))
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "a handshake with the rotated certificate", func() bool {
		s, err := handshake()
		return err == nil && s.Cmp(rotated) == 0
	})
	if rotated.Cmp(first) == 0 {
		t.Fatal("certs -force made the same serial")
	}
	if !strings.Contains(a.logs.String(), "TLS certificate reloaded") {
		t.Errorf("no reload log line:\n%s", tail(a.logs.String(), 10))
	}

	if err := os.WriteFile(f("n1.pem"), []byte("garbage\x00\xff"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "an ERROR naming the broken file", func() bool {
		for _, l := range strings.Split(a.logs.String(), "\n") {
			if strings.Contains(l, `"level":"ERROR"`) && strings.Contains(l, "TLS reload failed") && strings.Contains(l, f("n1.pem")) {
				return true
			}
		}
		return false
	})
	select {
	case err := <-a.exited:
		a.cmd = nil
		t.Fatalf("agent exited after a SIGHUP with a broken certificate: %v\n%s", err, tail(a.logs.String(), 10))
	default:
	}
	// The files in dir but the broken certificate are still the rotated
	// set's, so the operator's handshake still verifies.
	if s, err := handshake(); err != nil || s.Cmp(rotated) != 0 {
		t.Fatalf("after the refused reload: serial %v, %v; want the rotated %X", s, err, rotated)
	}
}
