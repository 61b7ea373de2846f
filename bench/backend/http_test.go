package backend

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

func TestAnswersName(t *testing.T) {
	s := start(t, testConfig())
	c := newClient(t)
	for _, path := range []string{"/", "/any/path?x=1"} {
		a := get(t, c, "http://"+s.Addr()+path)
		if a.status != http.StatusOK || a.body != "b1\n" {
			t.Fatalf("GET %s = %d %q, want 200 %q", path, a.status, a.body, "b1\n")
		}
		if got := a.header.Get("X-Backend"); got != "b1" {
			t.Errorf("X-Backend = %q, want b1", got)
		}
		if got := a.header.Get("Content-Type"); got != "text/plain" {
			t.Errorf("Content-Type = %q, want text/plain", got)
		}
	}
	// A POST body is read and discarded.
	resp, err := c.Post("http://"+s.Addr()+"/", "text/plain", strings.NewReader(strings.Repeat("x", 100_000)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "b1\n" {
		t.Fatalf("POST = %d %q", resp.StatusCode, b)
	}
	if st := s.Stats(); st.Served != 3 || st.Failed != 0 || st.InFlight != 0 {
		t.Errorf("Stats = %+v, want 3 served", st)
	}
}

func TestWorkersQueue(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	cfg.Delay = 50 * time.Millisecond
	s := start(t, cfg)
	c := newClient(t)

	const n = 4
	begin := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			a, err := tryGet(c, "http://"+s.Addr()+"/")
			if err == nil && a.status != http.StatusOK {
				err = fmt.Errorf("status %d", a.status)
			}
			errs <- err
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Four 50ms services one after the other; timers never fire early.
	if elapsed < n*cfg.Delay {
		t.Errorf("%d requests took %s with one worker, want >= %s", n, elapsed, n*cfg.Delay)
	}
	st := s.Stats()
	if st.MaxInFlight != 1 || st.Served != n || st.Queued != 0 || st.InFlight != 0 {
		t.Errorf("Stats = %+v, want MaxInFlight 1 and %d served", st, n)
	}
}

func TestUnlimitedWorkers(t *testing.T) {
	s := start(t, testConfig())
	c := newClient(t)
	const n = 4
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { _, _ = tryGet(c, "http://"+s.Addr()+"/?sleep=10s") })
	}
	testutil.Eventually(t, testTimeout, "all requests in flight at once", func() bool { return s.Stats().InFlight == n })
	if st := s.Stats(); st.Queued != 0 || st.MaxInFlight != n {
		t.Errorf("Stats = %+v", st)
	}
	s.Close() // the clients see their connections die
	wg.Wait()
}

func TestQueuedClientLeaves(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	s := start(t, cfg)
	c := newClient(t)

	holdCtx, releaseHolder := context.WithCancel(context.Background())
	defer releaseHolder()
	holder := make(chan error, 1)
	go func() { holder <- request(holdCtx, c, "http://"+s.Addr()+"/?sleep=1h") }()
	testutil.Eventually(t, testTimeout, "holder in flight", func() bool { return s.Stats().InFlight == 1 })

	leaveCtx, leave := context.WithCancel(context.Background())
	leaver := make(chan error, 1)
	go func() { leaver <- request(leaveCtx, c, "http://"+s.Addr()+"/") }()
	testutil.Eventually(t, testTimeout, "second request queued", func() bool { return s.Stats().Queued == 1 })
	leave()
	<-leaver
	testutil.Eventually(t, testTimeout, "queued request to leave", func() bool {
		st := s.Stats()
		return st.Queued == 0 && st.Canceled == 1
	})

	// The holder goes away too; its slot is freed and a newcomer is served.
	releaseHolder()
	<-holder
	testutil.Eventually(t, testTimeout, "holder to leave", func() bool { return s.Stats().Canceled == 2 })
	if a := get(t, c, "http://"+s.Addr()+"/"); a.status != http.StatusOK {
		t.Fatalf("status %d", a.status)
	}
	if st := s.Stats(); st.Served != 1 || st.InFlight != 0 || st.MaxInFlight != 1 {
		t.Errorf("Stats = %+v, want only the last request served", st)
	}
}

