package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thebalancer/balancer/proxy/pick"
)

// httpForwarder is the HTTP mode: httputil.ReverseProxy does the protocol
// work (hop-by-hop headers, X-Forwarded-*, streaming, trailers, upgrades) and
// calls back into RoundTrip, where the backend is picked and counted. Picking
// inside RoundTrip rather than in Rewrite lets a connect failure be retried
// on another backend within the same proxied request.
type httpForwarder struct {
	p         *Proxy
	rp        *httputil.ReverseProxy
	transport *backendTransport
	buffers   bufferPool
	writers   sync.Pool // of *clientWriter, one per request in flight
}

func newHTTPForwarder(p *Proxy) *httpForwarder {
	f := &httpForwarder{
		p: p,
		transport: &backendTransport{
			dialer:          net.Dialer{Timeout: p.cfg.DialTimeout, KeepAlive: 30 * time.Second},
			responseTimeout: p.cfg.ResponseTimeout,
			idleTimeout:     p.cfg.BackendIdleTimeout,
			tunnelIdle:      p.cfg.IdleTimeout,
		},
	}
	f.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Append to the client's chain, as nginx and HAProxy do; the
			// backend decides how many hops it trusts. Proto and Host are
			// always this proxy's view.
			if xff, ok := pr.In.Header["X-Forwarded-For"]; ok {
				pr.Out.Header["X-Forwarded-For"] = xff
			}
			pr.SetXForwarded()
			// ReverseProxy drops query parameters it cannot parse (and
			// re-encodes the rest) unless the raw query is put back: the
			// backend must see the bytes the client sent, or a filter in
			// front and the backend read different parameters.
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.Out.URL.Scheme = "http"
			// The host is chosen per attempt in RoundTrip; Out.Host keeps
			// the client's Host header, as backends behind a balancer expect.
			pr.Out.URL.Host = "backend.invalid"
		},
		Transport:    f,
		BufferPool:   &f.buffers,
		ErrorHandler: f.writeError,
		// FlushInterval stays 0: ReverseProxy flushes streaming responses
		// (no Content-Length, or text/event-stream) after every write on
		// its own, and a negative value would also flush the headers
		// separately from a timer goroutine, a second write per response.
	}
	return f
}

// ServeHTTP proxies one client request. It is the handler of the traffic
// listener in HTTP mode; the server calls it on the connection's goroutine.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := p.http
	if f == nil {
		http.Error(w, "proxy is in tcp mode", http.StatusInternalServerError)
		return
	}
	// A balancer in front of web backends is no forward proxy: a CONNECT
	// passed on would let a backend's 200 read as an open tunnel, and a
	// PRI line is HTTP/2's preface sent to an HTTP/1.1 port.
	if r.Method == http.MethodConnect || r.Method == "PRI" {
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		WriteJSONError(w, http.StatusMethodNotAllowed, r.Method+" is not proxied")
		return
	}
	cw, _ := f.writers.Get().(*clientWriter)
	if cw == nil {
		cw = &clientWriter{}
	}
	cw.start(w, p.cfg.ClientIdleTimeout)
	if r.Body != nil && r.Body != http.NoBody {
		// ReverseProxy hides the body behind its own wrapper; the context
		// carries it to RoundTrip. The request is copied so that the
		// server's own view of its body stays as it was.
		body := &replayBody{src: r.Body, ctl: http.NewResponseController(w), read: idleDeadline{idle: p.cfg.ClientIdleTimeout}}
		r = r.WithContext(context.WithValue(r.Context(), replayBodyKey{}, body))
		r.Body = body
	}
	f.rp.ServeHTTP(cw, r)
	// Not deferred: after a panic (an aborted copy), nothing may reuse it.
	cw.ResponseWriter, cw.ctl = nil, http.ResponseController{}
	f.writers.Put(cw)
}

// clientWriter is the ResponseWriter ReverseProxy answers through. It moves
// the client connection's write deadline forward as the answer makes
// progress, so a client that stops reading for ClientIdleTimeout is cut off
// and its backend connection and in-flight slot are released.
type clientWriter struct {
	http.ResponseWriter
	ctl   http.ResponseController
	write idleDeadline
}

