package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"
)

// backendTransport is a lean HTTP/1.1 client for one proxy: a keep-alive
// pool per backend (kept on the upstream, so the hot path takes only that
// pool's lock), and for a request without a body the whole exchange (write
// the request, read the response) done on the calling goroutine.
// http.Transport hands every request to a write goroutine and every response
// to a read goroutine; on a loaded two-core machine those handoffs cost more
// than the proxying itself. A request with a body is the exception: its body
// goes out from a helper goroutine while the response is read, as
// http.Transport does, so that an early answer (413, 401) reaches the client
// and a full-duplex backend does not deadlock.
// It supports exactly what ReverseProxy needs: plain HTTP/1.1 to backends,
// request bodies, 1xx interim answers, streaming and chunked responses,
// trailers and protocol upgrades.
type backendTransport struct {
	dialer          net.Dialer
	responseTimeout time.Duration
	// idleTimeout discards pooled connections idle for longer (backends
	// close idle connections on their own timers); a field so tests can
	// shorten it.
	idleTimeout time.Duration
	// tunnelIdle closes an upgraded (101) connection after this long with
	// no bytes either way; 0: never.
	tunnelIdle time.Duration
}

const (
	// pooledIdleTimeout is http.Transport's IdleConnTimeout default.
	pooledIdleTimeout = 90 * time.Second // Config.BackendIdleTimeout's default
	// maxResponseHeaderBytes bounds a backend's response headers (each
	// interim answer's too), so a faulty backend cannot make the proxy
	// buffer without limit. http.Transport's default is 1 MiB as well.
	maxResponseHeaderBytes = 1 << 20
	// max1xxResponses is how many interim answers one request may get, as
	// in http.Transport.
	max1xxResponses = 5
)

// aLongTimeAgo is a deadline in the past: it fails pending I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// connPool holds the idle keep-alive connections to one backend. It lives on
// the upstream: created on the cold path in SetRoutes, closed there when the
// backend leaves the table.
type connPool struct {
	addr    string
	maxIdle int

	mu     sync.Mutex
	idle   []*backendConn // guarded by mu; most recently used last
	closed bool           // guarded by mu; set when the backend left the table
}

func newConnPool(addr string, maxIdle int) *connPool {
	return &connPool{addr: addr, maxIdle: maxIdle}
}

// take pops the most recently used idle connection, after dropping those
// idle for longer than maxAge. It returns nil when none is left.
func (p *connPool) take(maxAge time.Duration) *backendConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	if n = p.dropStaleLocked(maxAge); n == 0 {
		return nil
	}
	bc := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return bc
}

// dropStaleLocked closes the connections idle for longer than maxAge and
// returns how many are left. The caller holds mu.
func (p *connPool) dropStaleLocked(maxAge time.Duration) int {
	n := len(p.idle)
	// The oldest connections sit at the front.
	if n == 0 || time.Since(p.idle[0].idleAt) <= maxAge {
		return n
	}
	cutoff := time.Now().Add(-maxAge)
	k := 0
	for k < n && p.idle[k].idleAt.Before(cutoff) {
		p.idle[k].c.Close()
		k++
	}
	copy(p.idle, p.idle[k:])
	clear(p.idle[n-k:])
	p.idle = p.idle[:n-k]
	return n - k
}

// expire closes the connections idle for longer than maxAge.
func (p *connPool) expire(maxAge time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropStaleLocked(maxAge)
}

// put keeps bc for the next request, or closes it when the pool is full or
// closed.
func (p *connPool) put(bc *backendConn) {
	bc.reused = true
	bc.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		bc.c.Close()
		return
	}
	p.idle = append(p.idle, bc)
	p.mu.Unlock()
}

// closeIdle closes the idle connections; with forever, also those that come
// back later, because the backend is gone.
func (p *connPool) closeIdle(forever bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if forever {
		p.closed = true
	}
	for _, bc := range p.idle {
		bc.c.Close()
	}
	clear(p.idle)
	p.idle = p.idle[:0]
}