func request(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

func TestFailRate(t *testing.T) {
	tests := []struct {
		rate     float64
		n        int
		min, max int // accepted number of 500s
	}{
		{rate: 0, n: 100, min: 0, max: 0},
		{rate: 1, n: 100, min: 100, max: 100},
		// Binomial(1000, 0.3): mean 300, sd ~14.5; +-75 is over 5 sd.
		{rate: 0.3, n: 1000, min: 225, max: 375},
	}
	for _, tc := range tests {
		t.Run(strconv.FormatFloat(tc.rate, 'g', -1, 64), func(t *testing.T) {
			cfg := testConfig()
			cfg.FailRate = tc.rate
			s := start(t, cfg)
			c := newClient(t)
			var mu sync.Mutex
			fails := 0
			var wg sync.WaitGroup
			const clients = 8
			for i := range clients {
				wg.Go(func() {
					for j := i; j < tc.n; j += clients {
						a, err := tryGet(c, "http://"+s.Addr()+"/")
						if err != nil {
							t.Error(err)
							return
						}
						switch {
						case a.status == http.StatusInternalServerError && a.body == "b1: injected failure\n":
							mu.Lock()
							fails++
							mu.Unlock()
						case a.status == http.StatusOK && a.body == "b1\n":
						default:
							t.Errorf("unexpected answer %d %q", a.status, a.body)
						}
						if a.header.Get("X-Backend") != "b1" {
							t.Errorf("X-Backend missing on %d", a.status)
						}
					}
				})
			}
			wg.Wait()
			if fails < tc.min || fails > tc.max {
				t.Errorf("%d of %d failed at rate %v, want %d..%d", fails, tc.n, tc.rate, tc.min, tc.max)
			}
			if st := s.Stats(); st.Served != int64(tc.n) || st.Failed != int64(fails) {
				t.Errorf("Stats = %+v, want served %d failed %d", st, tc.n, fails)
			}
		})
	}
}

func TestQueryParams(t *testing.T) {
	cfg := testConfig()
	cfg.Delay = time.Hour // every test below overrides it with sleep=
	s := start(t, cfg)
	c := newClient(t)
	base := "http://" + s.Addr() + "/"

	t.Run("sleep", func(t *testing.T) {
		begin := time.Now()
		a := get(t, c, base+"?sleep=60ms")
		if d := time.Since(begin); d < 60*time.Millisecond {
			t.Errorf("sleep=60ms answered after %s", d)
		}
		if a.status != http.StatusOK || a.body != "b1\n" {
			t.Errorf("got %d %q", a.status, a.body)
		}
	})
	t.Run("size", func(t *testing.T) {
		for _, n := range []int{0, 1, 26, 100_000, 3*len(fill) + 7} {
			a := get(t, c, base+"?sleep=0&size="+strconv.Itoa(n))
			if a.status != http.StatusOK || len(a.body) != n {
				t.Fatalf("size=%d: got %d with %d bytes", n, a.status, len(a.body))
			}
			if a.header.Get("Content-Length") != strconv.Itoa(n) {
				t.Errorf("size=%d: Content-Length %q", n, a.header.Get("Content-Length"))
			}
			for i := range n {
				if a.body[i] != FillByte(i) {
					t.Fatalf("size=%d: byte %d is %q, want %q", n, i, a.body[i], FillByte(i))
				}
			}
		}
	})
	t.Run("status", func(t *testing.T) {
		before := s.Stats().Failed
		for _, code := range []int{200, 201, 404, 503} {
			a := get(t, c, base+"?sleep=0s&status="+strconv.Itoa(code))
			if a.status != code || a.body != "b1\n" {
				t.Errorf("status=%d: got %d %q", code, a.status, a.body)
			}
		}
		a := get(t, c, base+"?sleep=0s&status=204")
		if a.status != http.StatusNoContent || a.body != "" {
			t.Errorf("status=204: got %d %q", a.status, a.body)
		}
		if got := s.Stats().Failed - before; got != 1 {
			t.Errorf("Failed grew by %d, want 1 (the 503)", got)
		}
	})
	t.Run("status and size", func(t *testing.T) {
		a := get(t, c, base+"?sleep=0&status=502&size=10")
		if a.status != http.StatusBadGateway || a.body != "abcdefghij" {
			t.Errorf("got %d %q", a.status, a.body)
		}
	})
	t.Run("escaped", func(t *testing.T) {
		a := get(t, c, base+"?sleep=1%6Ds")
		if a.status != http.StatusOK {
			t.Errorf("got %d %q", a.status, a.body)
		}
	})
	t.Run("echo", func(t *testing.T) {
		body := strings.Repeat("hello echo ", 10_000)
		resp, err := c.Post(base+"?sleep=0&echo=1", "application/octet-stream", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != body {
			t.Fatalf("echo: got %d with %d bytes, want %d bytes back", resp.StatusCode, len(b), len(body))
		}
		a := get(t, c, base+"?sleep=0&echo=1")
		if a.status != http.StatusOK || a.body != "" {
			t.Errorf("echo without body: got %d %q", a.status, a.body)
		}
	})
	t.Run("bad", func(t *testing.T) {
		for _, q := range []string{"sleep=abc", "sleep=-1s", "size=-1", "size=x", "status=99", "status=600", "status=abc", "sleep=%zz"} {
			a := get(t, c, base+"?"+q)
			if a.status != http.StatusBadRequest {
				t.Errorf("?%s: got %d %q, want 400", q, a.status, a.body)
			}
		}
	})
}

func TestStatsEndpoint(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	s := start(t, cfg)
	c := newClient(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- request(ctx, c, "http://"+s.Addr()+"/?sleep=1h") }()
	testutil.Eventually(t, testTimeout, "the only worker busy", func() bool { return s.Stats().InFlight == 1 })

	// /_stats does not queue behind the busy worker.
	a := get(t, c, "http://"+s.Addr()+StatsPath)
	if a.status != http.StatusOK || !strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET %s = %d %q", StatsPath, a.status, a.header.Get("Content-Type"))
	}
	var st Stats
	if err := json.Unmarshal([]byte(a.body), &st); err != nil {
		t.Fatalf("decode %q: %v", a.body, err)
	}
	if st.Name != "b1" || st.InFlight != 1 || st.MaxInFlight != 1 {
		t.Errorf("stats = %+v", st)
	}
	cancel()
	<-done
}

// upgraded is a client connection switched to the echo protocol.
type upgraded struct {
	net.Conn
	r *bufio.Reader
}

// upgrade dials addr and switches to echo; extra is sent in the same write
// as the request, before the 101 arrives.
func upgradeWith(t *testing.T, addr, extra string) upgraded {
	t.Helper()
	c := dial(t, addr)
	writeString(t, c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: echo\r\n\r\n"+extra)
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		!strings.EqualFold(resp.Header.Get("Upgrade"), "echo") ||
		!strings.EqualFold(resp.Header.Get("Connection"), "upgrade") {
		t.Fatalf("upgrade answer: %d %v", resp.StatusCode, resp.Header)
	}
	return upgraded{c, r}
}

func upgrade(t *testing.T, addr string) upgraded { return upgradeWith(t, addr, "") }

func readResponse(t *testing.T, c net.Conn, want int) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d", resp.StatusCode, want)
	}
}

