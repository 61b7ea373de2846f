package bench

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// The test binary, run again with this variable set, plays a bench that
// starts a child with dieWithParent, prints the child's pid and is killed.
const orphanParentEnv = "BENCH_TEST_ORPHAN_PARENT"

func init() {
	if os.Getenv(orphanParentEnv) == "" {
		return
	}
	child := exec.Command("sleep", "60")
	dieWithParent(child)
	if err := child.Start(); err != nil {
		os.Exit(3)
	}
	os.Stdout.WriteString(strconv.Itoa(child.Process.Pid) + "\n")
	time.Sleep(time.Minute) // until the test kills us
	os.Exit(0)
}

func TestChildrenDieWithTheBench(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep binary")
	}
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), orphanParentEnv+"=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(line[:max(0, len(line)-1)])
	if err != nil || perr != nil {
		parent.Process.Kill()
		t.Fatalf("no child pid from the parent: %q %v %v", line, err, perr)
	}
	parent.Process.Kill() // SIGKILL: no chance to clean up
	parent.Wait()
	testutil.Eventually(t, 5*time.Second, "the child to die with its parent", func() bool {
		// Signal 0 fails once the child is gone (or reaped by init).
		return syscall.Kill(pid, 0) != nil || isZombie(pid)
	})
}

// isZombie reports a process that has exited but not been reaped yet.
func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// "pid (comm) S ...": the state follows the last ')'.
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && b[i+2] == 'Z'
		}
	}
	return false
}
