// Package breaker owns the circuit breakers of one node: one circuit per
// backend, each deciding whether the proxy may send that backend a request,
// and the open/close events that the node gossips to its peers. It is the only
// package that imports github.com/afex/hystrix-go; it imports nothing else
// outside the standard library, and never proxy, gossip or consensus.
//
// # Why not hystrix.Do
//
// hystrix.Do starts two goroutines and makes about 22 allocations per call
// (5-7 µs), and one metrics goroutine per command serialises it. A proxy
// cannot pay that per request. So the request path never calls hystrix:
//
//   - Each Circuit keeps its own state (closed, open, half-open) in one atomic
//     word. Allow on a closed circuit is a single atomic load; Done on a normal
//     request is a single atomic add. Neither allocates.
//   - A flusher (Set.Run) hands the batched outcomes to hystrix every
//     FlushInterval through ReportEvent, then asks IsOpen, which is where
//     hystrix decides to trip. The error percentage, volume threshold and
//     10-second rolling window are still hystrix's.
//   - Half-open uses hystrix's own gate (AllowRequest, one caller per sleep
//     window), and the trial's result goes to hystrix synchronously, so a
//     successful trial closes the hystrix circuit and resets its metrics.
//
// hystrix processes reported events on a goroutine of its own, so a trip is
// usually seen one or two flushes after the failures were reported, and the
// state changes at most every FlushInterval. That lag is the price of keeping
// hystrix off the request path.
//
// # hystrix's global registry
//
// hystrix keeps circuits and settings in process-wide maps. Every circuit name
// here is node/backend#suffix-n, where suffix is random per Set and n counts
// the circuits the Set created, so two nodes in one test process, a node
// restarted in the same process, and a backend removed and added again never
// share a hystrix circuit. hystrix has no way to delete a circuit (Flush is
// process-wide and leaks goroutines), so each created circuit keeps two idle
// goroutines and a few KB until the process exits: churn is bounded by config
// changes, not traffic.
package breaker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/afex/hystrix-go/hystrix"
)

// State is the state of a circuit.
type State uint8

// The states of a circuit. Half-open means the sleep window after opening has
// passed and a single trial request may go to the backend.
const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Config tunes every circuit of a Set.
type Config struct {
	// ErrorPercent is the share of failed requests, over hystrix's 10-second
	// rolling window, at which a circuit opens (1..100).
	ErrorPercent int
	// MinRequests is the number of requests the window must hold before the
	// error share counts at all (hystrix's RequestVolumeThreshold).
	MinRequests int
	// SleepWindow is how long a circuit stays open before it lets one trial
	// request through.
	SleepWindow time.Duration
	// FlushInterval is how often outcomes go to hystrix and states are
	// re-evaluated. It bounds how late a trip and a half-open are noticed.
	FlushInterval time.Duration
	// ConsecutiveFailures opens a circuit after this many failures in a row
	// with no success between them, whatever the window holds (Envoy's
	// consecutive-failure outlier detection); 0 turns it off. The volume
	// rule alone can leave a dead backend's circuit closed for long: a
	// balancer that steers away from a failing backend (p2c, retries on
	// another one) gives it too few requests to reach MinRequests.
	ConsecutiveFailures int
}

// DefaultConfig returns hystrix's own defaults and a 50ms flush interval.
func DefaultConfig() Config {
	return Config{
		ErrorPercent:        50,
		MinRequests:         20,
		SleepWindow:         5 * time.Second,
		FlushInterval:       50 * time.Millisecond,
		ConsecutiveFailures: 5,
	}
}

const (
	// maxMinRequests keeps the volume threshold reachable under the event
	// budget below: eventsPerSecond * 10 s is twice this.
	maxMinRequests = 10000
	// eventsPerSecond is the most outcomes per circuit and second that go to
	// hystrix; above it they are scaled down, keeping their ratio. hystrix
	// keeps two durations (16 bytes) per event for 60 seconds, so this bounds
	// a busy circuit's hystrix memory to about 2 MB.
	eventsPerSecond = 2000
	// maxPerFlush leaves room in hystrix's 2000-slot metrics channel for the
	// backlog of the previous flush; overflow is silently dropped by hystrix.
	maxPerFlush = 1000
	// minSleep keeps the sleep window a whole number of hystrix milliseconds
	// well above the flush granularity.
	minSleep = 10 * time.Millisecond
)

