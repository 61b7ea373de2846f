package consultest_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/thebalancer/balancer/consensus/consultest"
	"github.com/thebalancer/balancer/internal/testutil"
)

// client is the real consul/api client pointed at the double, with the
// environment cleared so a developer's CONSUL_HTTP_* cannot leak in.
func client(t *testing.T, s *consultest.Server, token string) *api.Client {
	t.Helper()
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	c, err := api.NewClient(&api.Config{Address: s.Addr(), Scheme: "http", Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type result[T any] struct {
	v    T
	meta *api.QueryMeta
	err  error
	took time.Duration
}

// async runs a (blocking) client call in a goroutine; receive with recv.
func async[T any](f func() (T, *api.QueryMeta, error)) <-chan result[T] {
	ch := make(chan result[T], 1)
	go func() {
		start := time.Now()
		v, m, err := f()
		ch <- result[T]{v, m, err, time.Since(start)}
	}()
	return ch
}

func recv[T any](t *testing.T, ch <-chan result[T], within time.Duration) result[T] {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("no reply within %v", within)
		panic("unreachable")
	}
}

func ids(entries []*api.ServiceEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Service.ID)
	}
	return out
}

func TestHealthService(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	s.SetService("web",
		consultest.Instance{ID: "a", Address: "10.0.0.1", Port: 80, Weights: api.AgentWeights{Passing: 10, Warning: 2}, Tags: []string{"v1", "Primary"}},
		consultest.Instance{ID: "b", Address: "10.0.0.2", Port: 80, Weights: api.AgentWeights{Passing: 5, Warning: 3}, Status: consultest.Warning, Tags: []string{"v1"}},
		consultest.Instance{ID: "c", Address: "10.0.0.3", Port: 80, Status: consultest.Critical},
		consultest.Instance{ID: "d", Port: 8080, Node: "node2", NodeAddress: "10.0.1.4", Tags: []string{"v2"}},
		consultest.Instance{ID: "e", Address: "10.0.0.5", Port: 80, Status: consultest.Maintenance, Tags: []string{"v1"}},
	)
	s.SetService("other", consultest.Instance{ID: "x", Port: 1})

	all, meta, err := c.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(all), []string{"a", "b", "c", "e", "d"}; !slices.Equal(got, want) { // sorted by node, then ID
		t.Fatalf("ids = %v, want %v", got, want)
	}
	if meta.LastIndex < 1 || !meta.KnownLeader {
		t.Fatalf("meta = %+v, want LastIndex >= 1 and KnownLeader", meta)
	}
	status := map[string]string{}
	for _, e := range all {
		status[e.Service.ID] = e.Checks.AggregatedStatus()
		if e.Service.Service != "web" || e.Node == nil {
			t.Fatalf("entry %+v: want Service web and a node", e)
		}
	}
	wantStatus := map[string]string{"a": "passing", "b": "warning", "c": "critical", "d": "passing", "e": "maintenance"}
	for id, w := range wantStatus {
		if status[id] != w {
			t.Errorf("%s: AggregatedStatus %q, want %q", id, status[id], w)
		}
	}
	a, d := all[0], all[4]
	if a.Service.Weights != (api.AgentWeights{Passing: 10, Warning: 2}) {
		t.Errorf("a weights = %+v", a.Service.Weights)
	}
	if d.Service.Weights != (api.AgentWeights{Passing: 1, Warning: 1}) {
		t.Errorf("unregistered weights = %+v, want Consul's default {1 1}", d.Service.Weights)
	}
	if d.Service.Address != "" || d.Node.Address != "10.0.1.4" || d.Node.Node != "node2" || d.Service.Port != 8080 {
		t.Errorf("d: service address %q node %q/%q port %d", d.Service.Address, d.Node.Node, d.Node.Address, d.Service.Port)
	}
	if a.Node.Node != consultest.DefaultNode || a.Node.Address != consultest.DefaultNodeAddress {
		t.Errorf("default node = %q/%q", a.Node.Node, a.Node.Address)
	}

	passing, _, err := c.Health().Service("web", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(passing), []string{"a", "d"}; !slices.Equal(got, want) {
		t.Errorf("passing ids = %v, want %v (warning, critical and maintenance dropped)", got, want)
	}

	tests := []struct {
		name    string
		tags    []string
		passing bool
		want    []string
	}{
		{"one tag", []string{"v1"}, false, []string{"a", "b", "e"}},
		{"tag is case-insensitive", []string{"primary"}, false, []string{"a"}},
		{"all tags must match", []string{"v1", "primary"}, false, []string{"a"}},
		{"tag and passing", []string{"v1"}, true, []string{"a"}},
		{"no match", []string{"v3"}, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := c.Health().ServiceMultipleTags("web", tc.tags, tc.passing, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tc.want) {
				t.Errorf("ids = %v, want %v", ids(got), tc.want)
			}
		})
	}

	none, meta, err := c.Health().Service("nope", "", false, nil)
	if err != nil || len(none) != 0 || meta.LastIndex < 1 {
		t.Fatalf("unknown service: %v, %+v, %v; want [] with an index", none, meta, err)
	}
}

