//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package consensus

// lockDir is a no-op where flock is unavailable; bbolt's own file lock still
// keeps a second node out (by blocking rather than failing).
func lockDir(string) (func() error, error) { return func() error { return nil }, nil }
