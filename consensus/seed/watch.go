package seed

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// read is one answer from Consul, already converted.
type read struct {
	backends []Backend // sorted by ID; valid only when invalid == nil
	index    uint64    // X-Consul-Index of the reply
	skipped  []string  // service instances left out, and why
	invalid  error     // the KV document was rejected (wraps ErrInvalidDocument)
	// absent says why Consul has no set for this watcher (the key is missing,
	// the service has no usable instance); hint says what the operator can
	// do. Such a read is never delivered: it is not an instruction to route
	// to nothing.
	absent error
	hint   string
}

// fetchFunc performs one query; waitIndex 0 means a plain read.
type fetchFunc func(ctx context.Context, waitIndex uint64, wait time.Duration) (read, error)

// watch is the blocking-query loop shared by both watchers.
//
// It calls out with the first set read and then only when the set differs
// from the last one delivered. A read without a set (read.absent) is not
// delivered: it is warned about when it starts, again every cfg.Remind
// while it lasts, and when a set is back. A reply with the same or a higher index but
// an equal set is not delivered: a return is no guarantee of a change.
// When X-Consul-Index goes backwards (a Consul snapshot restore) the index
// is reset to 0, so the next query is a plain read; an index of 0 (a proxy
// that drops headers) is treated as 1, so the next query still blocks.
// Queries start at least cfg.MinInterval apart. A failed query (Consul
// unreachable, 403, 500, ...) is logged once and retried after a backoff
// that doubles from cfg.BackoffMin to cfg.BackoffMax; the last delivered set
// stays in force. Only the end of ctx stops the loop, and then it returns nil.
func watch(ctx context.Context, cfg Config, log *slog.Logger, fetch fetchFunc, out func([]Backend)) error {
	var (
		index     uint64
		last      []Backend
		delivered bool
		failures  int
		rejected  string // last document error logged, to log each once
		skipped   string // last skipped-instances list logged
		absent    string // why the last read had no set; "" when it had one
		absentAt  time.Time
		warnedAt  time.Time
	)
	noteSkipped := func(r read) {
		if s := strings.Join(r.skipped, "; "); s != skipped {
			if s != "" {
				log.Warn("consul instances skipped", "index", r.index, "why", s)
			}
			skipped = s
		}
	}
	for {
		began := time.Now()
		r, err := fetch(ctx, index, cfg.WaitTime)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			failures++
			delay := backoff(cfg, failures)
			log.Warn("consul query failed; keeping the last backend set", "attempt", failures, "retry_in", delay, "err", err)
			if !sleep(ctx, delay) {
				return nil
			}
			continue
		}
		if failures > 0 {
			log.Info("consul query succeeded again", "failed_attempts", failures)
			failures = 0
		}

		next := max(r.index, 1)
		if next < index {
			log.Info("consul index went backwards; starting over with a full read", "was", index, "now", r.index)
			next = 0
		}
		index = next

		if r.absent == nil && absent != "" {
			log.Info("consul source found again", "absent_for", time.Since(absentAt).Round(time.Second), "index", r.index)
			absent = ""
		}
		switch {
		case r.invalid != nil:
			if msg := r.invalid.Error(); msg != rejected {
				log.Error("backend document rejected; keeping the last good set", "index", r.index, "err", r.invalid)
				rejected = msg
			}
		case r.absent != nil:
			// A document deleted and written again with the same
			// mistake deserves its own error.
			rejected = ""
			noteSkipped(r)
			now := time.Now()
			msg := r.absent.Error()
			switch {
			case msg != absent:
				if absent == "" {
					absentAt = now
				}
				absent, warnedAt = msg, now
				log.Warn("consul has no backend set; keeping the last one", "why", msg, "fix", r.hint, "index", r.index)
			case now.Sub(warnedAt) >= cfg.Remind:
				warnedAt = now
				log.Warn("consul has no backend set; keeping the last one", "why", msg, "fix", r.hint,
					"absent_for", now.Sub(absentAt).Round(time.Second), "index", r.index)
			}
		default:
			rejected = ""
			noteSkipped(r)
			if !delivered || !slices.Equal(last, r.backends) {
				last, delivered = r.backends, true
				out(slices.Clone(r.backends))
			}
		}

		if !sleep(ctx, cfg.MinInterval-time.Since(began)) {
			return nil
		}
	}
}

// backoff is BackoffMin doubled per failure after the first, capped.
func backoff(cfg Config, failures int) time.Duration {
	d := cfg.BackoffMin
	for i := 1; i < failures && d < cfg.BackoffMax; i++ {
		d *= 2
	}
	return min(d, cfg.BackoffMax)
}

// sleep waits d (nothing when d <= 0) and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
