package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/proxy"
)

// shortAdminLimits makes the admin bounds short enough to watch them act.
func shortAdminLimits(cfg Config) Config {
	cfg.AdminLimits = AdminLimits{HeaderTimeout: time.Second, BodyTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, MaxConns: 8}
	return cfg
}

// closedWithin reads c until the server closes it and fails the test if
// that takes longer than within. It returns what was read.
func closedWithin(t *testing.T, c net.Conn, r io.Reader, within time.Duration) string {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(within))
	b, err := io.ReadAll(r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("admin connection still open after %v (read %q)", within, b)
	}
	return string(b)
}

func TestAdminCutsOffStalledBody(t *testing.T) {
	n, _ := startNode(t, shortAdminLimits(testConfig(t)))
	c, err := net.DialTimeout("tcp", n.AdminAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 100 bytes announced, one sent.
	if _, err := io.WriteString(c, "PUT /v1/backends/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	got := closedWithin(t, c, c, 3*time.Second)
	if !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("answer to a stalled body: %q, want a 400", got)
	}
}

func TestAdminClosesIdleKeepAlive(t *testing.T) {
	n, _ := startNode(t, shortAdminLimits(testConfig(t)))
	c, err := net.DialTimeout("tcp", n.AdminAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if rest := closedWithin(t, c, br, 3*time.Second); rest != "" {
		t.Errorf("unexpected bytes after the answer: %q", rest)
	}
}

// The bounds must not cut what legitimately takes long: a long poll outlives
// both the body and the idle timeout.
func TestAdminLongPollOutlivesLimits(t *testing.T) {
	// A backend, so that the node commits a seed config to poll after.
	n, _ := startNode(t, shortAdminLimits(testConfig(t, proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1})))
	base := "http://" + n.AdminAddr()
	var cfg struct{ Index uint64 }
	testutil.Eventually(t, 10*time.Second, "a committed config", func() bool {
		getJSON(t, base+"/v1/config", &cfg)
		return cfg.Index > 0
	})
	const wait = 1500 * time.Millisecond
	start := time.Now()
	resp, err := http.Get(base + "/v1/config?wait=" + wait.String() + "&index=" + strconv.FormatUint(cfg.Index, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("long poll: status %d", resp.StatusCode)
	}
	if took := time.Since(start); took < wait-100*time.Millisecond {
		t.Errorf("long poll answered after %v, want about %v: cut short", took, wait)
	}
}

// Once a body has been read, the read deadline must not cut the handler
// short: a write with wait=applied keeps its request's context for as long
// as the wait takes.
func TestAdminReadTimeoutSparesSlowHandlers(t *testing.T) {
	canceled := make(chan bool, 1)
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = newAdminServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			t.Errorf("read body: %v", err)
		}
		select {
		case <-r.Context().Done():
			canceled <- true
		case <-time.After(time.Second):
			canceled <- false
		}
		_ = json.NewEncoder(w).Encode("ok")
	}), AdminLimits{HeaderTimeout: 100 * time.Millisecond, BodyTimeout: 100 * time.Millisecond, IdleTimeout: 100 * time.Millisecond})
	srv.Start()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, srv.URL, strings.NewReader(`{"weight": 1}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if <-canceled {
		t.Error("the request's context ended when the read timeout passed")
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
}
