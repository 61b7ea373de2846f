//go:build unix

package proxy

import "syscall"

// DefaultMaxConns is 10,000, or less when the open-file limit could not
// carry that many: each proxied connection holds two descriptors (client
// and backend), and the node keeps some for raft, gossip, the admin API,
// its stores and idle backend connections. Go raises the soft limit to the
// hard one at start, so this reads the limit the process really has.
func DefaultMaxConns() int {
	const want, reserve, floor = 10000, 512, 64
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<40 {
		return want
	}
	n := (int64(rl.Cur) - reserve) / 2
	return int(max(min(n, want), floor))
}
