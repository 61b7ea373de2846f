package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// loadGen sends steady traffic through the nodes' published traffic ports,
// like a client configured with several balancer endpoints: each request
// goes to the next node in turn, and a request no node accepted is tried
// on the next one. Anything else that goes wrong — an error after the
// request reached a node, a non-200 answer — is a failed request.
//
// "Not accepted" is a refused connection, or, because published ports go
// through docker's userland proxy, which accepts a connection and then
// closes it when the container's listener is gone, a fresh connection
// closed before any byte of an answer, and a keep-alive connection the
// node closed as idle just as the request went out. A node never drops a
// request it has read: a draining node closes only idle connections.
type loadGen struct {
	client  *http.Client
	pause   time.Duration
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started time.Time

	sent, ok, failed, retried atomic.Int64

	mu      sync.Mutex
	order   []string                  // guarded by mu; nodes to send to
	targets map[string]string         // guarded by mu; node -> traffic HOST:PORT ("": skip)
	served  map[string]map[string]int // guarded by mu; node -> backend -> answers
	errs    map[string]int            // guarded by mu; failure kinds
	example map[string]string         // guarded by mu; the first failure of each kind
}

// startLoad starts workers clients, each sending a request every pause,
// to the named nodes. Stop it with stop.
func startLoad(c *cluster, names []string, workers int, pause time.Duration) *loadGen {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &loadGen{
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: workers,
			DisableCompression:  true,
		}},
		pause: pause, cancel: cancel, started: time.Now(),
		order: append([]string(nil), names...), targets: make(map[string]string),
		served: make(map[string]map[string]int), errs: make(map[string]int), example: make(map[string]string),
	}
	for _, n := range names {
		l.targets[n] = c.traffic(n)
	}
	for i := range workers {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.worker(ctx, i) }()
	}
	c.t.Cleanup(l.stop)
	return l
}

// setTarget points the clients of node n at a new address (a restarted
// container has new host ports).
func (l *loadGen) setTarget(n, addr string) {
	l.mu.Lock()
	l.targets[n] = addr
	l.mu.Unlock()
}

func (l *loadGen) worker(ctx context.Context, w int) {
	for k := w; ctx.Err() == nil; k++ {
		l.mu.Lock()
		order := l.order
		l.mu.Unlock()
		l.sent.Add(1)
		var err error
		done := false
		for try := 0; try < len(order) && !done; try++ {
			n := order[(k+try)%len(order)]
			l.mu.Lock()
			addr := l.targets[n]
			l.mu.Unlock()
			if addr == "" {
				continue
			}
			var backend string
			var retry bool
			backend, retry, err = l.once(ctx, addr)
			switch {
			case ctx.Err() != nil:
				l.sent.Add(-1) // cut off by stop: not a request the test judges
				return
			case retry:
				l.retried.Add(1)
				continue
			case err == nil:
				l.ok.Add(1)
				l.mu.Lock()
				if l.served[n] == nil {
					l.served[n] = make(map[string]int)
				}
				l.served[n][backend]++
				l.mu.Unlock()
			}
			done = true
		}
		if !done && err == nil {
			err = errors.New("no node accepted the connection")
		}
		if err != nil {
			l.failed.Add(1)
			kind := errKind(err)
			l.mu.Lock()
			l.errs[kind]++
			if l.example[kind] == "" {
				l.example[kind] = fmt.Sprintf("%s (%.1fs into the run)", err, time.Since(l.started).Seconds())
			}
			l.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(l.pause):
		}
	}
}

// once sends one request to addr. retry reports that the node did not
// accept it (see loadGen).
func (l *loadGen) once(ctx context.Context, addr string) (backend string, retry bool, err error) {
	// The transport calls these hooks from its own goroutines (the first
	// response byte is seen by the connection's read loop), which may still
	// be running when Do returns an error.
	var reused, answered atomic.Bool
	trace := &httptrace.ClientTrace{
		GotConn:              func(i httptrace.GotConnInfo) { reused.Store(i.Reused) },
		GotFirstResponseByte: func() { answered.Store(true) },
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return "", false, err
	}
	resp, err := l.client.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return "", true, err
		}
		if !reused.Load() && !answered.Load() && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)) {
			return "", true, err
		}
		// The transport's name for a connection the other end closed
		// before the request was read: a keep-alive connection a draining
		// node closed as idle just as the request went out, or a fresh one
		// docker's proxy closed at once.
		if !answered.Load() && strings.Contains(err.Error(), "server closed idle connection") {
			return "", true, err
		}
		return "", false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", false, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", false, fmt.Errorf("status %d: %.120s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return resp.Header.Get("X-Backend"), false, nil
}

func errKind(err error) string {
	s := err.Error()
	switch {
	case strings.HasPrefix(s, "status "):
		return s[:len("status 000")]
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(s, "Client.Timeout"):
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "other"
}

// stop ends the load and waits for requests in flight. Safe to call twice.
func (l *loadGen) stop() {
	l.cancel()
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

// servedBy is how many answers backend gave through each node so far.
func (l *loadGen) servedBy(backend string) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int)
	for n, m := range l.served {
		out[n] = m[backend]
	}
	return out
}

// servedVia is how many answers came through node n so far.
func (l *loadGen) servedVia(n string) (total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.served[n] {
		total += k
	}
	return total
}

// waitRequests waits until at least n more requests completed, so that a
// phase of a test runs under load and not only next to it.
func (l *loadGen) waitRequests(t testing.TB, n int64, d time.Duration) {
	t.Helper()
	target := l.ok.Load() + l.failed.Load() + n
	eventually(t, d, fmt.Sprintf("%d more requests", n), func() error {
		if got := l.ok.Load() + l.failed.Load(); got < target {
			return fmt.Errorf("%d of %d", got, target)
		}
		return nil
	})
}

// report logs the figures and returns the failed count.
func (l *loadGen) report(t testing.TB) int64 {
	t.Helper()
	l.mu.Lock()
	kinds := make([]string, 0, len(l.errs))
	for k := range l.errs {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var detail []string
	for _, k := range kinds {
		detail = append(detail, fmt.Sprintf("%s x%d, first: %s", k, l.errs[k], l.example[k]))
	}
	l.mu.Unlock()
	t.Logf("load: %d requests sent, %d ok, %d failed, %d connects not accepted and retried on another node, over %.1fs",
		l.sent.Load(), l.ok.Load(), l.failed.Load(), l.retried.Load(), time.Since(l.started).Seconds())
	for _, d := range detail {
		t.Logf("  failures: %s", d)
	}
	return l.failed.Load()
}

// requireAllAccepted fails the test if any request had to be retried on
// another node. Where every node the load goes to stays up, a retry would
// be a live node dropping a connection it should have served, which the
// retry would otherwise hide.
func (l *loadGen) requireAllAccepted(t testing.TB) {
	t.Helper()
	if n := l.retried.Load(); n > 0 {
		t.Errorf("%d requests were not accepted by a node that stayed up (retried on another)", n)
	}
}
