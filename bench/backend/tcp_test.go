package backend

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

func tcpConfig() Config {
	cfg := testConfig()
	cfg.Mode = ModeTCP
	return cfg
}

func TestTCPGreetsAndEchoes(t *testing.T) {
	cfg := tcpConfig()
	cfg.Delay = 30 * time.Millisecond
	s := start(t, cfg)

	begin := time.Now()
	c := dial(t, s.Addr())
	expectRead(t, c, "b1\n")
	if d := time.Since(begin); d < cfg.Delay {
		t.Errorf("greeting after %s, want >= %s", d, cfg.Delay)
	}
	writeString(t, c, "ping")
	expectRead(t, c, "ping")

	// Half-close: everything sent is echoed, then the server closes its
	// side (EOF, not a reset).
	big := strings.Repeat("abc", 200_000)
	go func() {
		_, _ = io.WriteString(c, big)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	rest, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading to EOF after half-close: %v", err)
	}
	if string(rest) != big {
		t.Fatalf("echoed %d bytes, want %d", len(rest), len(big))
	}
	testutil.Eventually(t, testTimeout, "connection counted as served", func() bool {
		st := s.Stats()
		return st.Served == 1 && st.InFlight == 0
	})
}

func TestTCPWorkers(t *testing.T) {
	cfg := tcpConfig()
	cfg.Workers = 1
	s := start(t, cfg)

	first := dial(t, s.Addr())
	expectRead(t, first, "b1\n")
	second := dial(t, s.Addr())
	testutil.Eventually(t, testTimeout, "second connection queued", func() bool { return s.Stats().Queued == 1 })
	// The second gets its greeting only once the first is done.
	_ = first.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadAll(first); err != nil {
		t.Fatal(err)
	}
	expectRead(t, second, "b1\n")
	if st := s.Stats(); st.MaxInFlight != 1 {
		t.Errorf("MaxInFlight = %d, want 1", st.MaxInFlight)
	}
}

func TestTCPFailRate(t *testing.T) {
	cfg := tcpConfig()
	cfg.FailRate = 1
	s := start(t, cfg)
	c := dial(t, s.Addr())
	b, err := io.ReadAll(c)
	if err != nil || len(b) != 0 {
		t.Fatalf("failed connection read %q, %v; want a close without greeting", b, err)
	}
	testutil.Eventually(t, testTimeout, "failure counted", func() bool { return s.Stats().Failed == 1 })
}
