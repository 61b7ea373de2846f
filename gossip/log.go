package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// newStdLogger returns the *log.Logger memberlist writes to. Each line
// memberlist prints ("[WARN] memberlist: text") becomes one slog record at
// the matching level with attribute component=memberlist, so nothing reaches
// stderr raw.
func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l: l.With("component", "memberlist")}, "", 0)
}

type slogWriter struct{ l *slog.Logger }

// Write handles one log line. log.Logger serialises calls, and memberlist
// logs from its own goroutines (sometimes under its locks), so the only cost
// here is the handler's.
func (w slogWriter) Write(p []byte) (int, error) {
	level, msg := parseLevel(bytes.TrimRight(p, "\r\n"))
	if bytes.Contains(msg, []byte(otherCluster)) {
		// memberlist logs every alive message and merge the cluster check
		// refuses; the check itself warns once per peer.
		level = min(level, slog.LevelDebug)
	}
	ctx := context.Background()
	if w.l.Enabled(ctx, level) {
		msg = bytes.TrimPrefix(msg, []byte("memberlist: "))
		w.l.Log(ctx, level, string(msg))
	}
	return len(p), nil
}

// parseLevel splits memberlist's "[LEVEL] " prefix off a line. Unknown or
// missing prefixes log at Info.
func parseLevel(line []byte) (slog.Level, []byte) {
	if len(line) == 0 || line[0] != '[' {
		return slog.LevelInfo, line
	}
	end := bytes.IndexByte(line, ']')
	if end < 0 {
		return slog.LevelInfo, line
	}
	level := slog.LevelInfo
	switch string(line[1:end]) {
	case "TRACE", "DEBUG":
		level = slog.LevelDebug
	case "INFO":
		level = slog.LevelInfo
	case "WARN", "WARNING":
		level = slog.LevelWarn
	case "ERR", "ERROR":
		level = slog.LevelError
	default:
		return slog.LevelInfo, line
	}
	return level, bytes.TrimLeft(line[end+1:], " ")
}
