package main

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestExplainTLSHints: the client-certificate hint is for an HTTPS node
// hanging up on a client without one, not for a node that is slow,
// unreachable or failing in some other way.
func TestExplainTLSHints(t *testing.T) {
	get := func(err error) error {
		return &url.Error{Op: "Get", URL: "https://127.0.0.1:9091/v1/members", Err: err}
	}
	const hint = "may require a client certificate"
	for _, tc := range []struct {
		name string
		err  error
		hint bool
	}{
		{"reset after the handshake", get(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), true},
		{"broken pipe", get(&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}), true},
		{"bad certificate alert", get(errors.New("remote error: tls: bad certificate")), true},
		{"EOF", get(errors.New("EOF")), true},
		{"client deadline", get(context.DeadlineExceeded), false},
		{"read timeout", get(&net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}), false},
		{"connection refused", get(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), false},
		{"unrelated", get(errors.New("invalid character 'x' looking for beginning of value")), false},
	} {
		c := &adminConn{addr: "https://127.0.0.1:9091", ca: "ca.pem"}
		got := strings.Contains(c.explain(tc.err).Error(), hint)
		if got != tc.hint {
			t.Errorf("%s: %v; hint %v, want %v", tc.name, c.explain(tc.err), got, tc.hint)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