func TestHeadersOnEveryReply(t *testing.T) {
	s := consultest.New(t)
	s.PutKV("k", []byte("v"))
	for _, path := range []string{"/v1/health/service/web", "/v1/kv/k", "/v1/kv/missing", "/v1/kv/nothing?recurse"} {
		resp, err := http.Get(s.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		idx, err := strconv.ParseUint(h.Get("X-Consul-Index"), 10, 64)
		if err != nil || idx < 1 {
			t.Errorf("%s: X-Consul-Index %q", path, h.Get("X-Consul-Index"))
		}
		if h.Get("Content-Type") != "application/json" || h.Get("X-Consul-KnownLeader") != "true" || h.Get("X-Consul-LastContact") != "0" {
			t.Errorf("%s: headers %v", path, h)
		}
	}
	resp, err := http.Post(s.URL()+"/v1/kv/k", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT: status %d, want 405", resp.StatusCode)
	}
}

func TestUnsupportedParameterIsRejected(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	_, _, err := c.Health().Service("web", "", false, &api.QueryOptions{Filter: "Service.Port == 80"})
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Fatalf("filter: err %v, want a 400 StatusError", err)
	}
}

func TestBlockingQueryWakesOnChange(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	s.SetService("web", consultest.Instance{ID: "a", Port: 80})
	_, meta, err := c.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	idx := meta.LastIndex

	ch := async(func() ([]*api.ServiceEntry, *api.QueryMeta, error) {
		return c.Health().Service("web", "", false, &api.QueryOptions{WaitIndex: idx, WaitTime: time.Minute})
	})
	testutil.Eventually(t, 5*time.Second, "query held", func() bool { return s.Waiting() == 1 })
	s.SetService("other", consultest.Instance{ID: "x", Port: 1}) // another service: must not wake web's query
	s.PutKV("unrelated", []byte("x"))                            // nor a KV write
	testutil.Eventually(t, 5*time.Second, "query still held", func() bool { return s.Waiting() == 1 })
	s.AddInstance("web", consultest.Instance{ID: "b", Port: 81})

	r := recv(t, ch, 5*time.Second)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.meta.LastIndex <= idx || !slices.Equal(ids(r.v), []string{"a", "b"}) {
		t.Fatalf("woke with index %d (was %d) and %v", r.meta.LastIndex, idx, ids(r.v))
	}
}

func TestBlockingQueryTimesOutWithSameIndex(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	s.SetService("web", consultest.Instance{ID: "a", Port: 80})
	_, meta, err := c.Health().Service("web", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	const wait = 150 * time.Millisecond
	r := recv(t, async(func() ([]*api.ServiceEntry, *api.QueryMeta, error) {
		return c.Health().Service("web", "", true, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: wait})
	}), 5*time.Second)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.meta.LastIndex != meta.LastIndex || r.took < wait {
		t.Fatalf("index %d after %v, want the same index %d after >= %v", r.meta.LastIndex, r.took, meta.LastIndex, wait)
	}
}

func TestBlockingQueryEndsWithClient(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	ctx, cancel := context.WithCancel(context.Background())
	ch := async(func() (*api.KVPair, *api.QueryMeta, error) {
		return c.KV().Get("k", (&api.QueryOptions{WaitIndex: s.Index(), WaitTime: time.Minute}).WithContext(ctx))
	})
	testutil.Eventually(t, 5*time.Second, "query held", func() bool { return s.Waiting() == 1 })
	cancel()
	if r := recv(t, ch, 5*time.Second); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", r.err)
	}
	testutil.Eventually(t, 5*time.Second, "handler released", func() bool { return s.Waiting() == 0 })
}

