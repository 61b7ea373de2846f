package node

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// throttle limits warnings and errors that repeat: memberlist and raft log
// one line per malformed packet or connection, so anyone who can reach the
// gossip or raft port could fill the disk with log lines. Up to burst lines
// of one shape pass per window; the last of them says that more are being
// held back, and the next one after the window first reports how many were.
// Over all shapes together at most total lines pass per window, so a flood
// of ever-new shapes is held back too.
type throttle struct {
	inner slog.Handler
	st    *throttleState // shared by the handlers WithAttrs and WithGroup derive
}

type throttleState struct {
	window time.Duration
	burst  int
	total  int
	now    func() time.Time

	mu     sync.Mutex
	shapes map[string]*shapeCount // guarded by mu
	all    shapeCount             // guarded by mu: every shape together
	swept  time.Time              // guarded by mu
}

type shapeCount struct {
	since   time.Time
	passed  int
	dropped int
}

// maxShapes bounds the table. When it is full, shapes not in it share one
// entry until the next sweep drops those whose window is over.
const (
	maxShapes     = 512
	overflowShape = "(other lines)"
)

func newThrottle(inner slog.Handler, window time.Duration, burst, total int) *throttle {
	return &throttle{inner: inner, st: &throttleState{window: window, burst: burst, total: total, now: time.Now,
		shapes: make(map[string]*shapeCount)}}
}

func (h *throttle) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *throttle) WithAttrs(as []slog.Attr) slog.Handler {
	return &throttle{inner: h.inner.WithAttrs(as), st: h.st}
}

func (h *throttle) WithGroup(name string) slog.Handler {
	return &throttle{inner: h.inner.WithGroup(name), st: h.st}
}

// count takes one line of c at now: whether it passes, whether it is the
// last to pass this window, and how many were held back in c's previous
// window (reported once, when that window is over).
func (s *throttleState) count(c *shapeCount, now time.Time, limit int) (pass, last bool, held int) {
	if now.Sub(c.since) >= s.window {
		held = c.dropped
		*c = shapeCount{since: now}
	}
	c.passed++
	pass, last = c.passed <= limit, c.passed == limit
	if !pass {
		c.dropped++
	}
	return pass, last, held
}

// entry returns the count for key, making room by dropping shapes whose
// window is over, or the shared overflow entry when the table stays full.
// Caller holds mu.
func (s *throttleState) entry(key string, now time.Time) (string, *shapeCount) {
	if c := s.shapes[key]; c != nil {
		return key, c
	}
	if len(s.shapes) >= maxShapes && now.Sub(s.swept) >= s.window {
		s.swept = now
		for k, c := range s.shapes {
			if now.Sub(c.since) >= s.window && c.dropped == 0 {
				delete(s.shapes, k)
			}
		}
	}
	if len(s.shapes) >= maxShapes {
		key = overflowShape
		if c := s.shapes[key]; c != nil {
			return key, c
		}
	}
	c := &shapeCount{since: now}
	s.shapes[key] = c
	return key, c
}

func (h *throttle) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.inner.Handle(ctx, r)
	}
	s := h.st
	now := s.now()
	s.mu.Lock()
	key, c := s.entry(shape(r.Message), now)
	pass, last, held := s.count(c, now, s.burst)
	allPass, allLast, allHeld := true, false, 0
	if pass {
		allPass, allLast, allHeld = s.count(&s.all, now, s.total)
		if !allPass {
			c.passed-- // held back by the total: not this shape's doing
		}
	}
	s.mu.Unlock()
	if !pass || !allPass {
		return nil
	}
	for _, sum := range []struct {
		like string
		n    int
	}{{key, held}, {"(all lines)", allHeld}} {
		if sum.n > 0 {
			rec := slog.NewRecord(now, r.Level, "similar log lines were held back", r.PC)
			rec.AddAttrs(slog.String("like", sum.like), slog.Int("count", sum.n), slog.Duration("within", s.window))
			if err := h.inner.Handle(ctx, rec); err != nil {
				return err
			}
		}
	}
	if last || allLast {
		r = r.Clone()
		r.AddAttrs(slog.String("throttled", "more lines like this are held back for "+s.window.String()))
	}
	return h.inner.Handle(ctx, r)
}

// shape is what stays the same when a library repeats a complaint: the
// first four words of the message, digits folded, each word cut to 24
// bytes. Messages begin with their format string's literal text; what
// follows (addresses, checksums, names a sender chose) varies and is
// left out.
func shape(msg string) string {
	var b []byte
	words := 0
	for i := 0; i < len(msg) && words < 4; {
		for i < len(msg) && msg[i] == ' ' {
			i++
		}
		if i == len(msg) {
			break
		}
		if words > 0 {
			b = append(b, ' ')
		}
		n := 0
		for ; i < len(msg) && msg[i] != ' '; i++ {
			c := msg[i]
			switch {
			case n >= 24:
				continue
			case c >= '0' && c <= '9':
				if n == 0 || b[len(b)-1] != '#' {
					b = append(b, '#')
					n++
				}
				continue
			case c >= 0x80 || c < 0x20:
				c = '?' // keep the key printable and valid UTF-8
			}
			b = append(b, c)
			n++
		}
		words++
	}
	return string(b)
}