// Validate reports the first invalid field, naming its command-line flag.
func (c Config) Validate() error {
	switch {
	case c.ErrorPercent < 1 || c.ErrorPercent > 100:
		return fmt.Errorf("-breaker-error-percent %d: want 1..100", c.ErrorPercent)
	case c.MinRequests < 1 || c.MinRequests > maxMinRequests:
		return fmt.Errorf("-breaker-min-requests %d: want 1..%d", c.MinRequests, maxMinRequests)
	case c.SleepWindow < minSleep:
		return fmt.Errorf("-breaker-sleep %v: want at least %v", c.SleepWindow, minSleep)
	case c.FlushInterval < time.Millisecond || c.FlushInterval > time.Second:
		return fmt.Errorf("breaker flush interval %v: want 1ms..1s", c.FlushInterval)
	case c.ConsecutiveFailures < 0 || c.ConsecutiveFailures > maxMinRequests:
		return fmt.Errorf("-breaker-consecutive-failures %d: want 0 (off)..%d", c.ConsecutiveFailures, maxMinRequests)
	}
	return nil
}

// perFlush is the event budget of one flush of one circuit.
func (c Config) perFlush() int64 {
	n := int64(eventsPerSecond * c.FlushInterval / time.Second)
	return min(max(n, 1), maxPerFlush)
}

// trialTaken is or-ed into a circuit's word while its half-open trial is out,
// so that taking the trial and every state change are single CAS operations
// on one word (a separate flag could be reset under a slow caller's feet).
const trialTaken = 1 << 7

// Circuit is the breaker of one backend on one node. Allow, Done and Cancel
// are called by the proxy on the request path, from any goroutine; they never
// block and, except for the single half-open trial, never call hystrix.
//
// Every request that Allow admits must be finished by exactly one Done or
// Cancel with the trial flag Allow returned. A trial that is never finished
// keeps the circuit half-open, and no other request reaches the backend, so
// report the trial's outcome as soon as it is known (response headers, a
// completed dial), not when a long stream ends.
type Circuit struct {
	// word is State, plus trialTaken while half-open. Allow reads it on every
	// request; it changes only on transitions.
	word atomic.Uint32
	_    [60]byte
	// successes and failures batch non-trial outcomes until the next flush.
	// They are written on every request, so they sit on their own cache line
	// and parallel Dones don't keep evicting the word that Allow reads.
	successes atomic.Int64
	failures  atomic.Int64
	streak    atomic.Int64 // failures since the last success
	_         [40]byte

	// openedAt is when the circuit last opened or its last trial ended
	// (UnixNano); the sleep window counts from it.
	openedAt atomic.Int64
	removed  atomic.Bool
	backend  string
	name     string // hystrix command name
	cb       *hystrix.CircuitBreaker
	success  []string // the event slices handed to hystrix, made once
	failure  []string

	// Owned by the flusher (Set.Run): no other goroutine touches these.
	notified State   // the last state onChange was told about
	carry    float64 // failures owed to hystrix from earlier scaled flushes
}

// Backend returns the backend ID the circuit was created for.
func (c *Circuit) Backend() string { return c.backend }

// State returns the circuit's current state.
func (c *Circuit) State() State { return State(c.word.Load() &^ trialTaken) }

// Allow says whether a request may go to the backend now, and whether it is
// the half-open trial. Exactly one caller per half-open period gets
// (true, true).
func (c *Circuit) Allow() (ok, trial bool) {
	switch w := c.word.Load(); w {
	case uint32(Closed):
		return true, false
	case uint32(HalfOpen):
		// hystrix's gate lets one caller through per sleep window; the CAS
		// makes sure that caller is still in the half-open period it saw.
		if !c.cb.AllowRequest() {
			return false, false
		}
		if c.word.CompareAndSwap(w, w|trialTaken) {
			return true, true
		}
	}
	return false, false
}

// Done reports the outcome of a request that Allow admitted. A normal
// outcome is only counted, for the next flush. A trial's outcome is applied at
// once: success closes the circuit, failure opens it for another sleep window.
// Only a trial's Done calls hystrix (and allocates).
func (c *Circuit) Done(trial, success bool) {
	if trial {
		c.endTrial(success, true)
		return
	}
	if success {
		c.successes.Add(1)
		if c.streak.Load() != 0 { // a load, not a store, on the common path
			c.streak.Store(0)
		}
	} else {
		c.failures.Add(1)
		c.streak.Add(1)
	}
}

// Cancel reports a request that Allow admitted but the client abandoned. It
// says nothing about the backend, so nothing is counted; a cancelled trial
// reopens the circuit, and the next trial comes after another sleep window.
func (c *Circuit) Cancel(trial bool) {
	if trial {
		c.endTrial(false, false)
	}
}

