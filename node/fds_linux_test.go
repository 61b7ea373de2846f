package node

import (
	"io"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/proxy"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // ReadDir's own descriptor
}

// TestFDsReturnToBaselineAfterSpike sends a burst of concurrent requests,
// each on its own client connection, through a node to a backend, and
// checks that once the clients are gone the process's descriptors come
// back to where they were: client connections close, and the backend
// connections the spike left pooled expire on the node's own tick without
// any further request.
func TestFDsReturnToBaselineAfterSpike(t *testing.T) {
	const burst = 200
	a := startBackend(t, "a", "http")
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: a.Addr(), Weight: 1})
	cfg.Proxy.BackendIdleTimeout = 300 * time.Millisecond
	n, _ := startNode(t, cfg)
	url := "http://" + n.Addr() + "/?sleep=20ms"
	if resp, body, err := rawGet(n.Addr()); err != nil || resp.StatusCode != 200 {
		t.Fatalf("warm-up: %v %v %q", err, resp, body)
	}
	// The warm-up's pooled backend connection expires too: wait for the
	// steady state before taking the baseline.
	var base int
	testutil.Eventually(t, 5*time.Second, "a steady descriptor count", func() bool {
		b := openFDs(t)
		time.Sleep(400 * time.Millisecond)
		base = openFDs(t)
		return b == base
	})

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0}}
	var wg sync.WaitGroup
	start := make(chan struct{})
	var mu sync.Mutex
	var failed []string
	for range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Get(url)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = &statusError{resp.StatusCode}
				}
			}
			if err != nil {
				mu.Lock()
				failed = append(failed, err.Error())
				mu.Unlock()
			}
		}()
	}
	peak := base
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := openFDs(t); n > peak {
				peak = n
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	close(start)
	wg.Wait()
	close(stop)
	<-sampled
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(failed), burst, failed[0])
	}
	client.CloseIdleConnections()
	var after int
	testutil.Eventually(t, 10*time.Second, "descriptors back to the baseline", func() bool {
		after = openFDs(t)
		return after <= base
	})
	t.Logf("descriptors: baseline %d, peak %d during %d concurrent requests, %d after", base, peak, burst, after)
	if peak < base+burst/2 {
		t.Errorf("peak %d barely above baseline %d: the burst did not run concurrently", peak, base)
	}
}

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }
