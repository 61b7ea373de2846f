package testutil

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// fatalTB records a Fatal and ends its goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

// fails runs fn with a fatalTB on a goroutine of its own and returns the
// message it failed with ("" if it did not).
func fails(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

func TestEventuallyHolds(t *testing.T) {
	n := 0
	took := Eventually(t, 5*time.Second, "third call", func() bool { n++; return n == 3 })
	if n != 3 || took < 2*Interval {
		t.Errorf("cond called %d times in %v, want 3 calls at least %v apart", n, took, Interval)
	}
	if took := Eventually(t, time.Second, "at once", func() error { return nil }); took >= Interval {
		t.Errorf("a cond that holds at once took %v", took)
	}
}

func TestEventuallyFailsNamingWhatAndLastError(t *testing.T) {
	n := 0
	start := time.Now()
	msg := fails(t, func(tb testing.TB) {
		Eventually(tb, 50*time.Millisecond, "the answer", func() error { n++; return fmt.Errorf("attempt %d", n) })
	})
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("gave up after %v, before the deadline", d)
	}
	if want := fmt.Sprintf("the answer: not within 50ms: attempt %d", n); msg != want {
		t.Errorf("message %q, want %q", msg, want)
	}
	msg = fails(t, func(tb testing.TB) {
		Eventually(tb, 20*time.Millisecond, "a flag", func() bool { return false })
	})
	if msg != "a flag: not within 20ms: still false" {
		t.Errorf("message %q", msg)
	}
}

func TestEventuallyEvery(t *testing.T) {
	n := 0
	took := EventuallyEvery(t, 5*time.Second, 50*time.Millisecond, "second call", func() error {
		if n++; n < 2 {
			return errors.New("first call")
		}
		return nil
	})
	if took < 50*time.Millisecond {
		t.Errorf("two calls in %v, want them 50ms apart", took)
	}
}

func TestFreeAddrRefuses(t *testing.T) {
	addr := FreeAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q", addr)
	}
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection", addr)
	}
}

func TestScrapeAndSample(t *testing.T) {
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqs_total", Help: "h"}, []string{"backend", "code"})
	reqs.WithLabelValues("a", "200").Add(3)
	reqs.WithLabelValues("b", "500").Add(2)
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lat_seconds", Help: "h"})
	lat.Observe(0.1)
	lat.Observe(0.2)
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "up", Help: "h"})
	up.Set(1)
	reg.MustRegister(reqs, lat, up)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	fams := Scrape(t, srv.URL+"/metrics")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
		ok     bool
	}{
		{"reqs_total", []string{"backend", "b"}, 2, true},
		{"reqs_total", []string{"backend", "a", "code", "200"}, 3, true},
		{"reqs_total", nil, 3, true}, // the first series
		{"reqs_total", []string{"backend", "c"}, 0, false},
		{"lat_seconds", nil, 2, true},
		{"up", nil, 1, true},
		{"missing", nil, 0, false},
	} {
		if got, ok := Sample(fams, c.name, c.labels...); got != c.want || ok != c.ok {
			t.Errorf("Sample(%s, %v) = %v, %v; want %v, %v", c.name, c.labels, got, ok, c.want, c.ok)
		}
	}

	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "not a metric line {")
	}))
	defer bad.Close()
	if msg := fails(t, func(tb testing.TB) { Scrape(tb, bad.URL) }); !strings.Contains(msg, "does not parse") {
		t.Errorf("a malformed page: %q", msg)
	}
}

func TestSyncBufferWhileWritten(t *testing.T) {
	var b SyncBuffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			fmt.Fprint(&b, "x")
		}
	}()
	for range 100 {
		_ = b.String() // -race checks this against the writes
	}
	<-done
	if got := b.String(); got != strings.Repeat("x", 100) {
		t.Fatalf("String() = %q", got)
	}
}
