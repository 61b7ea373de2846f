package consultest

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Consul's blocking-query bounds.
const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
)

// unsupported lists query parameters of the two endpoints that the double
// does not implement; a request using one gets 400 instead of a wrong answer.
var unsupported = []string{"filter", "near", "node-meta", "hash", "keys", "raw", "separator"}

// ServeHTTP answers the Consul endpoints described in the package comment.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	path := r.URL.Path
	switch {
	case strings.HasPrefix(path, "/v1/health/service/"):
		name := strings.TrimPrefix(path, "/v1/health/service/")
		if name == "" || strings.Contains(name, "/") {
			s.fail(w, http.StatusBadRequest, "Missing service name")
			return
		}
		passing, err := boolParam(r.URL.Query(), "passing")
		if err != nil {
			s.fail(w, http.StatusBadRequest, "Invalid value for ?passing")
			return
		}
		tags := r.URL.Query()["tag"]
		s.serve(w, r, func() (uint64, any, bool) {
			idx, entries := s.healthLocked(name, tags, passing)
			return idx, entries, true
		}, func() uint64 { return s.serviceIndexLocked(name) })
	case strings.HasPrefix(path, "/v1/kv/") || path == "/v1/kv":
		key := strings.TrimPrefix(strings.TrimPrefix(path, "/v1/kv"), "/")
		recurse := r.URL.Query().Has("recurse")
		if key == "" && !recurse {
			s.fail(w, http.StatusBadRequest, "Missing key name")
			return
		}
		s.serve(w, r, func() (uint64, any, bool) {
			pairs := s.kvLocked(key, recurse)
			return s.kvIndex, pairs, len(pairs) > 0
		}, func() uint64 { return s.kvIndex })
	default:
		s.fail(w, http.StatusNotFound, "consultest: no such endpoint "+path)
	}
}

// serve runs the part every endpoint shares: method, parameters, outage,
// ACL, blocking, headers. answer builds the reply under s.mu and reports
// false for a 404; indexOf reads the resource's index under s.mu.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, answer func() (uint64, any, bool), indexOf func() uint64) {
	if r.Method != http.MethodGet {
		s.fail(w, http.StatusMethodNotAllowed, "Method "+r.Method+" not allowed by consultest")
		return
	}
	q := r.URL.Query()
	for _, p := range unsupported {
		if q.Has(p) {
			s.fail(w, http.StatusBadRequest, "consultest: ?"+p+" is not implemented")
			return
		}
	}
	wait := defaultWait
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.fail(w, http.StatusBadRequest, "Invalid wait time")
			return
		}
		if d > 0 {
			wait = min(d, maxWait)
		}
	}
	var minIndex uint64
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.fail(w, http.StatusBadRequest, "Invalid index")
			return
		}
		minIndex = n
	}
	if !s.admit(w, r) {
		return
	}
	if minIndex > 0 && !s.hold(r, minIndex, wait, indexOf) {
		return // the client went away
	}

	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		s.fail(w, http.StatusInternalServerError, "rpc error making call: No cluster leader")
		return
	}
	idx, body, found := answer()
	var data []byte
	var err error
	if found {
		data, err = json.Marshal(body)
	}
	s.mu.Unlock()

	h := w.Header()
	h.Set("Content-Type", "application/json")
	consulHeaders(h, max(idx, 1), true)
	switch {
	case err != nil:
		s.fail(w, http.StatusInternalServerError, "consultest: encode reply: "+err.Error())
	case !found:
		w.WriteHeader(http.StatusNotFound)
	default:
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(data)
	}
}

// admit answers 500 while down and 403 for a wrong ACL token, and reports
// whether the request may go on.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	down, want := s.down, s.token
	s.mu.Unlock()
	if down {
		s.fail(w, http.StatusInternalServerError, "rpc error making call: No cluster leader")
		return false
	}
	if want == "" {
		return true
	}
	got := r.Header.Get("X-Consul-Token")
	if got == "" {
		got = r.URL.Query().Get("token")
	}
	if got == "" {
		if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			got = strings.TrimSpace(v)
		}
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
		return true
	}
	if got == "" {
		s.fail(w, http.StatusForbidden, "Permission denied: anonymous token lacks permission")
	} else {
		s.fail(w, http.StatusForbidden, "ACL not found")
	}
	return false
}

// hold blocks while the resource's index is <= minIndex, until a change,
// the end of wait, an outage (the caller then answers 500) or Stop (the
// connection is dropped). It reports false when the client went away.
func (s *Server) hold(r *http.Request, minIndex uint64, wait time.Duration, indexOf func() uint64) bool {
	s.mu.Lock()
	s.held[r] = minIndex
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.held, r)
		s.mu.Unlock()
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		cur, changed, abort, down := indexOf(), s.changed, s.abort, s.down
		s.mu.Unlock()
		if cur > minIndex || down {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return true
		case <-r.Context().Done():
			return false
		case <-abort:
			panic(http.ErrAbortHandler) // close the connection without a reply, as a dying agent would
		}
	}
}

// fail writes a text error the way Consul does, with the Consul headers.
func (s *Server) fail(w http.ResponseWriter, status int, msg string) {
	s.mu.Lock()
	idx, leader := s.index, !s.down
	s.mu.Unlock()
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	consulHeaders(h, idx, leader)
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg))
}

