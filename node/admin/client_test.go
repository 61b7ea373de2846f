package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/thebalancer/balancer/consensus"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClientWrites(t *testing.T) {
	f := newFakeWriter(1)
	srv := startServer(t, "n1", f, testToken)
	c := NewClient(srv.URL, testToken)
	ctx := testCtx(t)
	w := int32(4)

	steps := []struct {
		name string
		do   func() (WriteResult, error)
		want consensus.Command
	}{
		{"upsert", func() (WriteResult, error) { return c.Upsert(ctx, "web1", "10.0.0.1:80", &w, true) }, consensus.Upsert("web1", "10.0.0.1:80", &w, true)},
		{"upsert no weight", func() (WriteResult, error) { return c.Upsert(ctx, "web2", "h:81", nil, false) }, consensus.Upsert("web2", "h:81", nil, false)},
		{"set weight if index", func() (WriteResult, error) { return c.SetWeight(ctx, "web1", 9, IfIndex(3)) }, consensus.SetWeight("web1", 9).If(3)},
		{"clear weight", func() (WriteResult, error) { return c.ClearWeight(ctx, "web1") }, consensus.ClearPin("web1")},
		{"drain", func() (WriteResult, error) { return c.SetDrain(ctx, "web1", true) }, consensus.SetDrain("web1", true)},
		{"delete", func() (WriteResult, error) { return c.Delete(ctx, "web2") }, consensus.Delete("web2")},
	}
	for i, s := range steps {
		res, err := s.do()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		wantIdx := uint64(i + 2)
		if res != (WriteResult{Index: wantIdx, Leader: "n1", Changed: true}) {
			t.Errorf("%s: %+v", s.name, res)
		}
		cmds := f.commands()
		if got := cmds[len(cmds)-1]; !reflect.DeepEqual(got, s.want) {
			t.Errorf("%s: command %+v, want %+v", s.name, got, s.want)
		}
	}

	res, err := c.SetWeight(ctx, "web1", 1, WaitApplied())
	if err != nil || !res.AppliedEverywhere {
		t.Errorf("WaitApplied: %+v %v", res, err)
	}
}

