// Package consultest is an in-process double of the Consul HTTP endpoints
// that package seed calls, built on net/http/httptest so tests drive the real
// github.com/hashicorp/consul/api client against it:
//
//	GET /v1/health/service/{name}   ?passing  ?tag=T (repeatable)  ?index=N&wait=D
//	GET /v1/kv/{key}                ?recurse                      ?index=N&wait=D
//
// What it reproduces, because the client or the seeder depends on it:
//   - replies are the consul/api structs ([]api.ServiceEntry, []api.KVPair)
//     encoded as JSON; an unknown service is 200 with [], a missing key (or a
//     recurse with no match) is 404 with an empty body;
//   - every reply carries X-Consul-Index (monotonic, >= 1, also on 404),
//     X-Consul-KnownLeader and X-Consul-LastContact: without LastContact the
//     client silently stops parsing the others;
//   - blocking queries: with index=N > 0 the request is held while the
//     resource's index is <= N, until a change moves it, wait elapses
//     (default 5m, capped at 10m like Consul; no jitter is added), the client
//     goes away or the server stops; it is then answered with the current
//     index, which is the same N after a timeout;
//   - X-Consul-Index is per resource, as in Consul: a service's own modify
//     index (the service-table index for a service never registered), and the
//     KV table index for every KV read, so any KV write wakes every KV query
//     ("a return is no guarantee of a change");
//   - health is expressed through checks: each instance has the node check
//     serfHealth (passing) and a service check whose status is the instance's
//     Status; maintenance adds Consul's "_service_maintenance:<id>" critical
//     check, so api.HealthChecks.AggregatedStatus() reports "maintenance";
//     ?passing drops instances with any non-passing check (warning included);
//   - the optional ACL token (SetToken) is read from X-Consul-Token, the
//     token query parameter or "Authorization: Bearer"; a mismatch is 403
//     with a text body.
//
// Query features it does not implement (filter, near, node-meta, hash, keys,
// raw, separator) are answered 400 rather than silently ignored. Other
// methods are 405. Error bodies are text/plain, as Consul sends them; 200 and
// 404 replies are application/json.
//
// The Go side (SetService, PutKV, ...) is safe for concurrent use; every
// change bumps the index and wakes blocked queries. Stop/Start close and
// reopen the listener on the same address (connection refused in between);
// SetDown answers 500 "No cluster leader" instead.
//
// Test-only: import it from _test.go files. It imports consul/api for its
// structs and no balancer package.
package consultest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Instance statuses. Status "" means passing.
const (
	Passing     = api.HealthPassing  // "passing"
	Warning     = api.HealthWarning  // "warning"
	Critical    = api.HealthCritical // "critical"
	Maintenance = api.HealthMaint    // "maintenance": passing service check plus a critical maintenance check
)

// Default node of an instance that names none.
const (
	DefaultNode        = "node1"
	DefaultNodeAddress = "127.0.0.1"
	Datacenter         = "dc1"
)

// Instance is one registered instance of a service.
type Instance struct {
	ID      string // service ID, unique per node; empty: the service name (as Consul does)
	Address string // service address; empty: clients fall back to the node's address
	Port    int
	// Weights as registered. The zero value means none were registered and
	// replies carry {Passing: 1, Warning: 1}, as Consul does.
	Weights api.AgentWeights
	Status  string // Passing (also ""), Warning, Critical or Maintenance; anything else is sent as-is
	Tags    []string
	Meta    map[string]string

	Node        string // node name; empty: DefaultNode
	NodeAddress string // node address; empty: DefaultNodeAddress
}

// Server is the Consul double. Create it with New or NewServer.
type Server struct {
	addr     string       // host:port, fixed across Stop/Start
	requests atomic.Int64 // HTTP requests received, any path, any outcome

	mu sync.Mutex
	// Guarded by mu:
	srv      *httptest.Server // nil while stopped
	abort    chan struct{}    // closed by Stop: held requests drop their connection
	closed   bool
	down     bool
	token    string
	index    uint64        // last index handed out, the "raft index"; >= 1
	changed  chan struct{} // closed and replaced on every change
	services map[string]*service
	svcIndex uint64 // service table index: highest index of any service change
	kv       map[string]*api.KVPair
	kvIndex  uint64                   // KV table index: highest index of any KV write or delete
	held     map[*http.Request]uint64 // blocking queries being held, and their ?index
}

