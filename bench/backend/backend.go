// Package backend is the synthetic backend of the balancer: a small HTTP or
// TCP server with a configurable service time, a FIFO queue in front of a
// fixed number of workers and injected failures. `balancer demo-backend` runs
// one, the proxy's end-to-end tests start many in-process, and the benchmark
// harness measures the proxy against it.
//
// HTTP mode answers any path, after waiting for a worker and holding it for
// Delay plus up to Jitter, with 200, "X-Backend: NAME", "Content-Type:
// text/plain" and the body "NAME\n", or with probability FailRate 500 and
// "NAME: injected failure\n". Query parameters override this per request:
//
//	sleep=DURATION  service time instead of Delay+Jitter (e.g. sleep=20ms)
//	size=N          a body of N bytes (byte i is FillByte(i)) instead of the name
//	status=CODE     answer CODE (200..599) instead of 200 or an injected 500
//	echo=1          answer the request body instead of the name
//
// A malformed parameter is answered 400 at once. Otherwise a request body is
// read (and discarded unless echoed) before queueing; a client that goes
// away while queued leaves the queue unserved. GET /_stats answers Stats as
// JSON without queueing. A request with "Connection: Upgrade" and "Upgrade:
// echo" is answered 101 and its connection then echoes bytes until the
// client half-closes; upgrades bypass the queue.
//
// TCP mode serves each connection by waiting for a worker and Delay plus up
// to Jitter, writing "NAME\n", then echoing until the client half-closes, when
// it closes its write side too.
//
// The package owns only its listener and connections. It imports the
// standard library only and must not import any other balancer package, and
// it logs nothing per request: it is measured alongside the proxy.
package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Modes a backend can serve.
const (
	ModeHTTP = "http"
	ModeTCP  = "tcp"
)

// shutdownTimeout bounds the graceful part of Run's shutdown; connections
// still open after it are closed.
const shutdownTimeout = 5 * time.Second

// Config describes one synthetic backend. Start from DefaultConfig.
type Config struct {
	// Listen is the HOST:PORT to bind. Port 0 picks a free port; read it
	// back with Server.Addr.
	Listen string
	// Name is answered in every response (body and X-Backend header in HTTP
	// mode, the greeting in TCP mode). Empty means the bound address.
	Name string
	// Mode is "http" (the default when empty) or "tcp".
	Mode string
	// Delay is the base service time of one request (HTTP) or the time a
	// TCP connection waits, holding its worker, before the greeting.
	Delay time.Duration
	// Jitter adds a uniformly random extra 0..Jitter to Delay.
	Jitter time.Duration
	// Workers is how many requests (HTTP) or connections (TCP) are served at
	// once; the rest wait in a FIFO queue. 0 means unlimited.
	Workers int
	// FailRate is the fraction (0..1) of requests answered 500. In TCP mode
	// it is the fraction of connections closed after Delay without a greeting.
	FailRate float64
}

// DefaultConfig returns an HTTP backend on a free loopback port with no
// delay, no worker limit and no failures.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:0",
		Mode:   ModeHTTP,
	}
}

