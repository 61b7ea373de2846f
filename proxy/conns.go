package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// backendTransport is a lean HTTP/1.1 client for one proxy: a keep-alive
// pool per backend address, and the whole exchange (write the request, read
// the response) done on the calling goroutine. http.Transport hands every
// request to a write goroutine and every response to a read goroutine; on a
// loaded two-core machine those handoffs cost more than the proxying itself.
// It supports exactly what ReverseProxy needs: plain HTTP/1.1 to backends,
// request bodies, 1xx interim answers, streaming and chunked responses,
// trailers and protocol upgrades.
type backendTransport struct {
	dialer          net.Dialer
	responseTimeout time.Duration
	maxIdle         int

	mu    sync.Mutex           // guards pools
	pools map[string]*connPool // by backend address
}

type connPool struct {
	mu   sync.Mutex
	idle []*backendConn // most recently used last
}

type backendConn struct {
	addr string
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	used bool // served a request before: may have been closed by the backend meanwhile
}

func newBackendTransport(dialTimeout, responseTimeout time.Duration, maxIdle int) *backendTransport {
	return &backendTransport{
		dialer:          net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		responseTimeout: responseTimeout,
		maxIdle:         maxIdle,
		pools:           make(map[string]*connPool),
	}
}

func (t *backendTransport) pool(addr string) *connPool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pools[addr]
	if p == nil {
		p = &connPool{}
		t.pools[addr] = p
	}
	return p
}

func (t *backendTransport) get(ctx context.Context, addr string) (*backendConn, error) {
	p := t.pool(addr)
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		bc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return bc, nil
	}
	p.mu.Unlock()
	c, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &backendConn{addr: addr, c: c, br: bufio.NewReaderSize(c, 8<<10), bw: bufio.NewWriterSize(c, 8<<10)}, nil
}

func (t *backendTransport) put(bc *backendConn) {
	if t.maxIdle == 0 {
		bc.c.Close()
		return
	}
	bc.used = true
	_ = bc.c.SetDeadline(time.Time{})
	p := t.pool(bc.addr)
	p.mu.Lock()
	if len(p.idle) >= t.maxIdle {
		p.mu.Unlock()
		bc.c.Close()
		return
	}
	p.idle = append(p.idle, bc)
	p.mu.Unlock()
}

// CloseIdle closes every pooled connection.
func (t *backendTransport) CloseIdle() {
	t.mu.Lock()
	pools := make([]*connPool, 0, len(t.pools))
	for _, p := range t.pools {
		pools = append(pools, p)
	}
	t.mu.Unlock()
	for _, p := range pools {
		p.mu.Lock()
		for _, bc := range p.idle {
			bc.c.Close()
		}
		p.idle = nil
		p.mu.Unlock()
	}
}

// errStale marks a pooled connection the backend had closed; the request
// never reached it and goes out again on a fresh connection.
var errStale = errors.New("stale pooled connection")

// RoundTrip sends req (URL.Host is the backend address) and reads the answer.
func (t *backendTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for {
		bc, err := t.get(req.Context(), req.URL.Host)
		if err != nil {
			return nil, err
		}
		resp, err := t.exchange(bc, req)
		if errors.Is(err, errStale) {
			continue
		}
		return resp, err
	}
}

func (t *backendTransport) exchange(bc *backendConn, req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// A client that goes away, or a backend that takes too long, unblocks
	// whatever I/O is pending on the connection by moving its deadline.
	stop := context.AfterFunc(ctx, func() { _ = bc.c.SetDeadline(time.Unix(1, 0)) })
	_ = bc.c.SetDeadline(time.Now().Add(t.responseTimeout))
	fail := func(err error) (*http.Response, error) {
		stop()
		bc.c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := req.Write(bc.bw); err != nil {
		return fail(t.staleOr(bc, req, 0, fmt.Errorf("write request: %w", err)))
	}
	if err := bc.bw.Flush(); err != nil {
		return fail(t.staleOr(bc, req, 0, fmt.Errorf("write request: %w", err)))
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(bc.br, req)
		if err != nil {
			return fail(t.staleOr(bc, req, bc.br.Buffered(), timeoutErr(err, "read response headers")))
		}
		// Interim answers (100 Continue, 103 Early Hints) precede the real one.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		break
	}
	// The body may stream for as long as it likes; the client's context
	// still bounds it.
	_ = bc.c.SetDeadline(time.Time{})
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &upgradedConn{bc: bc, stop: stop}
		return resp, nil
	}
	reusable := !resp.Close && !req.Close
	if resp.Body == http.NoBody || resp.ContentLength == 0 {
		stop()
		if reusable {
			t.put(bc)
		} else {
			bc.c.Close()
		}
		return resp, nil
	}
	resp.Body = &pooledBody{t: t, bc: bc, body: resp.Body, stop: stop, reusable: reusable}
	return resp, nil
}

// staleOr decides whether a failed exchange on a reused connection may be
// repeated: the backend closed the idle connection before it read anything,
// and the request carries no body that might have been consumed.
func (t *backendTransport) staleOr(bc *backendConn, req *http.Request, buffered int, err error) error {
	if bc.used && buffered == 0 && (req.Body == nil || req.Body == http.NoBody) && req.Context().Err() == nil &&
		!isTimeout(err) {
		return errStale
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// timeoutErr keeps a deadline error recognisable as a timeout (504) while
// saying what timed out.
func timeoutErr(err error, what string) error {
	if isTimeout(err) {
		return &respTimeoutError{err}
	}
	return fmt.Errorf("%s: %w", what, err)
}

type respTimeoutError struct{ err error }

func (e *respTimeoutError) Error() string   { return "backend response timeout: " + e.err.Error() }
func (e *respTimeoutError) Unwrap() error   { return e.err }
func (e *respTimeoutError) Timeout() bool   { return true }
func (e *respTimeoutError) Temporary() bool { return false }

// pooledBody returns the connection to the pool once the body has been read
// to its end, and closes it if the reader gives up early.
type pooledBody struct {
	t        *backendTransport
	bc       *backendConn
	body     io.ReadCloser
	stop     func() bool
	reusable bool
	eof      bool
	closed   atomic.Bool
}

func (b *pooledBody) Read(p []byte) (int, error) {
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
	b.stop()
	if b.eof && b.reusable {
		b.t.put(b.bc)
		return nil
	}
	return b.bc.c.Close()
}

// upgradedConn is the backend side of a switched protocol: reads drain what
// the response reader had buffered first.
type upgradedConn struct {
	bc   *backendConn
	stop func() bool
}

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.bc.br.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.bc.c.Write(p) }
func (u *upgradedConn) Close() error {
	u.stop()
	return u.bc.c.Close()
}
