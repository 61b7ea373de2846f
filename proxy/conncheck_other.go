//go:build !unix

package proxy

import "net"

// connCheck has no non-blocking peek on this platform: a pooled connection
// is assumed usable, and a request that fails on it is retried when that is
// safe (see retryable).
type connCheck struct{}

func (*connCheck) init(net.Conn) {}

func (*connCheck) usable() bool { return true }
