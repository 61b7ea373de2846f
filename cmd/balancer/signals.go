package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

// signalWatch turns the process's stop signals into a context. The first
// SIGINT or SIGTERM ends the context, so the command stops gracefully (an
// agent drains for up to -shutdown-timeout); a second one exits at once,
// because someone pressing Ctrl-C twice does not want to wait out a drain.
// With hangup, SIGHUP is caught: Go's default for it is to die on the
// spot, with no drain, no gossip leave and no leadership handover. It runs
// the command's hangup hook (the agent rereads its TLS files), or is
// logged and ignored before there is one.
type signalWatch struct {
	stderr io.Writer
	log    atomic.Pointer[slog.Logger] // set by a command with its own log (the agent)
	hup    atomic.Pointer[func()]      // set by a command that reloads on SIGHUP (the agent)
	ch     chan os.Signal
	done   chan struct{}
	exit   func(code int)
}

type signalWatchKey struct{}

func watchSignals(stderr io.Writer, hangup bool, exit func(int)) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	w := &signalWatch{stderr: stderr, ch: make(chan os.Signal, 2), done: make(chan struct{}), exit: exit}
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if hangup {
		sigs = append(sigs, syscall.SIGHUP)
	}
	signal.Notify(w.ch, sigs...)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		w.loop(cancel)
	}()
	stop := func() {
		signal.Stop(w.ch)
		close(w.done)
		<-finished
		cancel()
	}
	return context.WithValue(ctx, signalWatchKey{}, w), stop
}

func (w *signalWatch) loop(cancel context.CancelFunc) {
	stopping := false
	for {
		select {
		case <-w.done:
			return
		case s := <-w.ch:
			switch {
			case s == syscall.SIGHUP:
				// Run here, not in a goroutine of its own: a reload
				// reads a few small files, and two SIGHUPs in a row
				// then reload one after the other.
				if f := w.hup.Load(); f != nil {
					(*f)()
				} else {
					w.say(slog.LevelWarn, "SIGHUP ignored: the agent is still starting")
				}
			case !stopping:
				stopping = true
				w.say(slog.LevelInfo, fmt.Sprintf("%s: stopping gracefully; send SIGINT or SIGTERM again to exit at once", sigName(s)))
				cancel()
			default:
				w.say(slog.LevelWarn, fmt.Sprintf("second signal (%s): exiting now", sigName(s)))
				w.exit(1)
				return
			}
		}
	}
}

// say reports through the command's log when it has one, else as a plain
// line like the other errors main prints.
func (w *signalWatch) say(level slog.Level, msg string) {
	if l := w.log.Load(); l != nil {
		l.Log(context.Background(), level, msg)
		return
	}
	fmt.Fprintln(w.stderr, "balancer: "+msg)
}

// logSignalsTo makes the signal watcher of ctx, if any, report through log,
// so that its lines match the rest of a command's log (text or JSON).
func logSignalsTo(ctx context.Context, log *slog.Logger) {
	if w, ok := ctx.Value(signalWatchKey{}).(*signalWatch); ok {
		w.log.Store(log)
	}
}

// onHangup makes the signal watcher of ctx, if any, call f on SIGHUP,
// from its own goroutine, one call at a time.
func onHangup(ctx context.Context, f func()) {
	if w, ok := ctx.Value(signalWatchKey{}).(*signalWatch); ok {
		w.hup.Store(&f)
	}
}

func sigName(s os.Signal) string {
	switch s {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}
