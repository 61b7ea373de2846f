package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel send cmd SIGTERM when the bench process
// dies, however it dies: a bench killed by a second Ctrl-C, an OOM kill or
// SIGKILL must not leave its agents and HAProxy holding ports and CPU.
func dieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
}
