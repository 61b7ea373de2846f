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

	mu    sync.Mutex            // guards conns
	conns map[net.Conn]struct{} // client connections being served, closed on forced shutdown
	wg    sync.WaitGroup
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
// finish before closing them. It returns nil after a shutdown, or the accept
// error that stopped it.
func (p *Proxy) ServeTCP(ctx context.Context, ln net.Listener, grace time.Duration) error {
	f := p.tcp
	if f == nil {
		return errors.New("proxy is in http mode")
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var acceptErr error
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				acceptErr = err
			}
			break
		}
		f.track(c, true)
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

func (f *tcpForwarder) track(c net.Conn, add bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

// drain waits for open connections, then closes whatever is left.
func (f *tcpForwarder) drain(grace time.Duration) {
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	f.mu.Lock()
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
			u.stats.observe(time.Since(start), true)
			skip.Add(i)
			continue
		}
		// A connect is all a TCP proxy can judge a backend by; reporting it
		// now also ends a half-open trial without waiting for a long
		// session to finish.
		u.circuit.Done(trial, true)
		pipe(client, backend, p.cfg.IdleTimeout)
		backend.Close()
		u.inflight.Add(-1)
		u.stats.observe(time.Since(start), false)
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
// A read deadline that passes while the other direction is still active is
// renewed: idleness is judged on the connection as a whole.
func copyHalf(dst, src net.Conn, idle time.Duration, last *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		_ = src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
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
