package testutil

import (
	"errors"
	"testing"
	"time"
)

// Interval is how often Eventually polls.
const Interval = 10 * time.Millisecond

// Cond is a condition Eventually polls. A func() error holds when it returns
// nil, and its error says what is still missing; a func() bool holds when it
// returns true.
type Cond interface {
	func() error | func() bool
}

// errFalse is what a func() bool condition has to say when it fails.
var errFalse = errors.New("still false")

// Eventually calls cond every Interval until it holds, and returns how long
// that took. When cond still does not hold once within has passed, it fails
// the test with t.Fatalf, naming what and cond's last error. Call it from the
// test's goroutine only.
func Eventually[C Cond](t testing.TB, within time.Duration, what string, cond C) time.Duration {
	t.Helper()
	return EventuallyEvery(t, within, Interval, what, cond)
}

// EventuallyEvery is Eventually polling every every instead of every
// Interval, for a cond that is slow or has effects of its own (a write to a
// real cluster, say).
func EventuallyEvery[C Cond](t testing.TB, within, every time.Duration, what string, cond C) time.Duration {
	t.Helper()
	check := asError(cond)
	start := time.Now()
	deadline := start.Add(within)
	for {
		err := check()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(every)
	}
}

func asError[C Cond](cond C) func() error {
	switch c := any(cond).(type) {
	case func() error:
		return c
	case func() bool:
		return func() error {
			if c() {
				return nil
			}
			return errFalse
		}
	}
	panic("unreachable: Cond has two types")
}
