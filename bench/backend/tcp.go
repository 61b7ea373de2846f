package backend

import (
	"errors"
	"net"
	"time"
)

// acceptTCP accepts connections until the listener is closed, serving each
// on its own goroutine counted in s.wg. It runs on Run's serve goroutine and
// returns the error that stopped it.
func (s *Server) acceptTCP() error {
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: back off like
				// net/http does, but give up when the server stops.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				if !s.sleep(s.base, backoff) {
					return net.ErrClosed
				}
				continue
			}
			return err
		}
		backoff = 0
		if !s.track(c) {
			continue
		}
		s.wg.Add(1)
		go s.serveTCP(c)
	}
}

// isTemporary reports errors that net/http's accept loop also retries.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// serveTCP serves one connection: it waits for a worker, holds it for the
// service time, greets with the name (or, with probability FailRate, closes
// without a word), then echoes until the client half-closes, closes its own
// write side and closes. A connection still queued when the server is
// killed is closed unserved. While queued, a client that goes away is not
// noticed; its connection is served (to nobody) when its turn comes.
func (s *Server) serveTCP(c net.Conn) {
	defer s.wg.Done()
	defer s.untrack(c)
	if !s.acquire(s.base) {
		s.canceled.Add(1)
		return
	}
	defer s.release()
	if !s.sleep(s.base, s.serviceTime()) {
		s.canceled.Add(1)
		return
	}
	if s.shouldFail() {
		s.served.Add(1)
		s.failed.Add(1)
		return
	}
	if _, err := c.Write(s.nameBody); err != nil {
		s.canceled.Add(1)
		return
	}
	if err := s.echo(c, c); err != nil {
		s.canceled.Add(1)
		return
	}
	closeWrite(c)
	s.served.Add(1)
}