type service struct {
	index     uint64 // the service's own modify index
	instances []*instance
}

type instance struct {
	Instance
	createIndex, modifyIndex uint64
}

// New starts a double for one test and closes it in t.Cleanup.
func New(t testing.TB) *Server {
	t.Helper()
	s := NewServer()
	t.Cleanup(s.Close)
	return s
}

// NewServer starts a double on a fresh 127.0.0.1 port and, like
// httptest.NewServer, panics if it cannot listen. Call Close when done.
func NewServer() *Server {
	s := &Server{
		index:    1,
		svcIndex: 1,
		kvIndex:  1,
		changed:  make(chan struct{}),
		services: make(map[string]*service),
		kv:       make(map[string]*api.KVPair),
		held:     make(map[*http.Request]uint64),
	}
	srv := httptest.NewUnstartedServer(s)
	s.addr = srv.Listener.Addr().String()
	s.abort = make(chan struct{})
	srv.Start()
	s.srv = srv
	return s
}

// Addr is the host:port the double listens on (also while stopped).
func (s *Server) Addr() string { return s.addr }

// URL is "http://" + Addr().
func (s *Server) URL() string { return "http://" + s.addr }

// Requests reports how many HTTP requests the double has received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Waiting reports how many blocking queries are being held right now.
func (s *Server) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

// Held returns the ?index of every blocking query being held right now,
// sorted. A client that has read the latest state of a resource is held at
// that resource's current index, which lets a test wait until a watcher has
// caught up without guessing at timing.
func (s *Server) Held() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint64, 0, len(s.held))
	for _, idx := range s.held {
		out = append(out, idx)
	}
	slices.Sort(out)
	return out
}

// Index is the last index handed out (the highest X-Consul-Index so far).
func (s *Server) Index() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index
}

// SetService replaces every instance of service name. Instances keep their
// CreateIndex when their (node, ID) already existed. Every call bumps the
// index, even when nothing changed: Consul clients must treat a new index as
// "maybe changed", and this lets tests check that they do.
func (s *Server) SetService(name string, instances ...Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.bumpLocked()
	old := s.services[name]
	svc := &service{index: idx}
	for _, in := range instances {
		in = normalize(name, in)
		ni := &instance{Instance: in, createIndex: idx, modifyIndex: idx}
		if old != nil {
			if p := old.find(in.Node, in.ID); p != nil {
				ni.createIndex = p.createIndex
			}
		}
		if p := svc.find(in.Node, in.ID); p != nil { // same (node, ID) twice: last wins
			*p = *ni
			continue
		}
		svc.instances = append(svc.instances, ni)
	}
	s.services[name] = svc
	s.svcIndex = idx
}

// AddInstance registers one instance of service name, replacing the one
// with the same node and ID.
func (s *Server) AddInstance(name string, in Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.bumpLocked()
	in = normalize(name, in)
	svc := s.serviceLocked(name)
	svc.index, s.svcIndex = idx, idx
	if p := svc.find(in.Node, in.ID); p != nil {
		p.Instance, p.modifyIndex = in, idx
		return
	}
	svc.instances = append(svc.instances, &instance{Instance: in, createIndex: idx, modifyIndex: idx})
}

// RemoveInstance deregisters every instance of service name with this ID
// (on any node) and reports whether there was one.
func (s *Server) RemoveInstance(name, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.services[name]
	if svc == nil {
		return false
	}
	n := len(svc.instances)
	svc.instances = slices.DeleteFunc(svc.instances, func(p *instance) bool { return p.ID == id })
	if len(svc.instances) == n {
		return false
	}
	idx := s.bumpLocked()
	svc.index, s.svcIndex = idx, idx
	return true
}

// SetStatus changes the health of every instance of service name with this
// ID and reports whether there was one.
func (s *Server) SetStatus(name, id, status string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.services[name]
	if svc == nil {
		return false
	}
	var hit []*instance
	for _, p := range svc.instances {
		if p.ID == id {
			hit = append(hit, p)
		}
	}
	if len(hit) == 0 {
		return false
	}
	idx := s.bumpLocked()
	for _, p := range hit {
		p.Status, p.modifyIndex = status, idx
	}
	svc.index, s.svcIndex = idx, idx
	return true
}