// start binds cw to one request. The deadline is set at once: the headers
// (and any 1xx answer) go out before the first Write, and a deadline left
// by the connection's previous request may be long past.
func (cw *clientWriter) start(w http.ResponseWriter, idle time.Duration) {
	cw.ResponseWriter, cw.ctl = w, *http.NewResponseController(w)
	cw.write = idleDeadline{idle: idle, moved: time.Now()}
	_ = cw.ctl.SetWriteDeadline(cw.write.moved.Add(idle))
}

func (cw *clientWriter) Write(p []byte) (int, error) {
	cw.progress()
	return cw.ResponseWriter.Write(p)
}

// WriteHeader moves the deadline too: an answer without a body (204, 304,
// HEAD, a redirect) is never written through Write, and its headers go out
// when the handler returns, which after an exchange longer than the idle
// timeout would be past a deadline set at the start.
func (cw *clientWriter) WriteHeader(code int) {
	cw.progress()
	// net/http would sniff a Content-Type for an answer without one; a
	// backend that leaves it out on purpose (user uploads) must not have
	// text/html invented for it.
	if h := cw.Header(); h != nil {
		if _, ok := h["Content-Type"]; !ok {
			h["Content-Type"] = nil
		}
	}
	cw.ResponseWriter.WriteHeader(code)
}

// FlushError is what http.ResponseController calls to flush; ReverseProxy
// flushes streamed answers this way.
func (cw *clientWriter) FlushError() error {
	cw.progress()
	return cw.ctl.Flush()
}

// progress moves the write deadline forward, at most every
// idle/deadlineSteps.
func (cw *clientWriter) progress() {
	if d, ok := cw.write.next(); ok {
		_ = cw.ctl.SetWriteDeadline(d)
	}
}

// Unwrap lets http.ResponseController reach Flush and the deadlines.
func (cw *clientWriter) Unwrap() http.ResponseWriter { return cw.ResponseWriter }

// Hijack hands the client connection over for a switched protocol, whose
// bytes ReverseProxy copies without this writer: the HTTP exchange's
// deadline must not cut a long-lived WebSocket. Silence is the tunnel's
// idle timeout's business (upgradedConn); here each write to the client
// must make progress within the client idle timeout, or a client that stops
// reading would hold the tunnel, and its backend, forever.
func (cw *clientWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := cw.ctl.Hijack()
	if err != nil {
		return c, brw, err
	}
	_ = c.SetDeadline(time.Time{})
	sc := &stallConn{Conn: c, stall: cw.write.idle}
	// ReverseProxy copies the client's side of the tunnel from the
	// connection itself; bytes the client sent right behind its upgrade
	// request already sit in the server's buffer and would be lost.
	if n := brw.Reader.Buffered(); n > 0 {
		sc.early, _ = brw.Reader.Peek(n)
		sc.early = append([]byte(nil), sc.early...)
		_, _ = brw.Reader.Discard(n)
	}
	return sc, brw, nil
}

// stallConn bounds each write by stall: a peer that takes none of it for
// that long fails the write. Reads return early first: what the client
// sent before the tunnel was up.
type stallConn struct {
	net.Conn
	stall time.Duration
	early []byte // the tunnel's one reader's alone
}

func (c *stallConn) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite passes a half-close on: ReverseProxy ends the client's side of
// a tunnel whose backend finished sending this way, and without it would
// close the whole connection, cutting what the client still sends.
func (c *stallConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (c *stallConn) Write(p []byte) (int, error) {
	if c.stall > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.stall))
	}
	return c.Conn.Write(p)
}