// Validate reports every invalid field at once; each message names the
// command-line flag of `balancer demo-backend` that sets the field.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("-listen is required (HOST:PORT; port 0 picks a free one)"))
	} else if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("-listen %q must be HOST:PORT: %w", c.Listen, err))
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		errs = append(errs, fmt.Errorf("-listen %q: port must be a number between 0 and 65535", c.Listen))
	}
	for _, r := range c.Name {
		if r < 0x20 || r == 0x7f {
			errs = append(errs, fmt.Errorf("-name %q must not contain control characters", c.Name))
			break
		}
	}
	switch c.Mode {
	case "", ModeHTTP, ModeTCP:
	default:
		errs = append(errs, fmt.Errorf("-mode %q must be %q or %q", c.Mode, ModeHTTP, ModeTCP))
	}
	if c.Delay < 0 {
		errs = append(errs, fmt.Errorf("-delay must be >= 0, got %s", c.Delay))
	}
	if c.Jitter < 0 {
		errs = append(errs, fmt.Errorf("-jitter must be >= 0, got %s", c.Jitter))
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("-workers must be >= 0 (0 = unlimited), got %d", c.Workers))
	}
	if math.IsNaN(c.FailRate) || c.FailRate < 0 || c.FailRate > 1 {
		errs = append(errs, fmt.Errorf("-fail-rate must be between 0 and 1, got %v", c.FailRate))
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of a backend's counters. It is also the JSON answer of
// GET /_stats in HTTP mode.
type Stats struct {
	// Name is the backend's name.
	Name string `json:"name"`
	// Served counts requests answered after being served by a worker, with
	// any status (HTTP), or TCP connections that were served to the end.
	Served int64 `json:"served"`
	// Failed counts the part of Served answered with a status >= 500
	// (injected or asked for with ?status=), or TCP connections dropped by
	// FailRate.
	Failed int64 `json:"failed"`
	// Canceled counts requests whose client went away while they were
	// queued or being served; they are not in Served.
	Canceled int64 `json:"canceled"`
	// InFlight is how many requests or connections hold a worker now.
	InFlight int64 `json:"in_flight"`
	// Queued is how many wait for a worker now.
	Queued int64 `json:"queued"`
	// MaxInFlight is the highest InFlight seen so far.
	MaxInFlight int64 `json:"max_in_flight"`
	// Upgrades counts HTTP connections switched to the echo protocol. They
	// bypass the worker queue and are not in the other counters.
	Upgrades int64 `json:"upgrades"`
}

// Server is one running synthetic backend. Create it with New, serve with
// Run, and stop it by ending Run's context (graceful) or with Close (crash).
type Server struct {
	cfg  Config
	name string
	ln   net.Listener
	gate *gate // nil when Workers == 0

	// Pre-built response parts, shared read-only by every request.
	nameBody    []byte   // "NAME\n"
	failBody    []byte   // "NAME: injected failure\n"
	hdrName     []string // X-Backend
	hdrNameLen  []string // Content-Length of nameBody
	hdrFailLen  []string // Content-Length of failBody
	hdrTextType []string // Content-Type

	http *http.Server // nil in TCP mode

	// base is canceled by Close and at the end of a graceful shutdown; TCP
	// connections waiting for a worker or a delay watch it.
	base       context.Context
	cancelBase context.CancelFunc

	running atomic.Bool
	closed  atomic.Bool

	// mu guards conns, refuse and dead. It is never held across I/O other
	// than closing a connection.
	mu     sync.Mutex
	conns  map[net.Conn]struct{} // TCP-mode and hijacked (upgraded) connections
	refuse bool                  // set when shutdown starts: track closes new connections at once
	dead   bool                  // set by kill: HTTP handlers return at once
	// wg counts HTTP handlers (entered through enter) and TCP connection
	// goroutines. No Add races Run's final Wait: TCP Adds come from the
	// accept loop, which has returned by then; HTTP Adds happen under mu
	// while !dead, and Run waits only after kill set dead or after a
	// successful http.Server.Shutdown left no connection to run a handler.
	wg sync.WaitGroup

	timers sync.Pool // *time.Timer, see sleep
	bufs   sync.Pool // *[]byte of copyBufSize, for echo loops
	bodies sync.Pool // *bytes.Buffer, for ?echo=1 request bodies

	served      atomic.Int64
	failed      atomic.Int64
	canceled    atomic.Int64
	inFlight    atomic.Int64
	queued      atomic.Int64
	maxInFlight atomic.Int64
	upgrades    atomic.Int64
}

// New validates cfg and binds the listener, so Addr is known and a port in
// use is reported here. Serving starts with Run; call Run or Close to
// release the listener.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeHTTP
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("backend listen %s: %w", cfg.Listen, err)
	}
	s := &Server{
		cfg:   cfg,
		name:  cfg.Name,
		ln:    ln,
		conns: make(map[net.Conn]struct{}),
	}
	if s.name == "" {
		s.name = ln.Addr().String()
	}
	if cfg.Workers > 0 {
		s.gate = newGate(cfg.Workers)
	}
	s.nameBody = []byte(s.name + "\n")
	s.failBody = []byte(s.name + ": injected failure\n")
	s.hdrName = []string{s.name}
	s.hdrNameLen = []string{strconv.Itoa(len(s.nameBody))}
	s.hdrFailLen = []string{strconv.Itoa(len(s.failBody))}
	s.hdrTextType = []string{"text/plain"}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.timers.New = func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	s.bufs.New = func() any { b := make([]byte, copyBufSize); return &b }
	s.bodies.New = func() any { return new(bytes.Buffer) }
	if cfg.Mode == ModeHTTP {
		s.http = &http.Server{
			Handler:           http.HandlerFunc(s.serveHTTP),
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			// net/http logs only odd client behaviour here; a backend
			// under benchmark load must not spend time on it.
			ErrorLog: log.New(io.Discard, "", 0),
		}
	}
	return s, nil
}

// Addr returns the bound HOST:PORT. Safe to call from any goroutine.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Name returns the name the backend answers with.
func (s *Server) Name() string { return s.name }