// DeleteService deregisters every instance of service name.
func (s *Server) DeleteService(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.bumpLocked()
	svc := s.serviceLocked(name)
	svc.instances = nil
	svc.index, s.svcIndex = idx, idx
}

// PutKV stores value under key (a leading "/" is ignored, as in Consul).
func (s *Server) PutKV(key string, value []byte) {
	key = strings.TrimPrefix(key, "/")
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.bumpLocked()
	p := s.kv[key]
	if p == nil {
		p = &api.KVPair{Key: key, CreateIndex: idx}
		s.kv[key] = p
	}
	p.ModifyIndex = idx
	p.Value = slices.Clone(value)
	s.kvIndex = idx
}

// DeleteKV removes key and reports whether it existed. Like Consul (which
// keeps a tombstone), deleting moves the KV index even for a missing key.
func (s *Server) DeleteKV(key string) bool {
	key = strings.TrimPrefix(key, "/")
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.kv[key]
	delete(s.kv, key)
	s.kvIndex = s.bumpLocked()
	return ok
}

// ResetIndex makes every index go back to at most to (minimum 1), as after
// a Consul snapshot restore, and wakes blocked queries. Clients must notice
// that X-Consul-Index went backwards and reset their own.
func (s *Server) ResetIndex(to uint64) {
	to = max(to, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index = to
	s.svcIndex = min(s.svcIndex, to)
	s.kvIndex = min(s.kvIndex, to)
	for _, svc := range s.services {
		svc.index = min(svc.index, to)
		for _, p := range svc.instances {
			p.createIndex, p.modifyIndex = min(p.createIndex, to), min(p.modifyIndex, to)
		}
	}
	for _, p := range s.kv {
		p.CreateIndex, p.ModifyIndex = min(p.CreateIndex, to), min(p.ModifyIndex, to)
	}
	s.notifyLocked()
}

// SetToken requires this ACL token on every request; "" turns ACLs off.
func (s *Server) SetToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
}

// SetDown makes every request, held ones included, fail with 500 "No
// cluster leader" (true) or work again (false): Consul up but unusable.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
	s.notifyLocked()
}

// Stop closes the listener and every connection, held queries included, so
// clients see connection errors. It blocks until all handlers have returned.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	if srv != nil {
		close(s.abort)
	}
	s.mu.Unlock()
	if srv == nil {
		return
	}
	srv.CloseClientConnections()
	srv.Close()
}

// Start listens again on the same address after Stop. It retries for up to
// 5 s while the port is still busy. Starting a running server does nothing.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("consultest: Start after Close")
	}
	if s.srv != nil {
		return nil
	}
	var (
		l   net.Listener
		err error
	)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if l, err = net.Listen("tcp", s.addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the port is still held by the old listener; bounded by deadline
	}
	if err != nil {
		return fmt.Errorf("consultest: listen again on %s: %w", s.addr, err)
	}
	srv := httptest.NewUnstartedServer(s)
	srv.Listener.Close() // replace the fresh port with the old one
	srv.Listener = l
	s.abort = make(chan struct{})
	srv.Start()
	s.srv = srv
	return nil
}

// Close stops the server for good. It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.Stop()
}

// bumpLocked hands out the next index and wakes blocked queries.
func (s *Server) bumpLocked() uint64 {
	s.index++
	s.notifyLocked()
	return s.index
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) serviceLocked(name string) *service {
	svc := s.services[name]
	if svc == nil {
		svc = &service{}
		s.services[name] = svc
	}
	return svc
}

func (svc *service) find(node, id string) *instance {
	for _, p := range svc.instances {
		if p.Node == node && p.ID == id {
			return p
		}
	}
	return nil
}

func normalize(name string, in Instance) Instance {
	if in.ID == "" {
		in.ID = name
	}
	if in.Node == "" {
		in.Node = DefaultNode
	}
	if in.NodeAddress == "" {
		in.NodeAddress = DefaultNodeAddress
	}
	if in.Weights == (api.AgentWeights{}) {
		in.Weights = api.AgentWeights{Passing: 1, Warning: 1}
	}
	if in.Status == "" {
		in.Status = Passing
	}
	in.Tags = slices.Clone(in.Tags)
	if in.Meta != nil {
		m := make(map[string]string, len(in.Meta))
		for k, v := range in.Meta {
			m[k] = v
		}
		in.Meta = m
	}
	return in
}
