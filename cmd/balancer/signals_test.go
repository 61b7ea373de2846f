package main

import (
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

func readyz(a *agent) int {
	resp, err := http.Get("http://" + a.Admin + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestProcSIGHUPIsLoggedAndIgnored(t *testing.T) {
	backends := startDemoBackends(t, "b1")
	a := startAgent(t, "n1", t.TempDir(), "-backend", "b1="+backends["b1"])
	testutil.Eventually(t, 10*time.Second, "ready", func() bool { return readyz(a) == http.StatusOK })

	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the SIGHUP log line", func() bool { return strings.Contains(a.logs.String(), "SIGHUP ignored") })
	select {
	case err := <-a.exited:
		a.cmd = nil
		t.Fatalf("agent exited on SIGHUP: %v\n%s", err, tail(a.logs.String(), 10))
	case <-time.After(200 * time.Millisecond):
	}
	if code := readyz(a); code != http.StatusOK {
		t.Errorf("/readyz after SIGHUP: %d, want 200", code)
	}
}

func TestProcSecondSignalSkipsTheDrain(t *testing.T) {
	backends := startDemoBackends(t, "b1")
	a := startAgent(t, "n1", t.TempDir(), "-backend", "b1="+backends["b1"], "-shutdown-timeout", "30s")
	testutil.Eventually(t, 10*time.Second, "ready", func() bool { return readyz(a) == http.StatusOK })
	// A request in flight for longer than the test, so that the drain
	// would wait out the whole -shutdown-timeout.
	go func() {
		resp, err := http.Get("http://" + a.Listen + "/?sleep=60s")
		if err == nil {
			resp.Body.Close()
		}
	}()
	testutil.Eventually(t, 5*time.Second, "a request in flight", func() bool {
		l, err := a.client().Load(context.Background())
		return err == nil && len(l.Backends) == 1 && l.Backends[0].Local > 0
	})

	start := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the first signal's log line", func() bool {
		return strings.Contains(a.logs.String(), "again to exit at once")
	})
	select {
	case err := <-a.exited:
		a.cmd = nil
		t.Fatalf("agent exited before the drain ended: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.exited:
		a.cmd = nil
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("exit after a second signal: %v, want status 1", err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("took %v to exit, want well under -shutdown-timeout 30s", took)
		}
		if !strings.Contains(a.logs.String(), "second signal (SIGTERM): exiting now") {
			t.Errorf("no second-signal log line:\n%s", tail(a.logs.String(), 10))
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("agent still draining 10s after the second signal\n%s", tail(a.logs.String(), 10))
	}
}
