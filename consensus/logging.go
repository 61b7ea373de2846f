package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// slogLogger adapts raft's hclog output to the node's *slog.Logger. It drops
// records below its level (Info by default, so raft's DEBUG chatter never
// reaches the log) and records the hclog name as the "logger" attribute.
type slogLogger struct {
	l     *slog.Logger
	name  string
	args  []any         // implied args from With
	level *atomic.Int32 // shared by every logger derived from the same root
}

var _ hclog.Logger = (*slogLogger)(nil)

func newHCLogger(l *slog.Logger, name string, level hclog.Level) *slogLogger {
	lv := new(atomic.Int32)
	lv.Store(int32(level))
	return &slogLogger{l: l, name: name, level: lv}
}

func slogLevel(l hclog.Level) slog.Level {
	switch {
	case l <= hclog.Trace:
		return slog.LevelDebug - 4
	case l == hclog.Debug:
		return slog.LevelDebug
	case l == hclog.Info:
		return slog.LevelInfo
	case l == hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (s *slogLogger) enabled(l hclog.Level) bool {
	min := hclog.Level(s.level.Load())
	if l == hclog.NoLevel || l == hclog.Off || min == hclog.Off || l < min {
		return false
	}
	return s.l.Enabled(context.Background(), slogLevel(l))
}

func (s *slogLogger) Log(level hclog.Level, msg string, args ...any) {
	level = demote(level, msg, args)
	if !s.enabled(level) {
		return
	}
	all := make([]any, 0, 2+len(s.args)+len(args))
	if s.name != "" {
		all = append(all, "logger", s.name)
	}
	all = append(all, s.args...)
	for _, a := range args {
		// raft passes some values as hclog.Fmt(format, args...), which
		// hclog renders itself; slog would print the raw slice.
		if f, ok := a.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				a = fmt.Sprintf(format, f[1:]...)
			}
		}
		all = append(all, a)
	}
	s.l.Log(context.Background(), slogLevel(level), msg, all...)
}

func (s *slogLogger) Trace(msg string, args ...any) { s.Log(hclog.Trace, msg, args...) }
func (s *slogLogger) Debug(msg string, args ...any) { s.Log(hclog.Debug, msg, args...) }
func (s *slogLogger) Info(msg string, args ...any)  { s.Log(hclog.Info, msg, args...) }
func (s *slogLogger) Warn(msg string, args ...any)  { s.Log(hclog.Warn, msg, args...) }
func (s *slogLogger) Error(msg string, args ...any) { s.Log(hclog.Error, msg, args...) }
func (s *slogLogger) IsTrace() bool                 { return s.enabled(hclog.Trace) }
func (s *slogLogger) IsDebug() bool                 { return s.enabled(hclog.Debug) }
func (s *slogLogger) IsInfo() bool                  { return s.enabled(hclog.Info) }
func (s *slogLogger) IsWarn() bool                  { return s.enabled(hclog.Warn) }
func (s *slogLogger) IsError() bool                 { return s.enabled(hclog.Error) }
func (s *slogLogger) ImpliedArgs() []any            { return s.args }
func (s *slogLogger) Name() string                  { return s.name }
func (s *slogLogger) SetLevel(l hclog.Level)        { s.level.Store(int32(l)) }
func (s *slogLogger) GetLevel() hclog.Level         { return hclog.Level(s.level.Load()) }

func (s *slogLogger) With(args ...any) hclog.Logger {
	c := *s
	c.args = append(append([]any(nil), s.args...), args...)
	return &c
}

func (s *slogLogger) Named(name string) hclog.Logger {
	c := *s
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	return &c
}

func (s *slogLogger) ResetNamed(name string) hclog.Logger {
	c := *s
	c.name = name
	return &c
}

func (s *slogLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(s.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer for libraries that log through the
// standard log package: each line becomes one record, at the level of its
// "[WARN]"-style prefix (Info without one, or opts.ForceLevel).
func (s *slogLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	force := hclog.NoLevel
	if opts != nil {
		force = opts.ForceLevel
	}
	return stdWriter{l: s, force: force}
}

type stdWriter struct {
	l     *slogLogger
	force hclog.Level
}

func (w stdWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg := strings.TrimSpace(string(line))
		level := hclog.Info
		for _, pre := range []struct {
			tag   string
			level hclog.Level
		}{{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
			{"[WARN]", hclog.Warn}, {"[ERR]", hclog.Error}, {"[ERROR]", hclog.Error}} {
			if rest, ok := strings.CutPrefix(msg, pre.tag); ok {
				msg, level = strings.TrimSpace(rest), pre.level
				break
			}
		}
		if w.force != hclog.NoLevel {
			level = w.force
		}
		w.l.Log(level, msg)
	}
	return len(p), nil
}

// demote lowers the level of raft messages that report expected states as
// errors: a snapshot request with nothing new (the node snapshots after
// every change, and on close), and a node without a configuration that
// skips elections while it waits to be bootstrapped or added.
func demote(level hclog.Level, msg string, args []any) hclog.Level {
	switch msg {
	case "failed to take snapshot":
		for _, a := range args {
			if err, ok := a.(error); ok && errors.Is(err, raft.ErrNothingNewToSnapshot) {
				return hclog.Debug
			}
		}
	case "no known peers, aborting election":
		return hclog.Debug
	}
	return level
}
