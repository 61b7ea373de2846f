package backend

import (
	"context"
	"sync"
)

// gate admits at most limit holders at once; the others wait in strict FIFO
// order. A waiter whose context ends leaves the queue without being served.
type gate struct {
	limit int

	// mu guards every field below; it is held only for queue bookkeeping.
	mu      sync.Mutex
	active  int       // holders, including ones just handed a slot
	waiting int       // queued waiters not canceled
	q       []*waiter // FIFO from head; canceled waiters stay until popped
	head    int       // index of the oldest entry in q
	free    []*waiter // recycled waiters
}

// waiter is one queued acquirer. ready is buffered so release can hand over
// a slot without blocking while it holds mu.
type waiter struct {
	ready    chan struct{}
	canceled bool // guarded by gate.mu
}

func newGate(limit int) *gate {
	return &gate{limit: limit}
}

// tryAcquire takes a slot without waiting, if one is free and nobody is
// queued (so a newcomer never overtakes the queue).
func (g *gate) tryAcquire() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.active < g.limit && g.waiting == 0 {
		g.active++
		return true
	}
	return false
}

// wait queues for a slot and blocks until it is handed one (nil) or ctx
// ends (ctx.Err(); no slot is held then). Call it after tryAcquire failed.
func (g *gate) wait(ctx context.Context) error {
	g.mu.Lock()
	if g.active < g.limit && g.waiting == 0 {
		// A slot was released between tryAcquire and now.
		g.active++
		g.mu.Unlock()
		return nil
	}
	var w *waiter
	if n := len(g.free); n > 0 {
		w = g.free[n-1]
		g.free = g.free[:n-1]
	} else {
		w = &waiter{ready: make(chan struct{}, 1)}
	}
	w.canceled = false
	g.push(w)
	g.waiting++
	g.mu.Unlock()

	select {
	case <-w.ready:
		g.recycle(w)
		return nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	select {
	case <-w.ready:
		// Handed a slot just as ctx ended: pass it on.
		g.mu.Unlock()
		g.release()
		g.recycle(w)
		return ctx.Err()
	default:
	}
	// Still queued: mark it so release skips it. It is popped (and
	// dropped, not recycled) when it reaches the head.
	w.canceled = true
	g.waiting--
	g.mu.Unlock()
	return ctx.Err()
}

// release gives a slot back: to the oldest live waiter if there is one,
// else to the pool.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.head < len(g.q) {
		w := g.pop()
		if w.canceled {
			continue
		}
		g.waiting--
		w.ready <- struct{}{} // the slot moves to w; active is unchanged
		return
	}
	g.active--
}

func (g *gate) recycle(w *waiter) {
	g.mu.Lock()
	if len(g.free) < 1024 {
		g.free = append(g.free, w)
	}
	g.mu.Unlock()
}

// push appends w; mu must be held.
func (g *gate) push(w *waiter) {
	if g.head > 0 && g.head >= len(g.q)/2 && len(g.q) == cap(g.q) {
		// Reuse the popped front instead of growing.
		n := copy(g.q, g.q[g.head:])
		clear(g.q[n:])
		g.q = g.q[:n]
		g.head = 0
	}
	g.q = append(g.q, w)
}

// pop removes the oldest entry; mu must be held and the queue non-empty.
func (g *gate) pop() *waiter {
	w := g.q[g.head]
	g.q[g.head] = nil
	g.head++
	if g.head == len(g.q) {
		g.q = g.q[:0]
		g.head = 0
	}
	return w
}