func (c *Circuit) endTrial(success, report bool) {
	const out = uint32(HalfOpen) | trialTaken
	if c.word.Load() != out {
		return // not a trial of this circuit (a caller bug): ignore it
	}
	now := time.Now()
	if success {
		// hystrix closes its circuit and resets its metrics on a success;
		// that must happen before the word says closed, or the next flush
		// would find hystrix still open and reopen at once.
		_ = c.cb.ReportEvent(c.success, now, 0)
		// Outcomes counted while the circuit was not closed belong to the
		// old episode; don't let them into the fresh window.
		c.successes.Store(0)
		c.failures.Store(0)
		c.streak.Store(0)
		c.word.CompareAndSwap(out, uint32(Closed))
		return
	}
	if report {
		// Keeps hystrix's last-tested time and counts in step; its circuit
		// stays open.
		_ = c.cb.ReportEvent(c.failure, now, 0)
	}
	c.openedAt.Store(now.UnixNano())
	c.word.CompareAndSwap(out, uint32(Open))
}

// Set holds the circuits of one node, one per backend, and runs the flusher
// that feeds them to hystrix.
type Set struct {
	node     string
	cfg      Config
	suffix   string
	perFlush int64
	onChange func(backend string, from, to State)
	running  atomic.Bool

	// all is an immutable snapshot of the circuits for the flusher; replaced
	// under mu.
	all atomic.Pointer[[]*Circuit]

	mu      sync.Mutex
	byID    map[string]*Circuit // guarded by mu
	created int                 // guarded by mu; circuits made so far, for unique names
}

// NewSet returns an empty Set for the node. onChange (may be nil) is told of
// every state change of every circuit; see Run for when and how.
func NewSet(node string, cfg Config, onChange func(backend string, from, to State)) (*Set, error) {
	if node == "" {
		return nil, errors.New("breaker: empty node name")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	s := &Set{
		node:     node,
		cfg:      cfg,
		suffix:   hex.EncodeToString(b[:]),
		perFlush: cfg.perFlush(),
		onChange: onChange,
		byID:     make(map[string]*Circuit),
	}
	s.all.Store(new([]*Circuit))
	return s, nil
}

// Circuit returns the backend's circuit, creating it closed if it does not
// exist. It is meant for the cold path (building a routing table): it takes a
// lock and may create a hystrix circuit.
func (s *Set) Circuit(backend string) *Circuit {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.byID[backend]; ok {
		return c
	}
	name := fmt.Sprintf("%s/%s#%s-%d", s.node, backend, s.suffix, s.created)
	s.created++
	// Settings must be in place before the circuit exists: hystrix freezes
	// MaxConcurrentRequests into a ticket channel of that size at creation.
	// We never use the executor pool, so 1 keeps that channel tiny, and the
	// timeout is never consulted. Zero fields would mean hystrix defaults, so
	// SleepWindow is truncated (never rounded up to hystrix's advantage: its
	// gate must be open by the time our window ends).
	hystrix.ConfigureCommand(name, hystrix.CommandConfig{
		Timeout:                int(time.Hour / time.Millisecond),
		MaxConcurrentRequests:  1,
		RequestVolumeThreshold: s.cfg.MinRequests,
		SleepWindow:            int(s.cfg.SleepWindow / time.Millisecond),
		ErrorPercentThreshold:  s.cfg.ErrorPercent,
	})
	cb, _, err := hystrix.GetCircuit(name)
	if err != nil {
		// This hystrix version has no error path in GetCircuit.
		panic(fmt.Sprintf("breaker: hystrix circuit %s: %v", name, err))
	}
	c := &Circuit{
		backend: backend,
		name:    name,
		cb:      cb,
		success: []string{"success"},
		failure: []string{"failure"},
	}
	s.byID[backend] = c
	s.publish()
	return c
}

// Remove forgets the backend's circuit. A later Circuit call for the same
// backend starts a fresh, closed circuit. Requests still holding the old
// circuit may finish on it harmlessly; onChange is not called for it again
// (unless a flush already in progress reaches it).
func (s *Set) Remove(backend string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.byID[backend]
	if !ok {
		return
	}
	c.removed.Store(true)
	delete(s.byID, backend)
	s.publish()
}

// publish replaces the flusher's snapshot. The caller holds s.mu.
func (s *Set) publish() {
	all := make([]*Circuit, 0, len(s.byID))
	for _, c := range s.byID {
		all = append(all, c)
	}
	s.all.Store(&all)
}

// States returns the current state of every circuit, by backend ID.
func (s *Set) States() map[string]State {
	all := *s.all.Load()
	m := make(map[string]State, len(all))
	for _, c := range all {
		m[c.backend] = c.State()
	}
	return m
}

// Run flushes outcomes to hystrix and moves circuits between states every
// FlushInterval until ctx ends; it returns nil then. Without Run no circuit
// ever opens. Run must not be called twice at once.
//
// onChange is called from Run's goroutine only: never concurrently, in the
// order the changes happened, and with no lock held, so it may call any
// method of the Set or its circuits. A trial's outcome changes the circuit at
// once (Allow sees it), but onChange hears of it at the next flush, so at most
// FlushInterval late; in exchange a slow onChange can never report an older
// state after a newer one. onChange delays the flusher of every circuit, so it
// should return quickly.
func (s *Set) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("breaker: Run is already running for this set")
	}
	defer s.running.Store(false)
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			for _, c := range *s.all.Load() {
				s.flush(c, time.Now())
			}
		}
	}
}

