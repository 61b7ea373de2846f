package breaker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// testConfig starts from the defaults and shrinks the timers.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.MinRequests = 10
	cfg.SleepWindow = 100 * time.Millisecond
	cfg.FlushInterval = 5 * time.Millisecond
	return cfg
}

// within bounds every wait in these tests.
const within = 5 * time.Second

type change struct {
	backend  string
	from, to State
}

func (c change) String() string { return fmt.Sprintf("%s %v->%v", c.backend, c.from, c.to) }

// recorder collects onChange calls.
type recorder struct {
	mu      sync.Mutex
	changes []change // guarded by mu
}

func (r *recorder) list() []change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]change(nil), r.changes...)
}

func (r *recorder) has(want change) bool {
	for _, c := range r.list() {
		if c == want {
			return true
		}
	}
	return false
}

// of returns the changes of one backend, in order.
func (r *recorder) of(backend string) []change {
	var out []change
	for _, c := range r.list() {
		if c.backend == backend {
			out = append(out, c)
		}
	}
	return out
}

// startSet makes a Set and runs its flusher until the test ends.
func startSet(t *testing.T, node string, cfg Config) (*Set, *recorder) {
	t.Helper()
	rec := &recorder{}
	var s *Set
	s, err := NewSet(node, cfg, func(backend string, from, to State) {
		// Proves no lock is held that the Set or its circuits need.
		_ = s.States()
		s.Remove("no such backend") // takes the Set's mutex
		_ = s.States()[backend]
		rec.mu.Lock()
		rec.changes = append(rec.changes, change{backend, from, to})
		rec.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s, rec
}

// fail sends failing requests through c until it opens.
func fail(t *testing.T, c *Circuit) {
	t.Helper()
	testutil.Eventually(t, within, c.backend+" to open", func() bool {
		for range 5 {
			if ok, _ := c.Allow(); ok {
				c.Done(false, false)
			}
		}
		return c.State() == Open
	})
}

// trial waits for c to turn half-open and takes its trial.
func trial(t *testing.T, c *Circuit) {
	t.Helper()
	testutil.Eventually(t, within, c.backend+" to turn half-open", func() bool { return c.State() == HalfOpen })
	if ok, tr := c.Allow(); !ok || !tr {
		t.Fatalf("Allow on a fresh half-open circuit = %v, %v; want the trial", ok, tr)
	}
}

func TestClosedAllows(t *testing.T) {
	s, _ := startSet(t, "n1", testConfig())
	c := s.Circuit("b1")
	if c.Backend() != "b1" || c.State() != Closed {
		t.Fatalf("new circuit: backend %q state %v", c.Backend(), c.State())
	}
	for range 100 {
		ok, tr := c.Allow()
		if !ok || tr {
			t.Fatalf("Allow on closed = %v, %v; want true, false", ok, tr)
		}
		c.Done(false, true)
	}
	if c2 := s.Circuit("b1"); c2 != c {
		t.Fatal("Circuit returned a second circuit for the same backend")
	}
	if got := s.States(); len(got) != 1 || got["b1"] != Closed {
		t.Fatalf("States() = %v", got)
	}
}

func TestFailuresOpen(t *testing.T) {
	s, rec := startSet(t, "n1", testConfig())
	c := s.Circuit("b1")
	fail(t, c)
	if ok, tr := c.Allow(); ok || tr {
		t.Fatalf("Allow on open = %v, %v; want false, false", ok, tr)
	}
	want := change{"b1", Closed, Open}
	testutil.Eventually(t, within, "onChange "+want.String(), func() bool { return rec.has(want) })
	if got := s.States()["b1"]; got != Open {
		t.Fatalf("States()[b1] = %v, want open", got)
	}
}

func TestFewFailuresStayClosed(t *testing.T) {
	s, rec := startSet(t, "n1", testConfig())
	mixed, probe := s.Circuit("mixed"), s.Circuit("probe")
	// 40% errors, under the 50% threshold, in rounds that each fit in one
	// flush's event budget so that none is scaled.
	for range 30 {
		for i := range 10 {
			mixed.Allow()
			mixed.Done(false, i%5 >= 2)
		}
		testutil.Eventually(t, within, "the flusher to take the round", func() bool {
			return mixed.successes.Load()+mixed.failures.Load() == 0
		})
	}
	// The probe opens only after hystrix has digested its failures, which
	// takes the same flushes and the same kind of metrics goroutine as the
	// mixed circuit's last round: once it is open, mixed had its chance.
	fail(t, probe)
	fail(t, probe) // and then some more flushes
	testutil.Eventually(t, within, "probe's onChange", func() bool { return rec.has(change{"probe", Closed, Open}) })
	if st := mixed.State(); st != Closed {
		t.Fatalf("40%% errors opened the circuit: %v", st)
	}
	if got := rec.of("mixed"); len(got) != 0 {
		t.Fatalf("onChange for mixed: %v", got)
	}
}

func TestHalfOpenSingleTrialThenClose(t *testing.T) {
	cfg := testConfig()
	s, rec := startSet(t, "n1", cfg)
	c := s.Circuit("b1")
	fail(t, c)
	opened := time.Now()
	testutil.Eventually(t, within, "half-open", func() bool { return c.State() == HalfOpen })
	if d := time.Since(opened); d < cfg.SleepWindow/2 {
		// opened is taken after the trip, so allow for flush lag on both sides.
		t.Fatalf("half-open after %v, sleep window %v", d, cfg.SleepWindow)
	}

	const callers = 64
	var (
		wg          sync.WaitGroup
		start       = make(chan struct{})
		mu          sync.Mutex
		oks, trials int
	)
	for range callers {
		wg.Go(func() {
			<-start
			ok, tr := c.Allow()
			mu.Lock()
			defer mu.Unlock()
			if ok {
				oks++
			}
			if tr {
				trials++
			}
		})
	}
	close(start)
	wg.Wait()
	if oks != 1 || trials != 1 {
		t.Fatalf("%d concurrent Allow on half-open: %d ok, %d trials; want 1, 1", callers, oks, trials)
	}

	c.Done(true, true)
	if st := c.State(); st != Closed {
		t.Fatalf("after a successful trial: %v, want closed at once", st)
	}
	testutil.Eventually(t, within, "onChange half-open->closed", func() bool { return rec.has(change{"b1", HalfOpen, Closed}) })
	want := []change{{"b1", Closed, Open}, {"b1", Open, HalfOpen}, {"b1", HalfOpen, Closed}}
	if got := rec.of("b1"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("onChange calls %v, want %v", got, want)
	}

	// Traffic flows, and hystrix's metrics were reset: a healthy stream
	// doesn't trip on the failures of the previous episode.
	for range 50 {
		ok, tr := c.Allow()
		if !ok || tr {
			t.Fatalf("Allow after close = %v, %v", ok, tr)
		}
		c.Done(false, true)
	}
	testutil.Eventually(t, within, "the flusher to take the successes", func() bool {
		return c.successes.Load() == 0
	})
	fail(t, s.Circuit("probe"))
	if st := c.State(); st != Closed {
		t.Fatalf("closed circuit reopened on successes: %v", st)
	}
}

func TestTrialFailureReopens(t *testing.T) {
	cfg := testConfig()
	s, rec := startSet(t, "n1", cfg)
	c := s.Circuit("b1")
	fail(t, c)
	trial(t, c)
	if ok, _ := c.Allow(); ok {
		t.Fatal("a second request was allowed while the trial is out")
	}
	reopened := time.Now()
	c.Done(true, false)
	if st := c.State(); st != Open {
		t.Fatalf("after a failed trial: %v, want open at once", st)
	}
	trial(t, c)
	if d := time.Since(reopened); d < cfg.SleepWindow {
		t.Fatalf("next trial %v after the failed one, want >= %v", d, cfg.SleepWindow)
	}
	c.Done(true, true)
	testutil.Eventually(t, within, "closed", func() bool { return rec.has(change{"b1", HalfOpen, Closed}) })
	want := []change{
		{"b1", Closed, Open}, {"b1", Open, HalfOpen},
		{"b1", HalfOpen, Open}, {"b1", Open, HalfOpen}, {"b1", HalfOpen, Closed},
	}
	if got := rec.of("b1"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("onChange calls %v, want %v", got, want)
	}
}

func TestCancelledTrialReopens(t *testing.T) {
	cfg := testConfig()
	s, _ := startSet(t, "n1", cfg)
	c := s.Circuit("b1")
	fail(t, c)
	trial(t, c)
	reopened := time.Now()
	c.Cancel(true)
	if st := c.State(); st != Open {
		t.Fatalf("after a cancelled trial: %v, want open", st)
	}
	trial(t, c)
	if d := time.Since(reopened); d < cfg.SleepWindow {
		t.Fatalf("next trial %v after the cancelled one, want >= %v", d, cfg.SleepWindow)
	}
	c.Done(true, true)
	if st := c.State(); st != Closed {
		t.Fatalf("after a successful trial: %v", st)
	}
}

func TestCancelCountsNothing(t *testing.T) {
	s, err := NewSet("n1", testConfig(), nil) // no Run: nothing is flushed
	if err != nil {
		t.Fatal(err)
	}
	c := s.Circuit("b1")
	for range 100 {
		c.Allow()
		c.Cancel(false)
	}
	if n := c.successes.Load() + c.failures.Load(); n != 0 {
		t.Fatalf("Cancel counted %d outcomes", n)
	}
	// A stray trial result on a closed circuit changes nothing.
	c.Done(true, false)
	c.Cancel(true)
	if st := c.State(); st != Closed {
		t.Fatalf("stray trial result moved a closed circuit to %v", st)
	}
}

func TestSetsDoNotShare(t *testing.T) {
	s1, _ := startSet(t, "n1", testConfig())
	s2, rec2 := startSet(t, "n1", testConfig())
	c1, c2 := s1.Circuit("b1"), s2.Circuit("b1")
	if c1.name == c2.name || c1.cb == c2.cb {
		t.Fatalf("two sets share hystrix circuit %q", c1.name)
	}
	fail(t, c1)
	fail(t, s2.Circuit("probe"))
	if st := c2.State(); st != Closed {
		t.Fatalf("the other set's circuit is %v", st)
	}
	if c2.cb.IsOpen() {
		t.Fatal("the other set's hystrix circuit is open")
	}
	if got := rec2.of("b1"); len(got) != 0 {
		t.Fatalf("the other set was told %v", got)
	}

	// Removing and re-adding a backend starts afresh, with its own hystrix circuit.
	s1.Remove("b1")
	if _, ok := s1.States()["b1"]; ok {
		t.Fatal("removed backend still listed")
	}
	c3 := s1.Circuit("b1")
	if c3 == c1 || c3.name == c1.name || c3.State() != Closed || c3.cb.IsOpen() {
		t.Fatalf("re-added backend: same=%v name %q state %v", c3 == c1, c3.name, c3.State())
	}
}

func TestRunTwice(t *testing.T) {
	s, _ := startSet(t, "n1", testConfig())
	testutil.Eventually(t, within, "Run to start", s.running.Load)
	if err := s.Run(context.Background()); err == nil {
		t.Fatal("second Run returned nil")
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("testConfig: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		flag string
	}{
		{"error percent zero", func(c *Config) { c.ErrorPercent = 0 }, "-breaker-error-percent"},
		{"error percent over 100", func(c *Config) { c.ErrorPercent = 101 }, "-breaker-error-percent"},
		{"min requests zero", func(c *Config) { c.MinRequests = 0 }, "-breaker-min-requests"},
		{"min requests unreachable", func(c *Config) { c.MinRequests = maxMinRequests + 1 }, "-breaker-min-requests"},
		{"sleep zero", func(c *Config) { c.SleepWindow = 0 }, "-breaker-sleep"},
		{"sleep under 10ms", func(c *Config) { c.SleepWindow = 9 * time.Millisecond }, "-breaker-sleep"},
		{"flush zero", func(c *Config) { c.FlushInterval = 0 }, "flush interval"},
		{"flush over 1s", func(c *Config) { c.FlushInterval = 2 * time.Second }, "flush interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.flag) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.flag)
			}
			if _, err := NewSet("n1", cfg, nil); err == nil {
				t.Fatal("NewSet accepted an invalid config")
			}
		})
	}
	if _, err := NewSet("", DefaultConfig(), nil); err == nil {
		t.Fatal("NewSet accepted an empty node name")
	}
}

func TestScaleKeepsRatio(t *testing.T) {
	tests := []struct {
		name            string
		fail, n, budget int64
	}{
		{"30% into 2", 3, 10, 2},
		{"1 in 10000 into 100", 1, 10000, 100},
		{"all fail", 500, 500, 7},
		{"none fail", 0, 900, 100},
		{"2/3 into 100", 2000, 3000, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const flushes = 1000
			var carry float64
			var total int64
			for range flushes {
				var f int64
				f, carry = scale(tt.fail, tt.n, tt.budget, carry)
				if f < 0 || f > tt.budget {
					t.Fatalf("scale gave %d failures of %d", f, tt.budget)
				}
				total += f
			}
			want := float64(tt.fail) / float64(tt.n) * float64(tt.budget) * flushes
			if d := float64(total) - want; d < -1 || d > 1 {
				t.Fatalf("reported %d failures over %d flushes, want %.0f", total, flushes, want)
			}
		})
	}
}

func TestPerFlushBudget(t *testing.T) {
	for _, tt := range []struct {
		every time.Duration
		want  int64
	}{
		{time.Millisecond, 2},
		{50 * time.Millisecond, 100},
		{time.Second, maxPerFlush},
	} {
		cfg := DefaultConfig()
		cfg.FlushInterval = tt.every
		if got := cfg.perFlush(); got != tt.want {
			t.Errorf("perFlush at %v = %d, want %d", tt.every, got, tt.want)
		}
	}
}

func TestClosedPathDoesNotAllocate(t *testing.T) {
	s, _ := startSet(t, "n1", testConfig())
	c := s.Circuit("b1")
	allocs := testing.AllocsPerRun(1000, func() {
		ok, tr := c.Allow()
		if ok {
			c.Done(tr, true)
		}
	})
	if allocs != 0 {
		t.Fatalf("Allow+Done allocates %v times per call", allocs)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Closed: "closed", Open: "open", HalfOpen: "half-open", 9: "State(9)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", uint8(s), got, want)
		}
	}
}
