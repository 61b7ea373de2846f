//go:build !linux

package bench

import "os/exec"

// dieWithParent: only Linux can tie a child's life to its parent's; on
// other systems a bench that dies without cleaning up leaves its children.
func dieWithParent(cmd *exec.Cmd) {}
