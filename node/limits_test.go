package node

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/proxy"
)

// slowClient connects and sends half a request head, then holds the
// connection: the kind of client a header timeout and a connection limit
// exist for.
func slowClient(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawGet sends one complete request on a fresh connection and reads the
// answer.
func rawGet(addr string) (*http.Response, string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// settledGoroutines waits until the goroutine count is at most want, and
// returns it; on timeout it reports the stacks.
func settledGoroutines(t *testing.T, within time.Duration, want int, what string) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return n
		}
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
			t.Fatalf("%s: %d goroutines after %v, want at most %d; stacks:\n%s", what, n, within, want, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMaxConnsRefusesOverLimitClearly fills an HTTP-mode node's
// connection limit with one keep-alive client and slow clients that never
// finish their headers, then opens more: each extra connection gets a 503
// that says why and closes, is counted, and costs no lasting goroutine,
// while the keep-alive client inside the limit keeps being served.
func TestMaxConnsRefusesOverLimitClearly(t *testing.T) {
	const limit, extra = 20, 50
	a := startBackend(t, "a", "http")
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: a.Addr(), Weight: 1})
	cfg.Proxy.MaxConns = limit
	n, _ := startNode(t, cfg)

	keep := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer keep.CloseIdleConnections()
	served := func() {
		t.Helper()
		resp, err := keep.Get("http://" + n.Addr() + "/")
		if err != nil {
			t.Fatalf("client within the limit: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "a" {
			t.Fatalf("client within the limit: %d %q", resp.StatusCode, b)
		}
	}
	served()
	for i := 1; i < limit; i++ {
		slowClient(t, n.Addr())
	}
	testutil.Eventually(t, 5*time.Second, "the limit filled", func() bool { return n.proxy.ConnsOpen() == limit })
	before := runtime.NumGoroutine()

	var wg sync.WaitGroup
	errs := make(chan string, extra)
	for i := 0; i < extra; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, err := rawGet(n.Addr())
			switch {
			case err != nil:
				errs <- err.Error()
			case resp.StatusCode != http.StatusServiceUnavailable || !resp.Close || !strings.Contains(body, "connection limit"):
				errs <- resp.Status + " close=" + strings.ToLower(resp.Header.Get("Connection")) + " " + body
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("over-limit connection: %s; want 503, Connection: close and a body naming the connection limit", e)
	}
	served()
	if got := n.proxy.ConnsRefused(); got != extra {
		t.Errorf("refused %d connections, want %d", got, extra)
	}
	_, metrics := getText(t, "http://"+n.AdminAddr()+"/metrics")
	if !strings.Contains(metrics, "balancer_client_connections_refused_total 50") {
		t.Errorf("metrics do not count the refusals:\n%s", grepLines(metrics, "balancer_client_connections"))
	}
	after := settledGoroutines(t, 5*time.Second, before+2, "after refusing "+itoa(extra)+" connections")
	t.Logf("goroutines with the limit full: %d; after %d refusals: %d", before, extra, after)
}

// TestHeaderTimeoutFreesSlowClients shows the header timeout closing
// clients that never finish their request head, giving their slots back.
func TestHeaderTimeoutFreesSlowClients(t *testing.T) {
	a := startBackend(t, "a", "http")
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: a.Addr(), Weight: 1})
	cfg.Proxy.HeaderTimeout = 200 * time.Millisecond
	cfg.Proxy.MaxConns = 5
	n, _ := startNode(t, cfg)
	var slow []net.Conn
	for range 5 {
		slow = append(slow, slowClient(t, n.Addr()))
	}
	for _, c := range slow {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("slow client not closed by the header timeout: %v", err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "slots given back", func() bool { return n.proxy.ConnsOpen() == 0 })
	if resp, body, err := rawGet(n.Addr()); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the slow clients: %v %v %q", err, resp, body)
	}
}

// TestMaxConnsTCPClosesOverLimit: in TCP mode there is no way to say why,
// so an over-limit connection is closed at once and counted, and the
// connections inside the limit keep working.
func TestMaxConnsTCPClosesOverLimit(t *testing.T) {
	echo := startBackend(t, "e", "tcp")
	cfg := testConfig(t, proxy.Backend{ID: "e", Address: echo.Addr(), Weight: 1})
	cfg.Proxy.Mode = proxy.ModeTCP
	cfg.Proxy.MaxConns = 3
	n, _ := startNode(t, cfg)
	roundTrip := func(c net.Conn, msg string) error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		_, err := io.ReadFull(c, buf)
		if err == nil && string(buf) != msg {
			t.Fatalf("echo %q, want %q", buf, msg)
		}
		return err
	}
	var held []net.Conn
	for i := range 3 {
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The demo backend greets with its name first.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if greet, err := bufio.NewReader(io.LimitReader(c, 2)).ReadString('\n'); err != nil || greet != "e\n" {
			t.Fatalf("connection %d: greeting %q, %v", i, greet, err)
		}
		if err := roundTrip(c, "hello"+itoa(i)); err != nil {
			t.Fatalf("connection %d within the limit: %v", i, err)
		}
		held = append(held, c)
	}
	over, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if k, err := over.Read(make([]byte, 1)); err == nil || k > 0 {
		t.Fatalf("over-limit tcp connection read %d bytes, err %v; want it closed", k, err)
	}
	if got := n.proxy.ConnsRefused(); got != 1 {
		t.Fatalf("refused %d, want 1", got)
	}
	for i, c := range held {
		if err := roundTrip(c, "again"); err != nil {
			t.Fatalf("held connection %d after the refusal: %v", i, err)
		}
	}
}

func getText(t *testing.T, url string) (int, string) {
	t.Helper()
	// No keep-alive: a pooled connection would count as a goroutine left over.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func itoa(i int) string { return strconv.Itoa(i) }
