package proxy

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// logLines hands each log line written to it to a channel, dropping lines
// when nobody is waiting.
type logLines chan string

func (l logLines) Write(p []byte) (int, error) {
	select {
	case l <- string(p):
	default:
	}
	return len(p), nil
}

// Running out of file descriptors fails an accept; ServeTCP must back off
// and keep serving, as http.Server does, not stop for good.
func TestTCPAcceptSurvivesFDExhaustion(t *testing.T) {
	backend := greeter(t, "a")
	lines := make(logLines, 1)
	cfg := DefaultConfig()
	cfg.Mode = ModeTCP
	p, err := New(cfg, nil, slog.New(slog.NewTextHandler(lines, nil)))
	if err != nil {
		t.Fatal(err)
	}
	p.SetRoutes([]Route{route("a", backend)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.ServeTCP(ctx, ln, time.Second) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeTCP: %v", err)
		}
	}()

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Skip(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	var fillers []*os.File
	release := func() {
		for _, f := range fillers {
			f.Close()
		}
		fillers = nil
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	}
	defer release()
	lim := syscall.Rlimit{Cur: uint64(len(fds) + 16), Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skip(err)
	}
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		fillers = append(fillers, f)
	}
	if len(fillers) == 0 {
		t.Skip("no descriptor to free for the client")
	}
	// One descriptor for the client; the proxy's accept finds none.
	fillers[len(fillers)-1].Close()
	fillers = fillers[:len(fillers)-1]
	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	select {
	case line := <-lines:
		if !strings.Contains(line, "accept") {
			t.Fatalf("unexpected log line %q", line)
		}
	case err := <-done:
		done <- nil // for the deferred wait
		t.Fatalf("ServeTCP returned on a failed accept: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no failed accept within 5s")
	}
	release()
	// The first connection may have been refused meanwhile (its backend
	// dial can fail too); one made now must be served.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if greeting, err := bufio.NewReader(c).ReadString('\n'); err != nil || greeting != "a\n" {
		t.Fatalf("connection after the descriptors came back: %q %v", greeting, err)
	}
}

// greeter is a backend that sends its name and closes; its accept loop,
// unlike echoServer's, survives running out of descriptors.
func greeter(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(5 * time.Millisecond) // backoff, as ServeTCP does
				continue
			}
			c.Write([]byte(name + "\n"))
			c.Close()
		}
	}()
	return ln.Addr().String()
}