// backendConn is one connection to a backend. During an exchange it belongs
// to that request alone; in the pool, to nobody.
type backendConn struct {
	pool   *connPool
	c      net.Conn
	br     *bufio.Reader // reads through the connection's Read: header limit
	bw     *bufio.Writer // writes through the connection's Write: counted
	cancel func()        // fails pending I/O; registered with context.AfterFunc
	check  connCheck     // is an idle connection still usable (conncheck_*.go)
	idleAt time.Time     // when it went into the pool
	reused bool          // served a request before: the backend may have closed it since

	// Per exchange. Reads happen on the request goroutine; writes on the
	// request goroutine or on the body writer, never both at once.
	readLimit int64 // bytes the response headers may still take
	nread     int64 // response bytes read in this exchange
	nwritten  int64 // request bytes that reached the connection
	// write, when set, bounds each write of the request (the backend
	// stopped reading the body).
	write idleDeadline
	ctx   context.Context // the exchange's request context, for deadline moves
}

// Read reads from the backend, refusing to go past the header limit.
func (bc *backendConn) Read(p []byte) (int, error) {
	if bc.readLimit <= 0 {
		return 0, fmt.Errorf("backend response headers exceed %d bytes", maxResponseHeaderBytes)
	}
	n, err := bc.c.Read(p)
	bc.readLimit -= int64(n)
	bc.nread += int64(n)
	return n, err
}

// Write writes to the backend, counting what got through.
func (bc *backendConn) Write(p []byte) (int, error) {
	if d, ok := bc.write.next(); ok {
		_ = bc.c.SetWriteDeadline(d)
		if bc.ctx.Err() != nil {
			bc.cancel()
		}
	}
	n, err := bc.c.Write(p)
	bc.nwritten += int64(n)
	return n, err
}

// setReadDeadline moves the read deadline, unless the request has ended:
// then the past deadline its cancel callback set (or is about to set) must
// stay. The callback runs only after ctx.Err() turns non-nil, so either this
// sees the error or the callback's deadline lands after this one.
func (bc *backendConn) setReadDeadline(d time.Time) {
	_ = bc.c.SetReadDeadline(d)
	if bc.ctx.Err() != nil {
		bc.cancel()
	}
}

// deadlineSteps: a deadline that follows progress moves at most every
// timeout/deadlineSteps, so a busy stream does not pay for a timer update
// per read or write. A peer is therefore cut off after between 15/16 of the
// timeout and the timeout of silence.
const deadlineSteps = 16

// idleDeadline is a deadline that follows progress: a peer that moves no
// byte for idle is cut off. next gives the deadline to set, at most every
// idle/deadlineSteps; a zero idle never sets one. Only the goroutine doing
// the I/O it bounds calls next.
type idleDeadline struct {
	idle  time.Duration
	moved time.Time // when the deadline last moved
}

func (d *idleDeadline) next() (time.Time, bool) {
	if d.idle <= 0 {
		return time.Time{}, false
	}
	now := time.Now()
	if now.Sub(d.moved) < d.idle/deadlineSteps {
		return time.Time{}, false
	}
	d.moved = now
	return now.Add(d.idle), true
}

func (t *backendTransport) dial(ctx context.Context, p *connPool) (*backendConn, error) {
	c, err := t.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	bc := &backendConn{pool: p, c: c, readLimit: math.MaxInt64}
	bc.br = bufio.NewReaderSize(bc, 8<<10)
	bc.bw = bufio.NewWriterSize(bc, 8<<10)
	bc.cancel = func() { _ = c.SetDeadline(aLongTimeAgo) }
	bc.check.init(c)
	return bc, nil
}

// get returns an idle connection that still looks usable, or a new one. A
// pooled connection the backend has closed (or written to unasked) is
// discarded: a request sent on it would fail, and one with a body could not
// be sent again.
func (t *backendTransport) get(ctx context.Context, p *connPool) (*backendConn, error) {
	for {
		bc := p.take(t.idleTimeout)
		if bc == nil {
			return t.dial(ctx, p)
		}
		if bc.br.Buffered() == 0 && bc.check.usable() {
			return bc, nil
		}
		bc.c.Close()
	}
}

