package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/consensus"
)

// testToken is the bearer token of test servers that require one.
const testToken = "s3cret-token"

// fakeWriter is a ConfigWriter and ConfigStore double: Apply records the
// command and, unless applyErr is set, bumps the index (honouring IfIndex
// like the FSM does). It never interprets the command otherwise.
type fakeWriter struct {
	mu         sync.Mutex
	cmds       []consensus.Command // guarded by mu: every command Apply received
	index      uint64              // guarded by mu
	changed    chan struct{}       // guarded by mu: closed and replaced when index moves
	applyErr   error               // guarded by mu: Apply returns it (with the current index)
	leaderName string              // guarded by mu
	leaderAddr string              // guarded by mu
	waitErr    error               // guarded by mu: WaitIndex returns it at once
	applied    func(ctx context.Context, idx uint64) error
	// waiting receives (without blocking) each time WaitIndex is about to
	// block, so a test can move the index after the poll started waiting.
	waiting chan struct{}
}

func newFakeWriter(index uint64) *fakeWriter {
	return &fakeWriter{index: index, changed: make(chan struct{}), waiting: make(chan struct{}, 1)}
}

func (f *fakeWriter) Apply(ctx context.Context, cmd consensus.Command) (consensus.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, cmd)
	if f.applyErr != nil {
		return consensus.Result{Index: f.index}, f.applyErr
	}
	if cmd.IfIndex != 0 && cmd.IfIndex != f.index {
		return consensus.Result{Index: f.index}, fmt.Errorf("%w: config index is %d, the write expected %d", consensus.ErrConflict, f.index, cmd.IfIndex)
	}
	f.setIndexLocked(f.index + 1)
	return consensus.Result{Index: f.index, Changed: true}, nil
}

func (f *fakeWriter) Leader() (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leaderName, f.leaderAddr
}

func (f *fakeWriter) WaitIndex(ctx context.Context, idx uint64) error {
	for {
		f.mu.Lock()
		if f.waitErr != nil {
			f.mu.Unlock()
			return f.waitErr
		}
		if f.index >= idx {
			f.mu.Unlock()
			return nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case f.waiting <- struct{}{}:
		default:
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d: %w", idx, ctx.Err())
		}
	}
}

func (f *fakeWriter) WaitApplied(ctx context.Context, idx uint64) error {
	if f.applied == nil {
		return nil
	}
	return f.applied(ctx, idx)
}

// Config implements ConfigStore.
func (f *fakeWriter) Config() Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Config{Index: f.index, Backends: []Backend{}}
}

func (f *fakeWriter) setIndex(i uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setIndexLocked(i)
}

func (f *fakeWriter) setIndexLocked(i uint64) {
	f.index = i
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeWriter) set(fn func(f *fakeWriter)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeWriter) commands() []consensus.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]consensus.Command(nil), f.cmds...)
}

func (f *fakeWriter) currentIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.index
}

type fakeLoad struct{}

func (fakeLoad) Load() Load { return Load{Node: "n", Backends: []BackendLoad{}} }

type fakeMembers struct{}

func (fakeMembers) Members() Members { return Members{Members: []Member{}} }

// sources returns Sources around w (nil: a read-only node).
func sources(name string, w *fakeWriter, token string) Sources {
	s := Sources{
		Node:    name,
		Load:    fakeLoad{},
		Config:  newFakeWriter(0),
		Members: fakeMembers{},
		Ready:   func() error { return nil },
		Metrics: http.NotFoundHandler(),
		Token:   token,
	}
	if w != nil {
		s.Config, s.Writer = w, w
	}
	return s
}

// startServer serves the admin handler of w on 127.0.0.1:0 until the test ends.
func startServer(t *testing.T, name string, w *fakeWriter, token string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(NewHandler(sources(name, w, token)))
	t.Cleanup(srv.Close)
	return srv
}

// answer is one HTTP answer a test reads.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// call makes one request, bounded by a deadline.
func call(t *testing.T, base, method, path, body string, hdr map[string]string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// auth is the header of an authorized write.
func auth(extra ...string) map[string]string {
	h := map[string]string{"Authorization": "Bearer " + testToken}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

// waitFor receives from ch or fails the test after d.
func waitFor[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %s waiting for %s", d, what)
		panic("unreachable")
	}
}

var errBoom = errors.New("boom")
