package backend

import (
	"context"
	"testing"

	"github.com/thebalancer/balancer/internal/testutil"
)

// lockedWaiting reads the live queue length.
func (g *gate) lockedWaiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}

func TestGateFIFO(t *testing.T) {
	g := newGate(1)
	if !g.tryAcquire() {
		t.Fatal("first tryAcquire failed")
	}
	if g.tryAcquire() {
		t.Fatal("second tryAcquire succeeded with limit 1")
	}

	const n = 5
	order := make(chan int, n)
	ctxs := make([]context.CancelFunc, n)
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[i] = cancel
		go func() {
			if g.wait(ctx) != nil {
				order <- -i - 1 // left the queue
				return
			}
			order <- i
		}()
		// Queue them in a known order.
		testutil.Eventually(t, testTimeout, "waiter queued", func() bool { return g.lockedWaiting() == i+1 })
	}
	// Waiter 1 gives up; the others are served oldest first, each holding
	// the single slot until the test releases it.
	ctxs[1]()
	if got := <-order; got != -2 {
		t.Fatalf("got %d, want waiter 1 to leave", got)
	}
	for _, want := range []int{0, 2, 3, 4} {
		g.release()
		if got := <-order; got != want {
			t.Fatalf("served %d, want %d", got, want)
		}
	}
	g.release()
	g.mu.Lock()
	active, waiting, queued := g.active, g.waiting, len(g.q)-g.head
	g.mu.Unlock()
	if active != 0 || waiting != 0 || queued != 0 {
		t.Fatalf("after all releases active=%d waiting=%d queued=%d", active, waiting, queued)
	}
	for _, cancel := range ctxs {
		cancel()
	}
}

func TestGateNoOvertaking(t *testing.T) {
	g := newGate(2)
	g.tryAcquire()
	g.tryAcquire()
	done := make(chan struct{})
	go func() {
		_ = g.wait(context.Background())
		close(done)
	}()
	testutil.Eventually(t, testTimeout, "waiter queued", func() bool { return g.lockedWaiting() == 1 })
	g.release() // goes to the waiter, not to a newcomer
	<-done
	if g.tryAcquire() {
		t.Fatal("newcomer got a slot that was handed to the queue")
	}
}

func BenchmarkGateUncontended(b *testing.B) {
	g := newGate(4)
	for b.Loop() {
		if !g.tryAcquire() {
			b.Fatal("no slot")
		}
		g.release()
	}
}