// roundTrip sends req (URL.Host is the backend address) on a connection of
// pool p and reads the answer. body is req's body as the proxy tracks it
// (nil when there is none). A reused connection that fails before any of
// the answer arrived is tried once more, on a fresh connection, when
// sending req again is safe (see retryable).
func (t *backendTransport) roundTrip(req *http.Request, p *connPool, body *replayBody) (*http.Response, error) {
	ctx := req.Context()
	bc, err := t.get(ctx, p)
	if err != nil {
		return nil, err
	}
	resp, retry, err := t.exchange(bc, req, body)
	if !retry {
		return resp, err
	}
	if body != nil {
		body.rewind()
	}
	if bc, err = t.dial(ctx, p); err != nil {
		return nil, err
	}
	resp, _, err = t.exchange(bc, req, body)
	return resp, err
}

// exchange sends req on bc and reads the response headers. On failure bc is
// closed, and retry says whether req may go out again on a fresh connection.
func (t *backendTransport) exchange(bc *backendConn, req *http.Request, body *replayBody) (resp *http.Response, retry bool, err error) {
	ctx := req.Context()
	bc.ctx, bc.nread, bc.nwritten, bc.readLimit = ctx, 0, 0, maxResponseHeaderBytes
	// A client that goes away unblocks whatever I/O is pending on the
	// connection by moving its deadlines into the past. Every later
	// deadline move re-checks ctx, so none can undo this one.
	stop := context.AfterFunc(ctx, bc.cancel)
	var w *bodyWriter
	if req.Body != nil && req.Body != http.NoBody {
		w = &bodyWriter{bc: bc, req: req, body: body, responseTimeout: t.responseTimeout, done: make(chan struct{})}
		bc.write = idleDeadline{idle: t.responseTimeout}
		go w.run()
	} else {
		// No deadline on the write: the client's context bounds it. The
		// response timeout starts once the request is out.
		err := req.Write(bc.bw)
		if err == nil {
			err = bc.bw.Flush()
		}
		if err != nil {
			return t.fail(bc, req, body, w, stop, fmt.Errorf("write request: %w", err))
		}
		bc.setReadDeadline(time.Now().Add(t.responseTimeout))
	}
	resp, err = readResponse(bc, req)
	if err != nil {
		return t.fail(bc, req, body, w, stop, timeoutErr(err, "read response headers"))
	}
	bc.readLimit = math.MaxInt64
	// The body may stream for as long as it likes, as long as it moves:
	// pooledBody bounds the backend's silence, the client's idle timeout
	// a client that stops reading.
	sentFirst := true
	if w != nil {
		sentFirst = w.headersArrived()
	} else {
		bc.setReadDeadline(time.Time{})
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if err := checkUpgrade(req.Header, resp.Header); err != nil {
			resp.Body.Close()
			return t.fail(bc, req, body, w, stop, err)
		}
		if w != nil {
			// The upgraded connection is written to by ReverseProxy; the
			// request must be out first.
			<-w.done
			if w.err != nil {
				return t.fail(bc, req, body, w, stop, fmt.Errorf("write request: %w", w.err))
			}
		}
		u := &upgradedConn{bc: bc, stop: stop, idle: t.tunnelIdle}
		u.touch()
		resp.Body = u
		return resp, false, nil
	}
	// A backend that answered before the request was fully sent may not
	// have read the rest: the connection's state is unknown.
	reusable := !resp.Close && !req.Close && sentFirst
	if resp.Body == http.NoBody || resp.ContentLength == 0 {
		release(bc, w, stop, reusable)
		return resp, false, nil
	}
	resp.Body = &pooledBody{bc: bc, w: w, body: resp.Body, stop: stop, reusable: reusable, read: idleDeadline{idle: t.tunnelIdle}}
	return resp, false, nil
}

// fail ends a failed exchange: bc is closed, the body writer stopped, and
// the error says whose fault it was.
func (t *backendTransport) fail(bc *backendConn, req *http.Request, body *replayBody, w *bodyWriter, stop func() bool, err error) (*http.Response, bool, error) {
	stop()
	bc.c.Close()
	if w != nil {
		w.stop(false)
		if isTimeout(w.err) && !isTimeout(err) {
			err = &timeoutError{what: "backend stopped reading the request body", err: w.err}
		}
	}
	if body != nil {
		if cerr := body.clientErr(); cerr != nil {
			return nil, false, fmt.Errorf("%w: %w", errClientBody, cerr)
		}
	}
	ctx := req.Context()
	if ctx.Err() != nil {
		return nil, false, ctx.Err()
	}
	retry := bc.reused && bc.nread == 0 && !isTimeout(err) && retryable(req, body, bc.nwritten == 0)
	return nil, retry, err
}

