package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thebalancer/balancer/proxy/pick"
)

// tcpForwarder is the TCP mode: one backend connection per client
// connection, bytes copied both ways, each side half-closed when the other
// finishes sending.
type tcpForwarder struct {
	p      *Proxy
	dialer net.Dialer

	mu      sync.Mutex            // guards conns and closing
	conns   map[net.Conn]struct{} // client and backend connections being served, closed on forced shutdown
	closing bool                  // the grace has ended: connections are closed as they come
	wg      sync.WaitGroup
}

func newTCPForwarder(p *Proxy) *tcpForwarder {
	return &tcpForwarder{
		p:      p,
		dialer: net.Dialer{Timeout: p.cfg.DialTimeout, KeepAlive: 30 * time.Second},
		conns:  make(map[net.Conn]struct{}),
	}
}

// ServeTCP accepts connections on ln and proxies each to a backend until ctx
// ends. Then it stops accepting and waits up to grace for open connections to
// finish before closing them (both sides). Failed accepts (out of file
// descriptors, say) are retried with a backoff from 5 ms to 1 s, as
// http.Server does. It returns nil after a shutdown, or net.ErrClosed when
// someone else closed ln.
func (p *Proxy) ServeTCP(ctx context.Context, ln net.Listener, grace time.Duration) error {
	f := p.tcp
	if f == nil {
		return errors.New("proxy is in http mode")
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var acceptErr error
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, net.ErrClosed) {
				acceptErr = err
				break
			}
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff *= 2; backoff > time.Second {
				backoff = time.Second
			}
			p.log.Warn("tcp accept failed; retrying", "err", err, "in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			continue
		}
		backoff = 0
		if !f.track(c, true) {
			c.Close()
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.track(c, false)
			f.serve(ctx, c)
		}()
	}
	f.drain(grace)
	return acceptErr
}

// track adds or removes a connection that a forced shutdown must close. It
// reports false, for an add, once the shutdown has begun closing: the caller
// closes the connection itself.
func (f *tcpForwarder) track(c net.Conn, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !add {
		delete(f.conns, c)
		return true
	}
	if f.closing {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

// drain waits for open connections, then closes whatever is left: client
// and backend sides, so no copy stays blocked on a peer that neither reads
// nor writes.
func (f *tcpForwarder) drain(grace time.Duration) {
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	f.mu.Lock()
	f.closing = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	<-done
}

func (f *tcpForwarder) serve(ctx context.Context, client net.Conn) {
	defer client.Close()
	p := f.p
	t := p.tab.Load()
	var skip pick.Skip
	for attempt := 0; attempt < p.cfg.MaxTries; attempt++ {
		i, trial, err := p.choose(t, &skip)
		if err != nil {
			p.rejected.Add(1)
			p.log.Debug("tcp connection refused", "client", client.RemoteAddr().String(), "err", err)
			return
		}
		u := t.ups[i]
		u.inflight.Add(1)
		start := time.Now()
		backend, err := f.dialer.DialContext(ctx, "tcp", u.addr)
		if err != nil {
			u.inflight.Add(-1)
			u.circuit.Done(trial, false)
			u.stats.observe(time.Since(start), failureOf(err))
			skip.Add(i)
			continue
		}
		// A connect is all a TCP proxy can judge a backend by; reporting it
		// now also ends a half-open trial without waiting for a long
		// session to finish.
		u.circuit.Done(trial, true)
		if f.track(backend, true) {
			pipe(client, backend, p.cfg.IdleTimeout)
			f.track(backend, false)
		}
		backend.Close()
		u.inflight.Add(-1)
		u.stats.observe(time.Since(start), NoFailure)
		return
	}
	p.rejected.Add(1)
}

// pipe copies both ways until both directions are finished or the
// connection has been idle (no bytes either way) for idle.
func pipe(client, backend net.Conn, idle time.Duration) {
	var last atomic.Int64 // unix nanos of the latest byte in either direction
	last.Store(time.Now().UnixNano())
	done := make(chan struct{}, 1)
	go func() {
		copyHalf(backend, client, idle, &last)
		done <- struct{}{}
	}()
	copyHalf(client, backend, idle, &last)
	<-done
}

// copyHalf copies src to dst, then half-closes dst so its reader sees EOF.
// A read or write deadline that passes while the other direction is still
// active is renewed: idleness is judged on the connection as a whole, and a
// write the peer does not take counts as idle time, so a client that
// half-closes and then stops reading is cut off too.
func copyHalf(dst, src net.Conn, idle time.Duration, last *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		_ = src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if !writeAll(dst, buf[:n], idle, last) {
				// Reset or idle: tear down both directions now.
				src.Close()
				dst.Close()
				return
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, last.Load())) < idle {
				continue
			}
			if !errors.Is(err, io.EOF) {
				// Reset or idle: tear down both directions now.
				src.Close()
				dst.Close()
				return
			}
			break
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		dst.Close()
	}
}

// writeAll writes p to dst with a write deadline idle ahead, renewed while
// the connection as a whole is active. It reports false when dst failed or
// the connection went idle.
func writeAll(dst net.Conn, p []byte, idle time.Duration, last *atomic.Int64) bool {
	for len(p) > 0 {
		_ = dst.SetWriteDeadline(time.Now().Add(idle))
		n, err := dst.Write(p)
		p = p[n:]
		if n > 0 {
			last.Store(time.Now().UnixNano())
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, last.Load())) < idle {
				continue
			}
			return false
		}
	}
	return true
}
