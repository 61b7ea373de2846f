package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// requestTimeout bounds one request of the load generator, queueing included.
const requestTimeout = 30 * time.Second

// target is one place the load generator sends requests to: a balancer
// node's traffic listener, a backend, or HAProxy. Each has its own
// keep-alive client so its connections are reused.
type target struct {
	base   string // http://HOST:PORT
	client *http.Client
}

func newTarget(addr string, conns int) *target {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns + 16,
		MaxIdleConnsPerHost: conns + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &target{base: "http://" + addr, client: &http.Client{Transport: tr, Timeout: requestTimeout}}
}

func (t *target) close() { t.client.CloseIdleConnections() }

// loadSpec is one run of the load generator.
type loadSpec struct {
	// targets and weights: closed-loop clients and open-loop requests are
	// spread over targets in proportion to weights (clients stay on their
	// target). With roundRobin, every request goes to the next target in
	// turn instead (the direct baseline).
	targets    []*target
	weights    []float64
	roundRobin bool

	concurrency int     // closed loop: clients
	rate        float64 // open loop: requests/s over all targets; > 0 selects open loop

	warmup, duration time.Duration
	// sleepMin..sleepMax, when sleepMax > 0: each request asks its backend
	// to hold it this long, drawn from a sequence fixed by seed, so every
	// run sees the same sequence.
	sleepMin, sleepMax time.Duration
	seed               uint64

	// onMeasure runs when the measured window starts (after warmup), with
	// its start time.
	onMeasure func(start time.Time)
	// publish, when set, receives the recorder as soon as it exists.
	publish func(*recorder)
}

// recorder collects the measured requests of one run. Safe for concurrent use.
type recorder struct {
	measureStart, measureEnd time.Time

	mu         sync.Mutex
	samples    []time.Duration // guarded by mu
	byBackend  map[string]int  // guarded by mu; X-Backend of good answers
	errKinds   map[string]int  // guarded by mu
	examples   []string        // guarded by mu; the first error of each kind
	inWindow   int             // guarded by mu; successes completed inside the window
	errorCount int             // guarded by mu
	done       atomic.Int64    // every completed request, warmup included (progress)
	errs       atomic.Int64    // every failed request (progress)
}

func newRecorder(start, end time.Time) *recorder {
	return &recorder{measureStart: start, measureEnd: end, byBackend: map[string]int{}, errKinds: map[string]int{}}
}

// record notes one request that was due (open loop: scheduled; closed
// loop: sent) at due and completed at end.
func (r *recorder) record(due, end time.Time, backend string, err error) {
	r.done.Add(1)
	if err != nil {
		r.errs.Add(1)
	}
	if due.Before(r.measureStart) || !due.Before(r.measureEnd) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errorCount++
		k := errKind(err)
		if r.errKinds[k] == 0 {
			r.examples = append(r.examples, err.Error())
		}
		r.errKinds[k]++
		return
	}
	if !end.After(r.measureEnd) {
		r.inWindow++
	}
	r.samples = append(r.samples, end.Sub(due))
	r.byBackend[backend]++
}

// statusError is an answer with a 5xx status and the start of its body.
type statusError struct {
	code int
	body string
}

func (e statusError) Error() string {
	return strconv.Itoa(e.code) + " " + http.StatusText(e.code) + ": " + e.body
}

// errKind names an error for the error breakdown: the status, or a short
// class of transport error.
func errKind(err error) string {
	var se statusError
	switch {
	case errors.As(err, &se):
		return strconv.Itoa(se.code)
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(err.Error(), "Client.Timeout"):
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	case strings.Contains(err.Error(), "reset by peer"), strings.Contains(err.Error(), "EOF"):
		return "connection reset"
	}
	return "other"
}

