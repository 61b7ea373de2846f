package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/thebalancer/balancer/consensus"
)

// Errors of the admin API itself; consensus supplies the others. httpError
// maps all of them.
var (
	errBadRequest   = errors.New("bad request")
	errUnauthorized = errors.New("unauthorized")
	errReadOnly     = errors.New("this node has no replicated config")
	errForwardLoop  = errors.New("not the leader, and the write was already forwarded")
	errForward      = errors.New("forward to the leader failed")
)

// errorBody is every error answer: {"error": "..."}, plus the current config
// index when the answer has one (409, 404 from the FSM).
type errorBody struct {
	Error string `json:"error"`
	Index uint64 `json:"index,omitempty"`
	// Outcome tells a client of a 5xx answer whether a retry is safe:
	// "not-applied" (nothing changed) or "unknown" (the write was proposed
	// and may still commit: read the config, or retry with If-Match).
	Outcome string `json:"outcome,omitempty"`
}

// Outcomes of a failed write, for errorBody.Outcome.
const (
	OutcomeNotApplied = "not-applied"
	OutcomeUnknown    = "unknown"
)

// outcomeOf classifies a 5xx answer; 4xx answers change nothing by their
// status alone.
func outcomeOf(err error, status int) string {
	switch {
	case status < 500:
		return ""
	case status == http.StatusServiceUnavailable && !errors.Is(err, consensus.ErrOutcomeUnknown) &&
		!errors.Is(err, errForward) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled):
		return OutcomeNotApplied
	}
	return OutcomeUnknown
}

// httpError is the one place that maps an error to an HTTP status and the
// message the client reads:
//
//	401 errUnauthorized (a write without the right bearer token)
//	413 the body is larger than maxBodyBytes
//	400 errBadRequest (bad JSON, query or header), consensus.ErrInvalid
//	404 consensus.ErrUnknownBackend
//	409 consensus.ErrConflict (If-Match lost a race)
//	503 consensus.ErrNoLeader, ErrNotLeader (not forwarded), ErrClosed,
//	    errReadOnly, errForwardLoop, errForward, an ended context
//	500 anything else
func httpError(err error) (int, string) {
	msg := err.Error()
	var tooLarge *http.MaxBytesError
	switch {
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized, msg
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, "the body is larger than " + strconv.FormatInt(tooLarge.Limit, 10) + " bytes"
	case errors.Is(err, errBadRequest), errors.Is(err, consensus.ErrInvalid):
		return http.StatusBadRequest, msg
	case errors.Is(err, consensus.ErrUnknownBackend):
		return http.StatusNotFound, msg
	case errors.Is(err, consensus.ErrConflict):
		return http.StatusConflict, msg
	case errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrNotLeader),
		errors.Is(err, consensus.ErrClosed), errors.Is(err, errReadOnly),
		errors.Is(err, errForwardLoop), errors.Is(err, errForward):
		return http.StatusServiceUnavailable, msg
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "the change was not confirmed in time, so its outcome is unknown (retry with If-Match to be safe): " + msg
	}
	return http.StatusInternalServerError, msg
}

// writeErr answers err with the status httpError picks. index, when not 0,
// is the current config index (also sent as X-Config-Index).
func writeErr(w http.ResponseWriter, err error, index uint64) {
	status, msg := httpError(err)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="balancer"`)
	}
	if index > 0 {
		w.Header().Set(headerConfigIndex, strconv.FormatUint(index, 10))
	}
	writeJSON(w, status, errorBody{Error: msg, Index: index, Outcome: outcomeOf(err, status)})
}

// invalidError is a value the replicated config would refuse, caught
// before proposing: a 400 like consensus.ErrInvalid, whose message is the
// reason alone.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == consensus.ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{fmt.Sprintf(format, args...)}
}
