package node

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// throttle limits warnings and errors that repeat with only numbers
// changing: memberlist and raft log one ERROR line per malformed packet or
// connection, so anyone who can reach the gossip or raft port could fill the
// disk with log lines. Up to burst lines of one shape pass per window; the
// last of them says that more are being held back, and the next one after
// the window first reports how many were.
type throttle struct {
	inner slog.Handler
	st    *throttleState // shared by the handlers WithAttrs and WithGroup derive
}

type throttleState struct {
	window time.Duration
	burst  int
	now    func() time.Time

	mu     sync.Mutex
	shapes map[string]*shapeCount // guarded by mu
}

type shapeCount struct {
	since   time.Time
	passed  int
	dropped int
}

// maxShapes bounds the table; a flood of distinct shapes resets it, which
// at worst lets another burst of each through.
const maxShapes = 512

func newThrottle(inner slog.Handler, window time.Duration, burst int) *throttle {
	return &throttle{inner: inner, st: &throttleState{window: window, burst: burst, now: time.Now,
		shapes: make(map[string]*shapeCount)}}
}

func (h *throttle) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *throttle) WithAttrs(as []slog.Attr) slog.Handler {
	return &throttle{inner: h.inner.WithAttrs(as), st: h.st}
}

func (h *throttle) WithGroup(name string) slog.Handler {
	return &throttle{inner: h.inner.WithGroup(name), st: h.st}
}

func (h *throttle) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.inner.Handle(ctx, r)
	}
	key := shape(r.Message)
	s := h.st
	now := s.now()
	s.mu.Lock()
	c := s.shapes[key]
	if c == nil {
		if len(s.shapes) >= maxShapes {
			clear(s.shapes)
		}
		c = &shapeCount{since: now}
		s.shapes[key] = c
	}
	held := 0
	if now.Sub(c.since) >= s.window {
		held = c.dropped
		*c = shapeCount{since: now}
	}
	c.passed++
	pass, last := c.passed <= s.burst, c.passed == s.burst
	if !pass {
		c.dropped++
	}
	s.mu.Unlock()
	if !pass {
		return nil
	}
	if held > 0 {
		sum := slog.NewRecord(now, r.Level, "similar log lines were held back", r.PC)
		sum.AddAttrs(slog.String("like", key), slog.Int("count", held), slog.Duration("within", s.window))
		if err := h.inner.Handle(ctx, sum); err != nil {
			return err
		}
	}
	if last {
		r = r.Clone()
		r.AddAttrs(slog.String("throttled", "more lines like this are held back for "+s.window.String()))
	}
	return h.inner.Handle(ctx, r)
}

// shape is a message with its digit runs folded, cut to 80 bytes: the same
// complaint about another address, port or message type is the same line.
func shape(msg string) string {
	b := make([]byte, 0, min(len(msg), 80))
	for i := 0; i < len(msg) && len(b) < 80; i++ {
		c := msg[i]
		if c >= '0' && c <= '9' {
			if len(b) == 0 || b[len(b)-1] != '#' {
				b = append(b, '#')
			}
			continue
		}
		b = append(b, c)
	}
	return string(b)
}
