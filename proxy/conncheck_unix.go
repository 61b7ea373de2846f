//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// connCheck tells whether an idle backend connection may carry another
// request: one non-blocking read, which finds nothing (usable), EOF or an
// error (the backend closed or reset it) or unasked data (the stream is out
// of step). A read deadline in the past cannot do this job: the poller
// reports the timeout without ever reading the socket.
type connCheck struct {
	raw syscall.RawConn
	fn  func(fd uintptr) bool // made once per connection, so a check allocates nothing
	ok  bool
	buf [1]byte
}

func (k *connCheck) init(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	k.raw = raw
	k.fn = func(fd uintptr) bool {
		_, err := syscall.Read(int(fd), k.buf[:])
		// The descriptor is non-blocking: EAGAIN means open and quiet.
		k.ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	}
}

// usable runs the check; the caller owns the connection.
func (k *connCheck) usable() bool {
	if k.raw == nil {
		return true
	}
	k.ok = false
	if err := k.raw.Read(k.fn); err != nil {
		return false
	}
	return k.ok
}
