package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds on refusing a connection over the limit politely (HTTP mode).
const (
	// maxRefusing bounds the over-limit connections being answered at
	// once; beyond it they are closed without an answer, so that a flood
	// costs no more than this many short-lived goroutines.
	maxRefusing = 64
	// refuseReadTime is how long a refusal waits for the request head, so
	// that the answer follows the request instead of racing it.
	refuseReadTime = 200 * time.Millisecond
	// refuseLinger is how long a refusal reads (and drops) what the client
	// still sends after the answer, so that closing does not reset the
	// connection before the client has read the answer.
	refuseLinger = 500 * time.Millisecond
)

// Limit wraps the traffic listener so that at most Config.MaxConns client
// connections are open at once. Over the limit, an HTTP-mode connection is
// answered 503 with "Connection: close" and a JSON body saying the node is
// at its limit, and a TCP-mode connection is closed at once; either way it
// is counted (ConnsRefused) and never reaches the proxy. MaxConns 0 means no
// limit. Serve or ServeTCP the returned listener; closing it closes ln.
func (p *Proxy) Limit(ln net.Listener) net.Listener {
	if p.cfg.MaxConns <= 0 {
		return &limitListener{Listener: ln, p: p}
	}
	return &limitListener{Listener: ln, p: p, max: int64(p.cfg.MaxConns)}
}

// ConnsOpen is the number of client connections open through Limit's listener.
func (p *Proxy) ConnsOpen() int64     { return p.connsOpen.Load() }
func (p *Proxy) ConnsRefused() uint64 { return p.connsRefused.Load() }

type limitListener struct {
	net.Listener
	p   *Proxy
	max int64 // 0: count only

	refusing atomic.Int64   // refusals in progress
	wg       sync.WaitGroup // refusals in progress, for Close
}

// Accept returns the next connection within the limit; those over it are
// refused here and never returned.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := l.p.connsOpen.Add(1); l.max > 0 && n > l.max {
			l.p.connsOpen.Add(-1)
			l.p.connsRefused.Add(1)
			l.refuse(c)
			continue
		}
		return &limitedConn{Conn: c, open: &l.p.connsOpen}, nil
	}
}

// Close closes the listener and waits for refusals in progress, which end
// within refuseReadTime + refuseLinger.
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.wg.Wait()
	return err
}

func (l *limitListener) refuse(c net.Conn) {
	// A TCP stream has no way to say why: closing at once is the clearest
	// refusal it has. An HTTP client gets an answer while few are pending.
	if l.p.cfg.Mode == ModeTCP {
		c.Close()
		return
	}
	if l.refusing.Add(1) > maxRefusing {
		l.refusing.Add(-1)
		c.Close()
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer l.refusing.Add(-1)
		refuseHTTP(c, l.max)
	}()
}

// refuseHTTP answers one over-limit HTTP connection with a 503 and closes
// it the way net/http does after an error: answer, half-close, linger.
func refuseHTTP(c net.Conn, max int64) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(refuseReadTime))
	br := bufio.NewReaderSize(c, 1024)
	// Read up to the end of the request head, or whatever came in time.
	for {
		line, err := br.ReadSlice('\n')
		if err != nil || len(bytes.TrimSpace(line)) == 0 {
			break
		}
	}
	body := fmt.Sprintf("{\"error\":\"node at its connection limit (%d open); retry shortly or use another node\"}\n", max)
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(refuseLinger))
	var buf [512]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}

// limitedConn gives its slot back when closed, once.
type limitedConn struct {
	net.Conn
	open   *atomic.Int64
	closed atomic.Bool
}

func (c *limitedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.open.Add(-1)
	}
	return c.Conn.Close()
}

// CloseWrite half-closes, as the TCP proxy and net/http expect of a TCP conn.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
