package consensus

import (
	"errors"
	"fmt"
)

// Contract errors. Match them with errors.Is; the admin API maps them to HTTP
// status codes in one place:
//
//	ErrInvalid        400  the command is malformed or out of range; nothing changed
//	ErrUnknownBackend 404  the command names a backend that does not exist; nothing changed
//	ErrConflict       409  a conditional write (Command.IfIndex) lost a race; nothing changed
//	ErrNotLeader      --   this node is not the leader: forward to Store.Leader() (or 503 if that fails)
//	ErrNoLeader       503  no leader or no quorum; the write may be retried later
//
// ErrNoLeader also covers the cases where a write was proposed but its outcome
// is unknown (leadership lost before commit, the caller's deadline passed, the
// store shut down); then errors.Is also matches ErrOutcomeUnknown and the
// cause (raft.ErrLeadershipLost, context.DeadlineExceeded, ErrClosed). Without
// ErrOutcomeUnknown the write was not applied. Make retries of unknown
// outcomes idempotent with Command.If.
var (
	ErrInvalid        = errors.New("invalid command")
	ErrUnknownBackend = errors.New("unknown backend")
	ErrConflict       = errors.New("conflict: the config changed")
	ErrNotLeader      = errors.New("not the raft leader")
	ErrNoLeader       = errors.New("no raft leader (no quorum or election in progress)")
	ErrClosed         = errors.New("consensus store closed")
	// ErrOutcomeUnknown marks a failed write that was proposed to raft and
	// may still commit: a client cannot tell whether it happened.
	ErrOutcomeUnknown = errors.New("outcome unknown")
)

// ErrNoTLS is returned by Store.SetTLS on a store that runs raft over
// plain TCP.
var ErrNoTLS = errors.New("raft runs over plain TCP: no TLS setting to replace")

// ErrPeerTLS is returned by AddVoter when the new server fails the raft
// mutual TLS handshake (its certificate is from another CA, does not name
// its address or is no node certificate, it refuses this node's
// certificate, or it speaks plain TCP): it is not added. A server that
// cannot be reached at all fails AddVoter with an error that does not
// match ErrPeerTLS.
var ErrPeerTLS = errors.New("peer failed the raft TLS handshake")

// invalidError is a command refused as malformed or out of range. Its
// message is the reason alone ("weight 1001: ..."), because it reaches API
// clients and the command line as it is; it still matches ErrInvalid.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{fmt.Sprintf(format, args...)}
}
