//go:build !unix

package proxy

// DefaultMaxConns is 10,000 where the open-file limit cannot be read.
func DefaultMaxConns() int { return 10000 }