// retryable reports whether a request whose reused connection failed before
// any answer arrived may go out again, by net/http's rule: when nothing of it
// reached the backend, or when it is replayable (an idempotent method, or an
// Idempotency-Key), and in both cases only if no byte of its body has been
// consumed.
func retryable(req *http.Request, body *replayBody, nothingWritten bool) bool {
	if body != nil && !body.pristine() {
		return false
	}
	if nothingWritten {
		return true
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	_, xok := req.Header["X-Idempotency-Key"]
	return ok || xok
}

// readResponse reads the final answer's headers. Interim answers (100
// Continue, 103 Early Hints) are handed to the request's client trace,
// which ReverseProxy uses to forward them, as http.Transport does.
func readResponse(bc *backendConn, req *http.Request) (*http.Response, error) {
	for n1xx := 0; ; {
		resp, err := http.ReadResponse(bc.br, req)
		if err != nil {
			return nil, err
		}
		code := resp.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			return resp, nil
		}
		if n1xx++; n1xx > max1xxResponses {
			return nil, fmt.Errorf("backend sent more than %d interim (1xx) answers", max1xxResponses)
		}
		bc.readLimit = maxResponseHeaderBytes
		if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
		}
	}
}

// release ends an exchange whose response has been consumed: bc goes back
// to its pool if that is safe, else it is closed.
func release(bc *backendConn, w *bodyWriter, stop func() bool, reusable bool) {
	if !stop() {
		// The cancel callback ran, or is running: the connection's
		// deadline is in the past.
		reusable = false
	}
	if !reusable {
		bc.c.Close()
	}
	if w != nil {
		w.stop(reusable)
	}
	if reusable && bc.br.Buffered() == 0 {
		bc.ctx = nil
		// The body's idle bound must not follow the connection into the
		// pool: the next exchange sets its own deadlines.
		_ = bc.c.SetReadDeadline(time.Time{})
		bc.pool.put(bc)
		return
	}
	bc.c.Close()
}

// bodyWriter sends a request that has a body from its own goroutine, so
// that the response can be read while the body is still going out. The
// goroutine belongs to the exchange: every path that ends the exchange
// (fail, release) stops it and waits for it, so it never outlives the
// handler that started it.
type bodyWriter struct {
	bc              *backendConn
	req             *http.Request
	body            *replayBody // nil if the proxy does not track the body
	responseTimeout time.Duration
	done            chan struct{} // closed when run returns
	err             error         // the write's result; read after done

	mu      sync.Mutex
	wrote   bool // guarded by mu: the request is completely written and flushed
	headers bool // guarded by mu: the response headers arrived
}

func (w *bodyWriter) run() {
	defer close(w.done)
	bc := w.bc
	err := w.req.Write(bc.bw)
	if err == nil {
		err = bc.bw.Flush()
	}
	bc.write = idleDeadline{}
	if err != nil {
		w.err = err
		// The response reader has no deadline while the request goes
		// out; closing unblocks it.
		bc.c.Close()
		return
	}
	_ = bc.c.SetWriteDeadline(time.Time{})
	if bc.ctx.Err() != nil {
		bc.cancel()
	}
	w.mu.Lock()
	w.wrote = true
	if !w.headers {
		// Only now does the wait for the answer begin.
		bc.setReadDeadline(time.Now().Add(w.responseTimeout))
	}
	w.mu.Unlock()
}

// headersArrived is called by the reader when the response headers are in.
// It reports whether the request had been completely sent by then.
func (w *bodyWriter) headersArrived() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.headers = true
	if w.wrote {
		w.bc.setReadDeadline(time.Time{})
	}
	return w.wrote
}

// stop waits for the writer. Unless the request was completely sent (done),
// the caller has closed the connection, which ends a write to the backend,
// and stop also ends a read of the client's body.
func (w *bodyWriter) stop(done bool) {
	if !done && w.body != nil {
		w.body.abort()
	}
	<-w.done
}