// RoundTrip sends one proxied request to a backend, retrying connect
// failures on other backends while nothing of the request has been sent.
func (f *httpForwarder) RoundTrip(req *http.Request) (*http.Response, error) {
	p := f.p
	t := p.tab.Load()
	var body *replayBody
	if req.Body != nil && req.Body != http.NoBody {
		// Shield the body so that a retry can still send it, and learn
		// whether any was read and why reading it stopped.
		body, _ = req.Context().Value(replayBodyKey{}).(*replayBody)
		if body == nil {
			body = &replayBody{src: req.Body}
			req.Body = body
		}
	}
	var skip pick.Skip
	var lastErr error
	for attempt := 0; attempt < p.cfg.MaxTries; attempt++ {
		i, trial, err := p.choose(t, &skip)
		if err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (last: %w)", err, lastErr)
			}
			return nil, err
		}
		u := t.ups[i]
		req.URL.Host = u.addr
		u.inflight.Add(1)
		start := time.Now()
		resp, err := f.transport.roundTrip(req, u.pool, body)
		if err != nil {
			u.inflight.Add(-1)
			if errors.Is(err, errClientBody) || req.Context().Err() != nil {
				// The client's body broke, or the client went away:
				// that says nothing about the backend's health.
				u.circuit.Cancel(trial)
				return nil, err
			}
			u.circuit.Done(trial, false)
			u.stats.observe(time.Since(start), failureOf(err))
			if isDialError(err) && (body == nil || body.pristine()) {
				skip.Add(i)
				lastErr = err
				continue
			}
			return nil, err
		}
		// The backend has answered: report it now, not when the body
		// ends, so that a half-open trial whose answer streams (events,
		// WebSocket) does not keep the backend out for as long.
		failed := resp.StatusCode >= 500
		u.circuit.Done(trial, !failed)
		orig := resp.Body
		var b *countedBody
		if rwc, ok := orig.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
			c := &countedConn{w: rwc}
			b, resp.Body = &c.countedBody, c
		} else {
			b = &countedBody{watch: true}
			resp.Body = b
		}
		b.u, b.failed, b.start, b.ctx, b.body, b.rc = u, failed, start, req.Context(), body, orig
		return resp, nil
	}
	return nil, fmt.Errorf("%w: %d backends tried (last: %w)", ErrNoBackend, p.cfg.MaxTries, lastErr)
}

// countedBody holds a backend's in-flight slot until the response body is
// closed, which ReverseProxy does on every path (done, client abort, error),
// so the count comes back down however the request ends.
type countedBody struct {
	u      *upstream
	failed bool
	start  time.Time
	ctx    context.Context
	body   *replayBody // the request's, or nil
	rc     io.ReadCloser
	// watch: a read error counts as a failure in the statistics. The
	// circuit heard the outcome when the headers arrived and is not told
	// again: one request, one report.
	watch  bool
	broken atomic.Bool
	done   atomic.Bool
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF && b.watch && b.ctx.Err() == nil && (b.body == nil || b.body.clientErr() == nil) {
		b.broken.Store(true)
	}
	return n, err
}

func (b *countedBody) Close() error {
	err := b.rc.Close()
	if b.done.CompareAndSwap(false, true) {
		b.u.inflight.Add(-1)
		f := NoFailure
		switch {
		case b.failed:
			f = Status5xx
		case b.broken.Load():
			f = BrokenBody
		}
		b.u.stats.observe(time.Since(b.start), f)
	}
	return err
}

// countedConn is countedBody for a 101 response, whose body is the upgraded
// backend connection that ReverseProxy writes to.
type countedConn struct {
	countedBody
	w io.Writer
}