// Run serves until ctx ends, then shuts down gracefully: it stops accepting,
// lets requests and connections in progress finish for at most 5s, closes
// whatever is left, waits for its goroutines and returns nil. It also returns
// (nil) after Close. It returns an error only if serving fails otherwise, or
// if Run is called a second time. Run blocks; call it once, from one goroutine.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("backend: Run called more than once")
	}
	done := make(chan error, 1)
	go func() {
		if s.http != nil {
			done <- s.http.Serve(s.ln)
		} else {
			done <- s.acceptTCP()
		}
	}()

	var serveErr error
	select {
	case serveErr = <-done:
		// Close was called, or the listener failed.
	case <-ctx.Done():
		serveErr = s.shutdown(done)
	}
	if s.closed.Load() || errors.Is(serveErr, http.ErrServerClosed) || errors.Is(serveErr, net.ErrClosed) {
		serveErr = nil
	}
	if serveErr != nil {
		s.kill()
	}
	s.wg.Wait()
	s.cancelBase()
	if serveErr != nil {
		return fmt.Errorf("backend serve %s: %w", s.Addr(), serveErr)
	}
	return nil
}

// shutdown stops accepting, collects the serve loop's result from done and
// drains for at most shutdownTimeout, then kills what is left.
func (s *Server) shutdown(done <-chan error) error {
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// Upgraded connections are hijacked, so http.Server.Shutdown does not
	// see them; they are endless echo streams and are closed at once, and
	// refuse makes an upgrade racing with shutdown close its connection too.
	s.mu.Lock()
	s.refuse = true
	s.mu.Unlock()
	if s.http != nil {
		s.closeConns()
		if err := s.http.Shutdown(sctx); err != nil {
			s.kill()
		}
		return <-done
	}
	_ = s.ln.Close()
	// The accept loop is the only source of wg.Add in TCP mode; once it has
	// returned, waiting on wg cannot race with an Add.
	err := <-done
	drained := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-sctx.Done():
		s.kill()
		<-drained
	}
	return err
}

// Close kills the backend at once, like a crash: it closes the listener and
// every open connection, including idle keep-alive, queued and upgraded
// ones. Run, if running, then returns nil. Safe to call from any goroutine
// and more than once.
func (s *Server) Close() error {
	s.closed.Store(true)
	s.kill()
	return nil
}

// kill closes the listener and every connection and cancels s.base.
func (s *Server) kill() {
	s.cancelBase()
	_ = s.ln.Close()
	if s.http != nil {
		_ = s.http.Close()
	}
	s.mu.Lock()
	s.dead = true
	s.refuse = true
	s.mu.Unlock()
	s.closeConns()
}

// closeConns closes every tracked (TCP-mode or hijacked) connection.
func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
}

// enter counts an HTTP handler in wg; it returns false once the server is
// killed, and the handler must then return at once. A handler that entered
// calls s.wg.Done when it returns.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return false
	}
	s.wg.Add(1)
	return true
}

// track registers c so that Close and shutdown can close it. The caller owns
// c and calls untrack when done. It returns false, after closing c, once
// shutdown has started.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse {
		_ = c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// untrack forgets and closes c.
func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	_ = c.Close()
}

// Stats returns a snapshot of the counters. Safe to call from any goroutine;
// the fields are read one by one, so they may be a moment apart.
func (s *Server) Stats() Stats {
	return Stats{
		Name:        s.name,
		Served:      s.served.Load(),
		Failed:      s.failed.Load(),
		Canceled:    s.canceled.Load(),
		InFlight:    s.inFlight.Load(),
		Queued:      s.queued.Load(),
		MaxInFlight: s.maxInFlight.Load(),
		Upgrades:    s.upgrades.Load(),
	}
}

// acquire waits, in FIFO order, for a worker slot. It returns false if ctx
// ends first; the caller then must not call release.
func (s *Server) acquire(ctx context.Context) bool {
	if s.gate != nil {
		if !s.gate.tryAcquire() {
			s.queued.Add(1)
			err := s.gate.wait(ctx)
			s.queued.Add(-1)
			if err != nil {
				return false
			}
		}
	}
	n := s.inFlight.Add(1)
	for {
		m := s.maxInFlight.Load()
		if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	return true
}

// release gives back the slot taken by a successful acquire.
func (s *Server) release() {
	s.inFlight.Add(-1)
	if s.gate != nil {
		s.gate.release()
	}
}

// serviceTime draws Delay + uniform(0..Jitter).
func (s *Server) serviceTime() time.Duration {
	d := s.cfg.Delay
	if s.cfg.Jitter > 0 {
		d += time.Duration(rand.Int64N(int64(s.cfg.Jitter) + 1))
	}
	return d
}

// shouldFail draws whether this request fails.
func (s *Server) shouldFail() bool {
	switch {
	case s.cfg.FailRate <= 0:
		return false
	case s.cfg.FailRate >= 1:
		return true
	default:
		return rand.Float64() < s.cfg.FailRate
	}
}

// sleep waits for d or until ctx ends; it reports whether d passed. Timers
// are recycled: since Go 1.23 a stopped timer can be Reset without draining.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := s.timers.Get().(*time.Timer)
	t.Reset(d)
	defer func() {
		t.Stop()
		s.timers.Put(t)
	}()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