// sleepFor returns the ?sleep= value of request (stream, n) of the run.
func (s *loadSpec) sleepFor(stream, n uint64) time.Duration {
	if s.sleepMax <= 0 {
		return 0
	}
	r := rand.New(rand.NewPCG(s.seed^stream*0x9e3779b97f4a7c15, n))
	span := int64(s.sleepMax - s.sleepMin)
	return s.sleepMin + time.Duration(r.Int64N(span+1)).Round(time.Millisecond)
}

// do sends one GET to t and reads the answer to the end.
func do(ctx context.Context, t *target, sleep time.Duration) (backend string, err error) {
	u := t.base + "/"
	if sleep > 0 {
		u += "?sleep=" + sleep.String()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return "", err
	}
	if resp.StatusCode >= 400 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return "", statusError{resp.StatusCode, strings.TrimSpace(string(b))}
		}
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	return resp.Header.Get("X-Backend"), nil
}

// runLoad drives the load of spec and returns its recorder once every
// request sent in the window has completed (or ctx ended).
func runLoad(ctx context.Context, spec *loadSpec) *recorder {
	start := time.Now()
	mStart := start.Add(spec.warmup)
	rec := newRecorder(mStart, mStart.Add(spec.duration))
	if spec.publish != nil {
		spec.publish(rec)
	}
	var wg sync.WaitGroup
	if spec.onMeasure != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(time.Until(mStart))
			defer t.Stop()
			select {
			case <-t.C:
				spec.onMeasure(mStart)
			case <-ctx.Done():
			}
		}()
	}
	var rr atomic.Uint64
	pickRR := func() *target { return spec.targets[(rr.Add(1)-1)%uint64(len(spec.targets))] }
	if spec.rate > 0 {
		openLoop(ctx, spec, rec, start, &wg, pickRR)
	} else {
		perTarget := Spread(spec.concurrency, spec.weights)
		client := 0
		for ti, n := range perTarget {
			for range n {
				wg.Add(1)
				go func(c uint64, t *target) {
					defer wg.Done()
					closedLoopClient(ctx, spec, rec, c, t, pickRR)
				}(uint64(client), spec.targets[ti])
				client++
			}
		}
	}
	wg.Wait()
	return rec
}

func closedLoopClient(ctx context.Context, spec *loadSpec, rec *recorder, c uint64, t *target, pickRR func() *target) {
	for n := uint64(0); ; n++ {
		now := time.Now()
		if ctx.Err() != nil || !now.Before(rec.measureEnd) {
			return
		}
		tt := t
		if spec.roundRobin {
			tt = pickRR()
		}
		b, err := do(ctx, tt, spec.sleepFor(c, n))
		rec.record(now, time.Now(), b, err)
		if err != nil {
			// A refused connection fails in microseconds; do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(time.Millisecond):
			}
		}
	}
}

// openLoop sends request i at start + i/rate whether or not earlier ones
// have completed, and measures each from that scheduled time: a stalled
// target shows its full queueing delay (no coordinated omission).
func openLoop(ctx context.Context, spec *loadSpec, rec *recorder, start time.Time, wg *sync.WaitGroup, pickRR func() *target) {
	// Requests go to targets by smooth weighted round robin over weights.
	cur := make([]float64, len(spec.targets))
	var total float64
	for _, w := range spec.weights {
		total += w
	}
	next := func() *target {
		if spec.roundRobin {
			return pickRR()
		}
		best := 0
		for i, w := range spec.weights {
			cur[i] += w
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		return spec.targets[best]
	}
	maxOutstanding := max(1024, int(spec.rate*4))
	sem := make(chan struct{}, maxOutstanding)
	interval := float64(time.Second) / spec.rate
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i := uint64(0); ; i++ {
		due := start.Add(time.Duration(float64(i) * interval))
		if !due.Before(rec.measureEnd) {
			return
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		t := next()
		wg.Add(1)
		go func(i uint64) {
			defer wg.Done()
			defer func() { <-sem }()
			b, err := do(ctx, t, spec.sleepFor(0, i))
			rec.record(due, time.Now(), b, err)
		}(i)
	}
}