func (c *countedConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// replayBodyKey carries a request's *replayBody from ServeHTTP to RoundTrip.
type replayBodyKey struct{}

// replayBody is the client's request body as the proxy tracks it. It moves
// the client connection's read deadline forward as the body arrives (a
// client that stalls for ClientIdleTimeout is cut off), remembers how much
// was read and why reading stopped, so that a failed connect can send it to
// another backend and a broken client body is not blamed on the backend,
// and it can be told to give up. Close is left to the server, which closes
// the incoming body once the handler returns.
type replayBody struct {
	src  io.ReadCloser
	ctl  *http.ResponseController // the client's connection; nil: no deadlines
	read idleDeadline             // only the reading goroutine touches it

	// inRead and aborted are a handshake: whichever of Read and abort
	// comes second sees the other's flag.
	inRead, aborted atomic.Bool

	mu          sync.Mutex
	n           int64 // guarded by mu: bytes read
	err         error // guarded by mu: why reading stopped (io.EOF included)
	interrupted bool  // guarded by mu: abort cut a read short
}

// errBodyAborted is what a read of an abandoned request body returns.
var errBodyAborted = errors.New("request body no longer wanted")

func (b *replayBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	err := b.err
	b.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if b.ctl != nil {
		if d, ok := b.read.next(); ok {
			_ = b.ctl.SetReadDeadline(d)
		}
	}
	b.inRead.Store(true)
	if b.aborted.Load() {
		b.inRead.Store(false)
		return 0, errBodyAborted
	}
	n, err := b.src.Read(p)
	b.inRead.Store(false)
	b.mu.Lock()
	b.n += int64(n)
	if err != nil {
		b.err = err
		b.interrupted = err != io.EOF && b.aborted.Load()
	}
	b.mu.Unlock()
	if err == io.EOF && b.ctl != nil {
		// Once the body is in, the server watches the connection for the
		// client going away; a deadline left behind would cancel a
		// request whose backend takes longer than the idle timeout.
		_ = b.ctl.SetReadDeadline(time.Time{})
	}
	return n, err
}

func (b *replayBody) Close() error { return nil }

// abort makes the body's reader give up: a read in progress fails at once
// (through the client connection's read deadline), later ones return
// errBodyAborted. Called when the exchange ends before the body was sent.
func (b *replayBody) abort() {
	b.aborted.Store(true)
	if b.ctl != nil && b.inRead.Load() {
		_ = b.ctl.SetReadDeadline(aLongTimeAgo)
	}
}

// rewind readies a pristine body for another attempt after an abort.
func (b *replayBody) rewind() { b.aborted.Store(false) }

// pristine reports that nothing of the body has been consumed, so it can
// still be sent whole to another connection.
func (b *replayBody) pristine() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n == 0 && b.err == nil
}

// clientErr is the error that broke reading the client's body, if any.
func (b *replayBody) clientErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil || b.err == io.EOF || b.interrupted {
		return nil
	}
	return b.err
}

// writeError answers a request that could not be proxied. It is the one
// place where proxy errors become status codes.
func (f *httpForwarder) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		// The client is gone; nobody reads an answer.
		return
	}
	// Clients get the kind of failure, not its detail: backend addresses,
	// this node's ports and what a backend sent stay in the log.
	status, msg := http.StatusBadGateway, "the backend failed to answer"
	var ne net.Error
	switch {
	case errors.Is(err, errClientBody):
		status, msg = http.StatusBadRequest, "the client request body could not be read"
	case errors.Is(err, ErrNoBackend):
		status, msg = http.StatusServiceUnavailable, err.Error()
		if i := strings.Index(msg, " (last: "); i >= 0 {
			msg = msg[:i] // the last attempt's error names addresses
		}
		w.Header().Set("Retry-After", "1")
		f.p.rejected.Add(1)
	case errors.As(err, &ne) && ne.Timeout():
		status, msg = http.StatusGatewayTimeout, "the backend did not answer in time"
	}
	f.p.log.Debug("proxied request failed", "status", status, "method", r.Method, "path", r.URL.Path, "err", err)
	WriteJSONError(w, status, msg)
}

// WriteJSONError writes {"error": msg} with the given status. The admin API
// answers errors in the same shape.
func WriteJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

// bufferPool recycles copy buffers, which ReverseProxy would otherwise
// allocate (32 KiB) for every response.
type bufferPool struct{ pool sync.Pool }

func (bp *bufferPool) Get() []byte {
	if b, ok := bp.pool.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 32<<10)
}

func (bp *bufferPool) Put(b []byte) { bp.pool.Put(&b) }

// ExpireIdle closes pooled backend connections that have sat idle for
// longer than Config.BackendIdleTimeout. Requests drop stale ones as
// they take from the pool, so without traffic only this gives a load
// spike's descriptors back; the node calls it from its tick loop.
func (p *Proxy) ExpireIdle() {
	if p.http == nil {
		return
	}
	maxAge := p.http.transport.idleTimeout
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.ups {
		if u.pool != nil {
			u.pool.expire(maxAge)
		}
	}
}

// CloseIdle drops pooled backend connections; called on shutdown.
func (p *Proxy) CloseIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.ups {
		if u.pool != nil {
			u.pool.closeIdle(false)
		}
	}
}