// errClientBody marks a round trip that failed because the client's request
// body could not be read: the client's fault, not the backend's.
var errClientBody = errors.New("read client request body")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// timeoutErr keeps a deadline error recognisable as a timeout (504) while
// saying what timed out.
func timeoutErr(err error, what string) error {
	if isTimeout(err) {
		return &timeoutError{what: "backend response timeout", err: err}
	}
	return fmt.Errorf("%s: %w", what, err)
}

type timeoutError struct {
	what string
	err  error
}

func (e *timeoutError) Error() string   { return e.what + ": " + e.err.Error() }
func (e *timeoutError) Unwrap() error   { return e.err }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return false }

// checkUpgrade validates a 101 answer the way ReverseProxy would after the
// round trip (which, on a mismatch, returns without closing the body and so
// would leak the connection and the in-flight slot): the backend must switch
// to the protocol the request asked for, and the request must have asked.
func checkUpgrade(req, res http.Header) error {
	want, got := upgradeType(req), upgradeType(res)
	switch {
	case want == "":
		return fmt.Errorf("backend switched protocols (to %q) unasked", got)
	case !printableASCII(got):
		return fmt.Errorf("backend tried to switch to invalid protocol %q", got)
	case !asciiEqualFold(want, got):
		return fmt.Errorf("backend tried to switch protocol %q when %q was requested", got, want)
	}
	return nil
}

// upgradeType is the protocol a message switches to: its Upgrade header,
// if Connection names "upgrade".
func upgradeType(h http.Header) string {
	for _, v := range h["Connection"] {
		for len(v) > 0 {
			var tok string
			tok, v, _ = cutByte(v, ',')
			if asciiEqualFold(trimOWS(tok), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}

func cutByte(s string, b byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// pooledBody returns the connection to the pool once the body has been read
// to its end, and closes it if the reader gives up early. A backend that
// sends nothing of the body for idle fails the read: without it, one that
// stalls after its headers would hold the client, the connection and the
// in-flight slot for ever.
type pooledBody struct {
	bc       *backendConn
	w        *bodyWriter // nil for a request without a body
	body     io.ReadCloser
	stop     func() bool
	reusable bool
	eof      bool
	closed   atomic.Bool
	read     idleDeadline // the backend's silence; the reader's alone
}

func (b *pooledBody) Read(p []byte) (int, error) {
	if d, ok := b.read.next(); ok {
		b.bc.setReadDeadline(d)
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *pooledBody) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	release(b.bc, b.w, b.stop, b.eof && b.reusable)
	return nil
}

// upgradedConn is the backend side of a switched protocol: reads drain what
// the response reader had buffered first. ReverseProxy copies both ways
// without deadlines, so the tunnel's idle timeout lives here: a read that
// times out ends the tunnel only if nothing moved either way meanwhile (a
// client that only sends keeps it open).
type upgradedConn struct {
	bc   *backendConn
	stop func() bool
	idle time.Duration
	last atomic.Int64 // unix nanos of the last byte either way
}

func (u *upgradedConn) touch() { u.last.Store(time.Now().UnixNano()) }

func (u *upgradedConn) Read(p []byte) (int, error) {
	for {
		if u.idle > 0 {
			_ = u.bc.c.SetReadDeadline(time.Unix(0, u.last.Load()).Add(u.idle))
		}
		n, err := u.bc.br.Read(p)
		if n > 0 {
			u.touch()
		}
		var ne net.Error
		if n == 0 && u.idle > 0 && errors.As(err, &ne) && ne.Timeout() &&
			time.Since(time.Unix(0, u.last.Load())) < u.idle {
			continue // the other direction was busy: wait on
		}
		return n, err
	}
}

func (u *upgradedConn) Write(p []byte) (int, error) {
	if u.idle > 0 {
		// A backend that takes none of the client's bytes for the idle
		// timeout ends the tunnel too.
		_ = u.bc.c.SetWriteDeadline(time.Now().Add(u.idle))
	}
	n, err := u.bc.c.Write(p)
	if n > 0 {
		u.touch()
	}
	return n, err
}

func (u *upgradedConn) Close() error {
	u.stop()
	return u.bc.c.Close()
}