func TestIndexBumpsEvenWithoutChange(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	in := consultest.Instance{ID: "a", Port: 80}
	s.SetService("web", in)
	_, m1, err := c.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetService("web", in)
	_, m2, err := c.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m2.LastIndex <= m1.LastIndex {
		t.Fatalf("index %d then %d, want it to move", m1.LastIndex, m2.LastIndex)
	}
}

func TestResetIndexGoesBackwards(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	for i := range 10 {
		s.PutKV("k", []byte{byte(i)})
	}
	_, m1, err := c.KV().Get("k", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.ResetIndex(3)
	p, m2, err := c.KV().Get("k", nil)
	if err != nil || p == nil {
		t.Fatal(p, err)
	}
	if m2.LastIndex >= m1.LastIndex || m2.LastIndex < 1 || p.ModifyIndex > m2.LastIndex {
		t.Fatalf("index %d then %d (pair %d), want it lower", m1.LastIndex, m2.LastIndex, p.ModifyIndex)
	}
}

func TestKV(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	kv := c.KV()

	p, meta, err := kv.Get("cfg/balancer", nil)
	if err != nil || p != nil || meta == nil || meta.LastIndex < 1 {
		t.Fatalf("missing key: %v %+v %v; want (nil, meta with index, nil)", p, meta, err)
	}
	missingIdx := meta.LastIndex

	// A blocking Get on a key that does not exist yet wakes when it appears.
	ch := async(func() (*api.KVPair, *api.QueryMeta, error) {
		return kv.Get("cfg/balancer", &api.QueryOptions{WaitIndex: missingIdx, WaitTime: time.Minute})
	})
	testutil.Eventually(t, 5*time.Second, "query held", func() bool { return s.Waiting() == 1 })
	s.PutKV("cfg/balancer", []byte(`{"backends":[]}`))
	r := recv(t, ch, 5*time.Second)
	if r.err != nil || r.v == nil || string(r.v.Value) != `{"backends":[]}` || r.meta.LastIndex <= missingIdx {
		t.Fatalf("woke with %+v %+v %v", r.v, r.meta, r.err)
	}
	if r.v.Key != "cfg/balancer" || r.v.CreateIndex != r.v.ModifyIndex || r.v.ModifyIndex != r.meta.LastIndex {
		t.Fatalf("pair %+v, index %d", r.v, r.meta.LastIndex)
	}

	s.PutKV("cfg/other", []byte("2"))
	s.PutKV("cfgx", []byte("3"))
	s.PutKV("cfg/balancer", []byte("updated"))
	p, _, err = kv.Get("cfg/balancer", nil)
	if err != nil || string(p.Value) != "updated" || p.CreateIndex >= p.ModifyIndex {
		t.Fatalf("updated: %+v %v", p, err)
	}

	list, _, err := kv.List("cfg/", nil)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range list {
		keys = append(keys, p.Key)
	}
	if want := []string{"cfg/balancer", "cfg/other"}; !slices.Equal(keys, want) {
		t.Fatalf("recurse keys = %v, want %v", keys, want)
	}
	list, meta, err = kv.List("nothing/", nil)
	if err != nil || list != nil || meta.LastIndex < 1 {
		t.Fatalf("recurse without match: %v %+v %v; want 404 as (nil, meta, nil)", list, meta, err)
	}

	if !s.DeleteKV("cfg/balancer") || s.DeleteKV("cfg/balancer") {
		t.Fatal("DeleteKV: want true then false")
	}
	p, _, err = kv.Get("cfg/balancer", nil)
	if err != nil || p != nil {
		t.Fatalf("deleted key: %v %v", p, err)
	}
}

func TestToken(t *testing.T) {
	s := consultest.New(t)
	s.SetToken("s3cret")
	s.PutKV("k", []byte("v"))

	tests := []struct {
		name  string
		token string
		code  int
	}{
		{"no token", "", http.StatusForbidden},
		{"wrong token", "nope", http.StatusForbidden},
		{"right token", "s3cret", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := client(t, s, tc.token)
			_, _, err := c.KV().Get("k", nil)
			_, _, herr := c.Health().Service("web", "", true, nil)
			for _, err := range []error{err, herr} {
				var se api.StatusError
				switch {
				case tc.code == 0 && err != nil:
					t.Fatalf("err = %v, want none", err)
				case tc.code != 0 && (!errors.As(err, &se) || se.Code != tc.code || se.Body == ""):
					t.Fatalf("err = %v, want a %d StatusError with a text body", err, tc.code)
				}
			}
		})
	}

	// The client takes CONSUL_HTTP_TOKEN from the environment even with an
	// explicit address, and sends it as X-Consul-Token.
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "s3cret")
	c, err := api.NewClient(&api.Config{Address: s.Addr(), Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.KV().Get("k", nil); err != nil {
		t.Fatalf("token from env: %v", err)
	}
}

func TestDown(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	ch := async(func() (*api.KVPair, *api.QueryMeta, error) {
		return c.KV().Get("k", &api.QueryOptions{WaitIndex: s.Index(), WaitTime: time.Minute})
	})
	testutil.Eventually(t, 5*time.Second, "query held", func() bool { return s.Waiting() == 1 })
	s.SetDown(true)
	var se api.StatusError
	if r := recv(t, ch, 5*time.Second); !errors.As(r.err, &se) || se.Code != http.StatusInternalServerError {
		t.Fatalf("held query: err %v, want 500", r.err)
	}
	if _, _, err := c.Health().Service("web", "", false, nil); !errors.As(err, &se) || se.Code != 500 {
		t.Fatalf("new query: err %v, want 500", err)
	}
	s.SetDown(false)
	if _, _, err := c.Health().Service("web", "", false, nil); err != nil {
		t.Fatal(err)
	}
}

func TestStopStart(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	s.PutKV("k", []byte("v"))
	url := s.URL()

	ch := async(func() (*api.KVPair, *api.QueryMeta, error) {
		return c.KV().Get("k", &api.QueryOptions{WaitIndex: s.Index(), WaitTime: time.Minute})
	})
	testutil.Eventually(t, 5*time.Second, "query held", func() bool { return s.Waiting() == 1 })
	s.Stop()
	if r := recv(t, ch, 5*time.Second); r.err == nil {
		t.Fatal("held query survived Stop")
	}
	if _, _, err := c.KV().Get("k", nil); err == nil {
		t.Fatal("query while stopped succeeded")
	}
	s.Stop() // idempotent

	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if s.URL() != url {
		t.Fatalf("URL moved from %s to %s", url, s.URL())
	}
	p, _, err := c.KV().Get("k", nil)
	if err != nil || string(p.Value) != "v" {
		t.Fatalf("after Start: %+v %v; want the old state", p, err)
	}
	s.Close()
	if err := s.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

func TestRemoveAndStatus(t *testing.T) {
	s := consultest.New(t)
	c := client(t, s, "")
	s.SetService("web", consultest.Instance{ID: "a", Port: 80}, consultest.Instance{ID: "b", Port: 81})
	if !s.SetStatus("web", "a", consultest.Critical) || s.SetStatus("web", "zz", consultest.Critical) {
		t.Fatal("SetStatus: want true for a, false for zz")
	}
	got, _, err := c.Health().Service("web", "", true, nil)
	if err != nil || !slices.Equal(ids(got), []string{"b"}) {
		t.Fatalf("passing after a went critical: %v %v", ids(got), err)
	}
	if !s.RemoveInstance("web", "b") || s.RemoveInstance("web", "b") || s.RemoveInstance("nope", "b") {
		t.Fatal("RemoveInstance: want true once, then false")
	}
	got, _, err = c.Health().Service("web", "", false, nil)
	if err != nil || !slices.Equal(ids(got), []string{"a"}) {
		t.Fatalf("after remove: %v %v", ids(got), err)
	}
	s.DeleteService("web")
	got, meta, err := c.Health().Service("web", "", false, nil)
	if err != nil || len(got) != 0 || meta.LastIndex != s.Index() {
		t.Fatalf("after delete: %v %+v %v", ids(got), meta, err)
	}
}