// flush does one circuit's share of a flusher tick.
func (s *Set) flush(c *Circuit, now time.Time) {
	if c.removed.Load() {
		return
	}
	// Deliver a trial's outcome, which happened on a request goroutine.
	st := c.State()
	s.notify(c, st)
	switch st {
	case Closed:
		// Only this goroutine moves a circuit out of Closed, so hystrix is
		// known to be closed here: a "success" reported to an open hystrix
		// circuit would close it.
		s.report(c, now)
		streak := s.cfg.ConsecutiveFailures > 0 && c.streak.Load() >= int64(s.cfg.ConsecutiveFailures)
		// hystrix trips lazily, from the metrics seen so far. A trip by the
		// streak leaves hystrix's own circuit closed, which is harmless:
		// half-open admits a single trial by the CAS on word, and a trial's
		// success reported to a closed hystrix circuit changes nothing.
		if streak || c.cb.IsOpen() {
			c.streak.Store(0)
			c.openedAt.Store(now.UnixNano())
			if c.word.CompareAndSwap(uint32(Closed), uint32(Open)) {
				s.notify(c, Open)
			}
		}
	case Open:
		c.drop()
		if now.UnixNano()-c.openedAt.Load() >= int64(s.cfg.SleepWindow) {
			// The new word has trialTaken clear: the next Allow may take a trial.
			if c.word.CompareAndSwap(uint32(Open), uint32(HalfOpen)) {
				s.notify(c, HalfOpen)
			}
		}
	default:
		c.drop()
	}
}

// drop discards outcomes of requests that were admitted before the circuit
// left Closed: hystrix must not count them (and must see no success while
// open).
func (c *Circuit) drop() {
	c.successes.Store(0)
	c.failures.Store(0)
	c.streak.Store(0)
}

// report hands the batched outcomes to hystrix, at most s.perFlush of them,
// keeping the failure ratio. Failures are spread evenly among the successes
// because hystrix's goroutine may be half-way through the batch when IsOpen
// looks: a batch that starts with its failures would look worse than it is.
func (s *Set) report(c *Circuit, now time.Time) {
	ok, fail := c.successes.Swap(0), c.failures.Swap(0)
	n := ok + fail
	if n == 0 {
		return
	}
	if n > s.perFlush {
		fail, c.carry = scale(fail, n, s.perFlush, c.carry)
		n = s.perFlush
	}
	var acc int64
	for range n {
		ev := c.success
		if acc += fail; acc >= n {
			acc -= n
			ev = c.failure
		}
		if c.cb.ReportEvent(ev, now, 0) != nil {
			return // hystrix's channel is full; the rest would be dropped too
		}
	}
}

// scale returns how many of budget events should be failures when fail of n
// outcomes failed. The fraction that does not fit in a whole event is carried
// to the next scaled flush, so that a small budget does not round a 30% error
// rate to 0% or 50% every time.
func scale(fail, n, budget int64, carry float64) (int64, float64) {
	want := float64(fail)*float64(budget)/float64(n) + carry
	f := min(int64(want), budget)
	return f, want - float64(f)
}

// notify tells onChange that the circuit is now in state to, if that is news.
func (s *Set) notify(c *Circuit, to State) {
	from := c.notified
	if from == to {
		return
	}
	c.notified = to
	if s.onChange != nil && !c.removed.Load() {
		s.onChange(c.backend, from, to)
	}
}
