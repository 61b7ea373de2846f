package testutil

import (
	"net"
	"testing"
)

// FreeAddr returns a 127.0.0.1 HOST:PORT that nothing listens on: the kernel
// handed it out a moment ago and it was closed at once. A dial to it is
// refused, and a test may bind it soon after (racing any other process for
// it).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
