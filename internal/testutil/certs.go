package testutil

import (
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"testing"
)

// CertSerial is the serial number of the first certificate in a PEM file:
// what tests of certificate rotation compare a handshake against.
func CertSerial(t testing.TB, path string) *big.Int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c.SerialNumber
}