func TestUpgradeEcho(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	cfg.Delay = time.Hour // upgrades bypass the queue and the delay
	s := start(t, cfg)

	u := upgradeWith(t, s.Addr(), "early ")
	writeString(t, u, "hello")
	want := "early hello"
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(u.r, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != want {
		t.Fatalf("echo = %q, want %q", buf, want)
	}
	big := strings.Repeat("0123456789", 50_000)
	go func() {
		_, _ = io.WriteString(u, big)
		_ = u.Conn.(*net.TCPConn).CloseWrite()
	}()
	rest, err := io.ReadAll(u.r) // ends when the server closes its side
	if err != nil {
		t.Fatalf("reading echo to EOF: %v", err)
	}
	if string(rest) != big {
		t.Fatalf("echoed %d bytes, want %d", len(rest), len(big))
	}
	if st := s.Stats(); st.Upgrades != 1 || st.Served != 0 || st.InFlight != 0 {
		t.Errorf("Stats = %+v", st)
	}

	// Another Upgrade token is not switched: it is an ordinary request.
	c := dial(t, s.Addr())
	writeString(t, c, "GET /?sleep=0 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	readResponse(t, c, http.StatusOK)
}

func TestShutdownClosesUpgraded(t *testing.T) {
	s, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	u := upgrade(t, s.Addr())
	testutil.Eventually(t, testTimeout, "upgrade counted", func() bool { return s.Stats().Upgrades == 1 })
	cancel()
	expectClosed(t, "upgraded", u.Conn)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Run did not return")
	}
}

func TestServiceTimeWithinJitter(t *testing.T) {
	cfg := testConfig()
	cfg.Delay = 10 * time.Millisecond
	cfg.Jitter = 5 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 10_000 {
		d := s.serviceTime()
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < cfg.Delay || hi > cfg.Delay+cfg.Jitter {
		t.Fatalf("service times in [%s, %s], want within [%s, %s]", lo, hi, cfg.Delay, cfg.Delay+cfg.Jitter)
	}
	if hi-lo < cfg.Jitter/2 {
		t.Errorf("service times in [%s, %s] barely vary", lo, hi)
	}
}