func consulHeaders(h http.Header, index uint64, knownLeader bool) {
	h.Set("X-Consul-Index", strconv.FormatUint(index, 10))
	h.Set("X-Consul-KnownLeader", strconv.FormatBool(knownLeader))
	h.Set("X-Consul-LastContact", "0")
}

// boolParam mirrors Consul's getBoolQueryParam: absent is false, present
// without a value is true, otherwise strconv.ParseBool.
func boolParam(q url.Values, key string) (bool, error) {
	if !q.Has(key) {
		return false, nil
	}
	v := q.Get(key)
	if v == "" {
		return true, nil
	}
	return strconv.ParseBool(v)
}

// serviceIndexLocked is the X-Consul-Index of a health query: the service's
// own index, or the service table's for a service never registered.
func (s *Server) serviceIndexLocked(name string) uint64 {
	if svc := s.services[name]; svc != nil {
		return svc.index
	}
	return s.svcIndex
}

func (s *Server) healthLocked(name string, tags []string, passingOnly bool) (uint64, []api.ServiceEntry) {
	out := []api.ServiceEntry{} // Consul sends [] for an unknown service, never null
	svc := s.services[name]
	if svc == nil {
		return s.svcIndex, out
	}
	insts := slices.Clone(svc.instances)
	slices.SortFunc(insts, func(a, b *instance) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.ID, b.ID))
	})
	for _, in := range insts {
		if !hasTags(in.Tags, tags) {
			continue
		}
		e := entry(name, in)
		if passingOnly && !allPassing(e.Checks) {
			continue
		}
		out = append(out, e)
	}
	return svc.index, out
}

// hasTags reports whether have holds every wanted tag; Consul compares tags
// case-insensitively.
func hasTags(have, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, w) }) {
			return false
		}
	}
	return true
}

func allPassing(checks api.HealthChecks) bool {
	for _, c := range checks {
		if c.Status != api.HealthPassing {
			return false
		}
	}
	return true
}

// entry renders one instance the way /v1/health/service does.
func entry(name string, in *instance) api.ServiceEntry {
	tags := slices.Clone(in.Tags)
	if tags == nil {
		tags = []string{}
	}
	meta := in.Meta
	if meta == nil {
		meta = map[string]string{}
	}
	node := &api.Node{
		ID:              nodeID(in.Node),
		Node:            in.Node,
		Address:         in.NodeAddress,
		Datacenter:      Datacenter,
		TaggedAddresses: map[string]string{"lan": in.NodeAddress, "wan": in.NodeAddress},
		Meta:            map[string]string{"consul-network-segment": ""},
		CreateIndex:     1,
		ModifyIndex:     1,
	}
	svc := &api.AgentService{
		ID:          in.ID,
		Service:     name,
		Tags:        tags,
		Meta:        meta,
		Port:        in.Port,
		Address:     in.Address,
		Weights:     in.Weights,
		CreateIndex: in.createIndex,
		ModifyIndex: in.modifyIndex,
		Datacenter:  Datacenter,
	}
	serfHealth := &api.HealthCheck{
		Node: in.Node, CheckID: "serfHealth", Name: "Serf Health Status",
		Status: api.HealthPassing, Output: "Agent alive and reachable",
		ServiceTags: []string{}, CreateIndex: 1, ModifyIndex: 1,
	}
	status := in.Status
	if status == Maintenance {
		status = api.HealthPassing
	}
	check := &api.HealthCheck{
		Node: in.Node, CheckID: "service:" + in.ID, Name: "Service '" + name + "' check",
		Status: status, ServiceID: in.ID, ServiceName: name, ServiceTags: tags, Type: "ttl",
		CreateIndex: in.createIndex, ModifyIndex: in.modifyIndex,
	}
	checks := api.HealthChecks{serfHealth, check}
	if in.Status == Maintenance {
		checks = append(checks, &api.HealthCheck{
			Node: in.Node, CheckID: api.ServiceMaintPrefix + in.ID, Name: "Service Maintenance Mode",
			Status: api.HealthCritical, Notes: "Maintenance mode is enabled for this service",
			ServiceID: in.ID, ServiceName: name, ServiceTags: tags, Type: "maintenance",
			CreateIndex: in.modifyIndex, ModifyIndex: in.modifyIndex,
		})
	}
	return api.ServiceEntry{Node: node, Service: svc, Checks: checks}
}

// nodeID is a stable UUID-shaped ID derived from the node name.
func nodeID(name string) string {
	var h uint64 = 14695981039346656037 // FNV-1a
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	x := strconv.FormatUint(h, 16)
	x = strings.Repeat("0", 16-len(x)) + x
	return "00000000-0000-4000-" + x[:4] + "-" + x[4:16]
}

func (s *Server) kvLocked(key string, recurse bool) []api.KVPair {
	if !recurse {
		if p := s.kv[key]; p != nil {
			return []api.KVPair{*p}
		}
		return nil
	}
	var out []api.KVPair
	for k, p := range s.kv {
		if strings.HasPrefix(k, key) {
			out = append(out, *p)
		}
	}
	slices.SortFunc(out, func(a, b api.KVPair) int { return strings.Compare(a.Key, b.Key) })
	return out
}
