package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/proxy/pick"
)

// echoServer greets with its name, echoes, and half-closes after the client does.
func echoServer(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, name+"\n")
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

func startTCP(t *testing.T, cfg Config, routes []Route) (*Proxy, string) {
	t.Helper()
	cfg.Mode = ModeTCP
	p, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.SetRoutes(routes)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.ServeTCP(ctx, ln, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeTCP: %v", err)
		}
	})
	return p, ln.Addr().String()
}

func TestTCPEchoHalfCloseAndBalance(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Algorithm = pick.RoundRobin
	p, addr := startTCP(t, cfg, []Route{route("a", echoServer(t, "a")), route("b", echoServer(t, "b")), route("dead", testutil.FreeAddr(t))})
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "hello")
		c.(*net.TCPConn).CloseWrite() // half-close: the echo must still come back
		all, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		rest := string(all)
		if len(rest) < 2 || rest[len(rest)-5:] != "hello" {
			t.Fatalf("connection %d got %q, want greeting then echo", i, rest)
		}
		seen[rest[:1]]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("connections per backend %v, want 5/5 (dead one retried)", seen)
	}
	testutil.Eventually(t, 2*time.Second, "in-flight 0", func() bool { return totalInFlight(p) == 0 })
}

func TestTCPIdleTimeoutAndCounts(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IdleTimeout = 150 * time.Millisecond
	p, addr := startTCP(t, cfg, []Route{route("a", echoServer(t, "a"))})
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		bufio.NewReader(c).ReadString('\n')
	}
	if n := totalInFlight(p); n != 3 {
		t.Fatalf("in-flight %d with 3 open connections", n)
	}
	// An active connection outlives the idle timeout; idle ones are closed.
	active := conns[0]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1)
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			io.WriteString(active, "x")
			active.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := active.Read(buf); err != nil {
				t.Errorf("active connection closed by the idle timeout: %v", err)
				return
			}
		}
	}()
	testutil.Eventually(t, 3*time.Second, "idle connections closed", func() bool { return totalInFlight(p) == 1 })
	close(stop)
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	testutil.Eventually(t, 3*time.Second, "in-flight 0", func() bool { return totalInFlight(p) == 0 })
}

func TestTCPNoBackendClosesConnection(t *testing.T) {
	p, addr := startTCP(t, DefaultConfig(), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("want the connection closed, got %d bytes, %v", n, err)
	}
	testutil.Eventually(t, time.Second, "rejection counted", func() bool { return p.Rejected() == 1 })
}

// A client that half-closes and then stops reading while the backend keeps
// writing is cut off after IdleTimeout: a write the client does not take
// counts as idle time.
func TestTCPHalfClosedNonReaderTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	cfg := DefaultConfig()
	cfg.IdleTimeout = 200 * time.Millisecond
	p, addr := startTCP(t, cfg, []Route{route("a", ln.Addr().String())})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).CloseWrite()
	testutil.Eventually(t, 2*time.Second, "the connection in flight", func() bool { return totalInFlight(p) == 1 })
	testutil.Eventually(t, 3*time.Second, "the non-reading client cut off", func() bool { return totalInFlight(p) == 0 })
}

// A forced shutdown closes the backend side too: a copy blocked on a
// backend that stopped reading must not hold ServeTCP past its grace.
func TestTCPForcedShutdownClosesBackendSide(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var held []net.Conn // accepted, never read
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	cfg := DefaultConfig()
	cfg.Mode = ModeTCP
	cfg.IdleTimeout = time.Minute
	p, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.SetRoutes([]Route{route("a", ln.Addr().String())})
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const grace = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- p.ServeTCP(ctx, pl, grace) }()
	c, err := net.Dial("tcp", pl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Write until the pipe is full: the proxy is then blocked writing to
	// the backend.
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("the pipe to a non-reading backend never filled")
		}
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Write(buf); err != nil {
			break
		}
	}
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeTCP: %v", err)
		}
		if d := time.Since(start); d > grace+time.Second {
			t.Errorf("ServeTCP returned %v after the shutdown began, grace %v", d, grace)
		}
	case <-time.After(grace + 5*time.Second):
		t.Fatalf("ServeTCP still running %v after the shutdown began (grace %v)", grace+5*time.Second, grace)
	}
}
