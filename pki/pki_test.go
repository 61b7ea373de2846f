package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func generate(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	_, err := Generate(Options{Dir: dir, Nodes: []string{"n1", "n2"}, Hosts: []string{"127.0.0.1", "localhost"},
		Client: "cli", Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func parse(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	c, err := LoadKeyPair(path+".pem", path+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestGeneratedCertificatesVerify(t *testing.T) {
	dir := generate(t)
	roots, err := LoadPool(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		c := parse(t, filepath.Join(dir, n))
		for _, host := range []string{"127.0.0.1", "localhost", n} {
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("%s as a server for %s: %v", n, host, err)
			}
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s as a client: %v", n, err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "example.com"}); err == nil {
			t.Errorf("%s verified for a host it was not issued for", n)
		}
	}
	cli := parse(t, filepath.Join(dir, "cli"))
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert: %v", err)
	}
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Errorf("the client cert must not serve")
	}
	for _, f := range []string{"ca-key.pem", "n1-key.pem", "n2-key.pem", "cli-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
}

func TestGenerateRefusesToReplaceCA(t *testing.T) {
	dir := generate(t)
	before, _ := os.ReadFile(filepath.Join(dir, CAFile))
	o := Options{Dir: dir, Nodes: []string{"n3"}, Hosts: []string{"127.0.0.1"}, Validity: time.Hour}
	if _, err := Generate(o); !errors.Is(err, ErrCAExists) {
		t.Fatalf("second run without force: %v, want ErrCAExists", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, CAFile)); string(after) != string(before) {
		t.Fatal("the refused run changed ca.pem")
	}
	o.Force = true
	if _, err := Generate(o); err != nil {
		t.Fatalf("with force: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, CAFile)); string(after) == string(before) {
		t.Fatal("force did not replace the CA")
	}
}

func TestOptionsValidate(t *testing.T) {
	ok := Options{Dir: "d", Nodes: []string{"n1"}, Hosts: []string{"127.0.0.1"}, Validity: time.Hour}
	cases := map[string]func(*Options){
		"no dir":           func(o *Options) { o.Dir = "" },
		"nothing to issue": func(o *Options) { o.Nodes = nil },
		"no hosts":         func(o *Options) { o.Hosts = nil },
		"path in name":     func(o *Options) { o.Nodes = []string{"../x"} },
		"name is the CA's": func(o *Options) { o.Nodes = []string{"ca"} },
		"twice":            func(o *Options) { o.Client = "n1" },
		"bad host":         func(o *Options) { o.Hosts = []string{"a b"} },
		"short validity":   func(o *Options) { o.Validity = time.Minute },
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("good options: %v", err)
	}
	for name, mut := range cases {
		o := ok
		mut(&o)
		if err := o.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestMutualTLSHandshake checks the configs end to end: the server demands
// a client certificate from the CA, and the client checks the server's name.
func TestMutualTLSHandshake(t *testing.T) {
	dir := generate(t)
	roots, err := LoadPool(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := LoadKeyPair(filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerConfig(srvCert, roots))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte("hi"))
			}()
		}
	}()
	dial := func(cert *tls.Certificate) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), ClientConfig(roots, cert))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		return err
	}
	cli, err := LoadKeyPair(filepath.Join(dir, "cli.pem"), filepath.Join(dir, "cli-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(&cli); err != nil {
		t.Errorf("with the client cert: %v", err)
	}
	if err := dial(nil); err == nil {
		t.Error("without a client cert the server answered")
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.pem")
	if _, err := LoadPool(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("LoadPool: %v", err)
	}
	if _, err := LoadKeyPair(missing, missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("LoadKeyPair: %v", err)
	}
	notPEM := filepath.Join(t.TempDir(), "x.pem")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	if _, err := LoadPool(notPEM); err == nil || !strings.Contains(err.Error(), notPEM) {
		t.Errorf("LoadPool of a non-PEM file: %v", err)
	}
}
