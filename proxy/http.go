package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
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
}

func newHTTPForwarder(p *Proxy) *httpForwarder {
	f := &httpForwarder{
		p:         p,
		transport: newBackendTransport(p.cfg.DialTimeout, p.cfg.ResponseTimeout, p.cfg.MaxIdlePerBackend),
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

// ServeHTTP proxies one client request. It is the handler of the traffic listener in HTTP mode.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.http == nil {
		http.Error(w, "proxy is in tcp mode", http.StatusInternalServerError)
		return
	}
	p.http.rp.ServeHTTP(w, r)
}

// RoundTrip sends one proxied request to a backend, retrying connect
// failures on other backends while nothing of the request has been sent.
func (f *httpForwarder) RoundTrip(req *http.Request) (*http.Response, error) {
	p := f.p
	t := p.tab.Load()
	var body *replayBody
	if req.Body != nil && req.Body != http.NoBody {
		// http.Transport closes the body on a dial error; shield it so that
		// a retry can still send it, and remember whether any was read.
		body = &replayBody{rc: req.Body}
		req.Body = body
	}
	var skip pick.Skip
	var lastErr error
	for attempt := 0; attempt < p.cfg.MaxTries; attempt++ {
		i, trial, err := p.choose(t, &skip)
		if err != nil {
			if lastErr != nil {
				err = errors.Join(err, lastErr)
			}
			return nil, err
		}
		u := t.ups[i]
		req.URL.Host = u.addr
		u.inflight.Add(1)
		start := time.Now()
		resp, err := f.transport.RoundTrip(req)
		if err != nil {
			u.inflight.Add(-1)
			if req.Context().Err() != nil {
				u.circuit.Cancel(trial)
				return nil, err
			}
			u.circuit.Done(trial, false)
			u.stats.observe(time.Since(start), true)
			if isDialError(err) && (body == nil || !body.read.Load()) {
				skip.Add(i)
				lastErr = err
				continue
			}
			return nil, err
		}
		failed := resp.StatusCode >= 500
		orig := resp.Body
		var b *countedBody
		if rwc, ok := orig.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
			c := &countedConn{w: rwc}
			b, resp.Body = &c.countedBody, c
		} else {
			b = &countedBody{}
			resp.Body = b
		}
		b.u, b.trial, b.failed, b.start, b.ctx, b.rc = u, trial, failed, start, req.Context(), orig
		return resp, nil
	}
	return nil, errors.Join(ErrNoBackend, lastErr)
}

// countedBody holds a backend's in-flight slot until the response body is
// closed, which ReverseProxy does on every path (done, client abort, error),
// so the count comes back down however the request ends.
type countedBody struct {
	u      *upstream
	trial  bool
	failed bool
	start  time.Time
	ctx    context.Context
	rc     io.ReadCloser
	done   atomic.Bool
}

func (b *countedBody) Read(p []byte) (int, error) { return b.rc.Read(p) }

func (b *countedBody) Close() error {
	err := b.rc.Close()
	if b.done.CompareAndSwap(false, true) {
		b.u.inflight.Add(-1)
		b.u.stats.observe(time.Since(b.start), b.failed)
		if b.ctx.Err() != nil && !b.failed {
			// The client went away before the body was through: that says
			// nothing about the backend's health.
			b.u.circuit.Cancel(b.trial)
		} else {
			b.u.circuit.Done(b.trial, !b.failed)
		}
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

// replayBody lets a request body survive a failed dial so it can be sent to
// the next backend; Close is left to the server, which closes the incoming
// body once the handler returns.
type replayBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (b *replayBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *replayBody) Close() error { return nil }

// writeError answers a request that could not be proxied. It is the one
// place where proxy errors become status codes.
func (f *httpForwarder) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		// The client is gone; nobody reads an answer.
		return
	}
	status := http.StatusBadGateway
	var ne net.Error
	switch {
	case errors.Is(err, ErrNoBackend):
		status = http.StatusServiceUnavailable
		f.p.rejected.Add(1)
	case errors.As(err, &ne) && ne.Timeout():
		status = http.StatusGatewayTimeout
	}
	WriteJSONError(w, status, err.Error())
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

// CloseIdle drops pooled backend connections; called on shutdown.
func (p *Proxy) CloseIdle() {
	if p.http != nil {
		p.http.transport.CloseIdle()
	}
}
