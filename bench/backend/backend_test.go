package backend

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

// testConfig starts from the defaults, named so answers are easy to check.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Name = "b1"
	return cfg
}

// start creates and runs a backend; cleanup cancels it and checks that Run
// returned nil in time.
func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("Run did not return within %s of cancel", testTimeout)
		}
	})
	return s
}

// newClient returns a keep-alive client whose idle connections are closed
// at cleanup.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func get(t *testing.T, c *http.Client, url string) answer {
	t.Helper()
	a, err := tryGet(c, url)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tryGet(c *http.Client, url string) (answer, error) {
	resp, err := c.Get(url)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{resp.StatusCode, resp.Header, string(b)}, nil
}

func TestValidate(t *testing.T) {
	ok := DefaultConfig()
	if err := ok.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	tcp := DefaultConfig()
	tcp.Mode, tcp.Workers, tcp.Delay, tcp.Jitter, tcp.FailRate, tcp.Listen = ModeTCP, 4, time.Millisecond, time.Millisecond, 1, ":0"
	if err := tcp.Validate(); err != nil {
		t.Fatalf("valid tcp config: %v", err)
	}

	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"empty listen", func(c *Config) { c.Listen = "" }, "-listen"},
		{"listen without port", func(c *Config) { c.Listen = "localhost" }, "-listen"},
		{"listen bad port", func(c *Config) { c.Listen = "127.0.0.1:http" }, "-listen"},
		{"listen port too big", func(c *Config) { c.Listen = "127.0.0.1:70000" }, "-listen"},
		{"negative delay", func(c *Config) { c.Delay = -time.Second }, "-delay"},
		{"negative jitter", func(c *Config) { c.Jitter = -1 }, "-jitter"},
		{"negative workers", func(c *Config) { c.Workers = -1 }, "-workers"},
		{"fail rate above 1", func(c *Config) { c.FailRate = 1.5 }, "-fail-rate"},
		{"fail rate negative", func(c *Config) { c.FailRate = -0.1 }, "-fail-rate"},
		{"fail rate NaN", func(c *Config) { c.FailRate = nan() }, "-fail-rate"},
		{"unknown mode", func(c *Config) { c.Mode = "udp" }, "-mode"},
		{"name with newline", func(c *Config) { c.Name = "a\nb" }, "-name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.modify(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.want)
			}
			if _, err := New(cfg); err == nil {
				t.Fatalf("New accepted an invalid config")
			}
		})
	}

	t.Run("reports every error", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Delay, cfg.Workers = -1, -1
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "-delay") || !strings.Contains(err.Error(), "-workers") {
			t.Fatalf("Validate() = %v, want both -delay and -workers", err)
		}
	})
}

func nan() float64 {
	var zero float64
	return zero / zero
}

func TestNewPortInUse(t *testing.T) {
	s, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg := testConfig()
	cfg.Listen = s.Addr()
	if s2, err := New(cfg); err == nil {
		s2.Close()
		t.Fatalf("New on %s, which is in use, succeeded", cfg.Listen)
	} else if !strings.Contains(err.Error(), s.Addr()) {
		t.Errorf("error %q does not name the address", err)
	}
}

func TestDefaultNameIsAddress(t *testing.T) {
	cfg := DefaultConfig()
	s := start(t, cfg)
	if s.Name() != s.Addr() {
		t.Fatalf("Name() = %q, want the bound address %q", s.Name(), s.Addr())
	}
	a := get(t, newClient(t), "http://"+s.Addr()+"/")
	if a.body != s.Addr()+"\n" {
		t.Fatalf("body = %q, want %q", a.body, s.Addr()+"\n")
	}
}

func TestRunReturnsAfterCancel(t *testing.T) {
	for _, mode := range []string{ModeHTTP, ModeTCP} {
		t.Run(mode, func(t *testing.T) {
			cfg := testConfig()
			cfg.Mode = mode
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			// Serving: a connection succeeds.
			c, err := net.DialTimeout("tcp", s.Addr(), testTimeout)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run = %v, want nil", err)
				}
			case <-time.After(testTimeout):
				t.Fatal("Run did not return after cancel")
			}
			if err := s.Run(context.Background()); err == nil {
				t.Fatal("second Run returned nil, want an error")
			}
			if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
				c.Close()
				t.Fatal("listener still accepts after Run returned")
			}
		})
	}
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	c := newClient(t)
	got := make(chan answer, 2)
	for range 2 { // one served, one queued behind it
		go func() {
			a, err := tryGet(c, "http://"+s.Addr()+"/?sleep=100ms")
			if err != nil {
				a.status = -1
			}
			got <- a
		}()
	}
	testutil.Eventually(t, testTimeout, "one in flight and one queued", func() bool {
		st := s.Stats()
		return st.InFlight == 1 && st.Queued == 1
	})
	cancel()
	for range 2 {
		select {
		case a := <-got:
			if a.status != http.StatusOK || a.body != "b1\n" {
				t.Errorf("answer during shutdown = %d %q, want 200 b1", a.status, a.body)
			}
		case <-time.After(testTimeout):
			t.Fatal("request did not finish during graceful shutdown")
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Run did not return")
	}
}

func TestCloseKillsConnections(t *testing.T) {
	t.Run("http", func(t *testing.T) {
		cfg := testConfig()
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(context.Background()) }()

		// An idle keep-alive connection, an upgraded one and one stuck in
		// a long request.
		idle := dial(t, s.Addr())
		writeString(t, idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		readResponse(t, idle, http.StatusOK)
		up := upgrade(t, s.Addr())
		busy := dial(t, s.Addr())
		writeString(t, busy, "GET /?sleep=1h HTTP/1.1\r\nHost: x\r\n\r\n")
		testutil.Eventually(t, testTimeout, "the long request in flight", func() bool { return s.Stats().InFlight == 1 })

		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for name, c := range map[string]net.Conn{"idle": idle, "upgraded": up.Conn, "busy": busy} {
			expectClosed(t, name, c)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run after Close = %v, want nil", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("Run did not return after Close")
		}
		if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
			c.Close()
			t.Fatal("listener still accepts after Close")
		}
	})
	t.Run("tcp", func(t *testing.T) {
		cfg := testConfig()
		cfg.Mode = ModeTCP
		cfg.Workers = 1
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(context.Background()) }()
		served := dial(t, s.Addr())
		expectRead(t, served, "b1\n")
		queued := dial(t, s.Addr())
		testutil.Eventually(t, testTimeout, "second connection queued", func() bool { return s.Stats().Queued == 1 })
		s.Close()
		expectClosed(t, "served", served)
		expectClosed(t, "queued", queued)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run after Close = %v", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("Run did not return after Close")
		}
	})
	t.Run("before Run", func(t *testing.T) {
		s, err := New(testConfig())
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		s.Close() // idempotent
		errc := make(chan error, 1)
		go func() { errc <- s.Run(context.Background()) }()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Run after Close = %v", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("Run after Close did not return")
		}
	})
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	return c
}

func writeString(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

// expectRead reads exactly len(want) bytes and compares.
func expectRead(t *testing.T, c net.Conn, want string) {
	t.Helper()
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading %q: %v", want, err)
	}
	if string(buf) != want {
		t.Fatalf("read %q, want %q", buf, want)
	}
}

// expectClosed checks that the peer closed c: a read ends with EOF or a
// reset (not a timeout) before the deadline.
func expectClosed(t *testing.T, name string, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s connection still open after %s", name, testTimeout)
	}
}