func TestClientWaitAppliedFor(t *testing.T) {
	f := newFakeWriter(1)
	f.applied = func(ctx context.Context, idx uint64) error {
		<-ctx.Done()
		return ctx.Err()
	}
	srv := startServer(t, "n1", f, "")
	start := time.Now()
	res, err := NewClient(srv.URL, "").SetDrain(testCtx(t), "web1", false, WaitAppliedFor(30*time.Millisecond))
	if err != nil || res.AppliedEverywhere || res.WaitError == "" || res.Index != 2 {
		t.Errorf("%+v %v", res, err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("answered after %s", d)
	}
}

func TestClientErrors(t *testing.T) {
	f := newFakeWriter(5)
	srv := startServer(t, "n1", f, testToken)
	ctx := testCtx(t)

	cases := []struct {
		name   string
		do     func() error
		status int
		index  uint64
	}{
		{"conflict", func() error {
			_, err := NewClient(srv.URL, testToken).SetWeight(ctx, "web1", 3, IfIndex(4))
			return err
		}, 409, 5},
		{"no token", func() error {
			_, err := NewClient(srv.URL, "").Delete(ctx, "web1")
			return err
		}, 401, 0},
		{"bad weight", func() error {
			_, err := NewClient(srv.URL, testToken).SetWeight(ctx, "web1", -1)
			return err
		}, 400, 0},
		{"bad address", func() error {
			_, err := NewClient(srv.URL, testToken).Upsert(ctx, "web1", "nope", nil, false)
			return err
		}, 400, 0},
		{"bad id", func() error {
			_, err := NewClient(srv.URL, testToken).ClearWeight(ctx, "a/b")
			return err
		}, 400, 0},
	}
	for _, c := range cases {
		err := c.do()
		var e *Error
		if !errors.As(err, &e) || e.Status != c.status || e.Message == "" || e.Index != c.index {
			t.Errorf("%s: %#v, want an *Error with status %d and index %d", c.name, err, c.status, c.index)
		}
	}
	if f.currentIndex() != 5 {
		t.Errorf("index moved to %d", f.currentIndex())
	}
	if _, err := NewClient(srv.URL, testToken).Delete(ctx, ""); err == nil {
		t.Errorf("an empty id was sent")
	}
	var e *Error
	_, err := NewClient(srv.URL, testToken).SetWeight(ctx, "web1", 3, IfIndex(4))
	if errors.As(err, &e) && e.Error() != "PUT /v1/backends/web1/weight: conflict: the config changed: config index is 5, the write expected 4 (409)" {
		t.Errorf("message %q", e.Error())
	}
}

func TestClientThroughFollower(t *testing.T) {
	leader, _, _, furl := cluster(t, testToken, testToken)
	res, err := NewClient(furl, testToken).SetWeight(testCtx(t), "web1", 7, IfIndex(10), WaitApplied())
	if err != nil || res != (WriteResult{Index: 11, Leader: "lead", Changed: true, AppliedEverywhere: true}) {
		t.Fatalf("%+v %v", res, err)
	}
	if cmds := leader.commands(); len(cmds) != 1 || !reflect.DeepEqual(cmds[0], consensus.SetWeight("web1", 7).If(10)) {
		t.Errorf("leader commands %+v", cmds)
	}
}

func TestClientConfigAfter(t *testing.T) {
	f := newFakeWriter(3)
	srv := startServer(t, "n1", f, "")
	c := NewClient(srv.URL, "")
	ctx := testCtx(t)

	type result struct {
		cfg Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := c.ConfigAfter(ctx, 3, time.Minute)
		done <- result{cfg, err}
	}()
	waitFor(t, f.waiting, 10*time.Second, "the poll to wait")
	f.setIndex(5)
	r := waitFor(t, done, 10*time.Second, "ConfigAfter to return")
	if r.err != nil || r.cfg.Index != 5 {
		t.Fatalf("%+v %v", r.cfg, r.err)
	}

	start := time.Now()
	cfg, err := c.ConfigAfter(ctx, 5, 50*time.Millisecond)
	if err != nil || cfg.Index != 5 || time.Since(start) < 50*time.Millisecond {
		t.Errorf("after the wait: %+v %v after %s", cfg, err, time.Since(start))
	}
	// ctx bounds the call even when the server would wait longer.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.ConfigAfter(short, 5, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("short ctx: %v", err)
	}
}

func TestClientReads(t *testing.T) {
	f := newFakeWriter(2)
	srv := startServer(t, "n1", f, "")
	c := NewClient(srv.Listener.Addr().String(), "")
	ctx := testCtx(t)
	if cfg, err := c.Config(ctx); err != nil || cfg.Index != 2 {
		t.Errorf("Config: %+v %v", cfg, err)
	}
	if _, err := c.Members(ctx); err != nil {
		t.Errorf("Members: %v", err)
	}
	if _, err := c.Load(ctx); err != nil {
		t.Errorf("Load: %v", err)
	}
}

// ExampleClient_SetWeight sets a backend's weight through any node and waits
// until every alive member applied it.
func ExampleClient_SetWeight() {
	f := newFakeWriter(41) // stands in for a node's raft store
	srv := httptest.NewServer(NewHandler(sources("node-1", f, "s3cret")))
	defer srv.Close()

	c := NewClient(srv.URL, "s3cret")
	res, err := c.SetWeight(context.Background(), "web1", 5, IfIndex(41), WaitApplied())
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Status == http.StatusConflict {
			fmt.Println("the config changed; re-read it and retry")
		}
		return
	}
	fmt.Printf("committed at index %d by %s, applied everywhere: %v\n", res.Index, res.Leader, res.AppliedEverywhere)
	// Output: committed at index 42 by node-1, applied everywhere: true
}
