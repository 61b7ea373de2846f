package node

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/gossip"
	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/proxy"
)

// TestNodeStopLeavesNoGoroutines runs a clustered node (gossip, raft,
// breakers, admin API) under load — keep-alive clients, requests cut off
// mid-flight, clients that never finish their headers, connections over
// the limit — then stops it and checks that every goroutine it started
// ends: the count returns to what it was before the node existed.
func TestNodeStopLeavesNoGoroutines(t *testing.T) {
	t.Run("http", func(t *testing.T) { testStopLeavesNoGoroutines(t, proxy.ModeHTTP) })
	t.Run("tcp", func(t *testing.T) { testStopLeavesNoGoroutines(t, proxy.ModeTCP) })
}

func testStopLeavesNoGoroutines(t *testing.T, mode string) {
	a := startBackend(t, "a", mode)
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: a.Addr(), Weight: 1})
	cfg.Proxy.Mode = mode
	cfg.Proxy.MaxConns = 20
	cfg.ShutdownTimeout = 500 * time.Millisecond
	g := gossip.DefaultConfig()
	g.Bind = "127.0.0.1:0"
	g.Profile = gossip.ProfileLocal
	cfg.Gossip = g
	cfg.BootstrapExpect = 1
	// The backend serves before the baseline is taken, so its goroutines
	// are in it.
	if c, err := net.DialTimeout("tcp", a.Addr(), 5*time.Second); err != nil {
		t.Fatalf("backend: %v", err)
	} else {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
	before, _ := ownGoroutines()

	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, "the node serving on a committed config", func() bool { return n.store.AppliedIndex() > 0 })

	tr := &http.Transport{MaxIdleConnsPerHost: 10}
	client := &http.Client{Transport: tr}
	// The load runs until after the node has stopped, so the stop happens
	// with requests in flight, pooled connections and refusals under way.
	load, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for load.Err() == nil {
				if mode == proxy.ModeTCP {
					tcpSession(load, n.Addr(), i%4 == 0)
					continue
				}
				if i%4 == 3 {
					// Fresh connections: some land over the limit.
					_, _, _ = rawGet(n.Addr())
					continue
				}
				timeout := 5 * time.Second
				if i%4 == 0 {
					// Abandoned mid-request: the backend is still sleeping.
					timeout = 10 * time.Millisecond
				}
				rctx, rcancel := context.WithTimeout(load, timeout)
				req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+n.Addr()+"/?sleep=30ms", nil)
				if resp, err := client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				rcancel()
			}
		}()
	}
	var slow []net.Conn
	for range 5 {
		slow = append(slow, slowClient(t, n.Addr())) // in tcp mode: idle sessions
	}
	if _, _, err := rawGet(n.AdminAddr()); err != nil {
		t.Fatalf("admin API: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "requests in flight and connections refused", func() bool {
		return n.proxy.InFlight()["a"] > 0 && n.proxy.ConnsRefused() > 0
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	stopLoad()
	wg.Wait()
	tr.CloseIdleConnections()
	for _, c := range slow {
		c.Close()
	}
	var after int
	var stacks string
	deadline := time.Now().Add(10 * time.Second)
	for {
		if after, stacks = ownGoroutines(); after <= before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines (hystrix's own left out) 10s after the node stopped, %d before it started; stacks:\n%s", after, before, stacks)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("goroutines: %d before the node, %d after it stopped (plus hystrix's 2 per circuit ever created: %d now in all)", before, after, runtime.NumGoroutine())
}

// tcpSession sends a line through the tcp proxy and reads the echo, or
// with abandon hangs up without waiting.
func tcpSession(ctx context.Context, addr string, abandon bool) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil || abandon {
		return
	}
	buf := make([]byte, 64)
	_, _ = c.Read(buf)
}

// ownGoroutines counts the goroutines outside hystrix-go, and returns
// their stacks. hystrix starts two monitor goroutines per circuit that it
// has no way to stop (see package breaker), so they outlive any node; the
// breaker package bounds them by config changes, not traffic.
func ownGoroutines() (int, string) {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	var keep []string
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.TrimSpace(g) != "" && !strings.Contains(g, "afex/hystrix-go/") {
			keep = append(keep, g)
		}
	}
	return len(keep), strings.Join(keep, "\n\n")
}
