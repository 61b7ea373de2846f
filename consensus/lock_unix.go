//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package consensus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive, non-blocking flock on DIR/LOCK, so a second
// Store (in this or another process) on the same data dir fails at once
// instead of blocking forever inside bbolt's own lock.
func lockDir(dir string) (unlock func() error, err error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("-data-dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("-data-dir %s is in use by another balancer node", dir)
		}
		return nil, fmt.Errorf("-data-dir %s: lock: %w", dir, err)
	}
	return f.Close, nil // closing the file releases the lock
}
