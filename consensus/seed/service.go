package seed

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// ServiceWatcher turns the healthy instances of one Consul service into
// backends:
//
//   - health is Checks.AggregatedStatus() of each instance (node and service
//     checks): passing gives weight Weights.Passing, warning gives
//     Weights.Warning, critical, maintenance and unknown statuses are left
//     out. The query is sent without ?passing, since that drops warning
//     instances on the server;
//   - weights are clamped to 0..MaxWeight (Consul registers {1, 1} when the
//     service gives none);
//   - ID is the Consul service ID with every character outside [A-Za-z0-9._-]
//     replaced by "_" (and a leading "." "_" "-" prefixed with "s"), cut to
//     MaxIDLen with a hash suffix when longer. Instances on different nodes
//     that share a service ID (a service registered without an ID has its
//     name as ID) are told apart as "<node>.<id>";
//   - Address is Service.Address, or Node.Address when that is empty, joined
//     with the port by net.JoinHostPort (IPv6-safe). Instances without an
//     address or with a port outside 1..65535 are skipped and logged.
//
// Watch never delivers an empty set. A service that is unknown, has no
// instance left, or has none passing or warning is warned about (at once,
// then every Config.Remind) and the last non-empty set stays: for a load
// balancer, every instance failing its checks at once more likely means a
// broken check or a Consul-side problem than a service that should get no
// traffic, and the circuit breakers already keep requests away from
// backends that really fail. Emptying the set would turn that into a 503
// for every request.
type ServiceWatcher struct {
	client *api.Client
	name   string
	tags   []string
	cfg    Config
	log    *slog.Logger
}

// NewService watches the instances of service name through client.
// Options: WithConfig, WithLogger, WithTags.
func NewService(client *api.Client, name string, opts ...Option) *ServiceWatcher {
	o := buildOptions(opts)
	return &ServiceWatcher{
		client: client,
		name:   name,
		tags:   o.tags,
		cfg:    o.cfg,
		log:    o.cfg.Logger.With("consul_service", name),
	}
}

// Fetch reads the current set once (no blocking) and returns it sorted by
// ID, with the X-Consul-Index of the reply. Unlike Watch it returns an
// empty set as it is.
func (w *ServiceWatcher) Fetch(ctx context.Context) ([]Backend, uint64, error) {
	r, err := w.fetch(ctx, 0, 0)
	return r.backends, r.index, err
}

// Watch runs the blocking-query loop until ctx ends, then returns nil.
// It calls out from its own goroutine (the caller's), never concurrently:
// once with the first non-empty set read, then each time the set changes
// to another non-empty one (see ServiceWatcher for why empty is skipped). out owns
// the slice; a slow out delays the next query. Consul errors never end
// Watch: they are logged and retried with backoff, and the last set
// delivered stays in force.
func (w *ServiceWatcher) Watch(ctx context.Context, out func([]Backend)) error {
	return watch(ctx, w.cfg, w.log, w.fetch, out)
}

func (w *ServiceWatcher) fetch(ctx context.Context, waitIndex uint64, wait time.Duration) (read, error) {
	q := (&api.QueryOptions{WaitIndex: waitIndex, WaitTime: wait}).WithContext(ctx)
	entries, meta, err := w.client.Health().ServiceMultipleTags(w.name, w.tags, false, q)
	if err != nil {
		return read{}, fmt.Errorf("consul health of service %s: %w", w.name, err)
	}
	backends, skipped := FromEntries(entries)
	r := read{backends: backends, index: meta.LastIndex, skipped: skipped}
	switch {
	case len(backends) > 0:
	case len(entries) == 0:
		r.absent = fmt.Errorf("consul service %s: no instances (unknown service, none registered, or none with the tags %q)", w.name, w.tags)
		r.hint = "check the service name and tags, and that its instances are registered in Consul"
	default:
		r.absent = fmt.Errorf("consul service %s: none of its %d instances is passing or warning (or has a usable address)", w.name, len(entries))
		r.hint = "check the instances' health checks in Consul; circuit breakers handle backends that really fail"
	}
	return r, nil
}

// FromEntries converts a /v1/health/service reply into backends sorted by
// ID (never nil), following the rules on ServiceWatcher. skipped says which instances
// were left out for a reason other than their health.
func FromEntries(entries []*api.ServiceEntry) (backends []Backend, skipped []string) {
	type cand struct {
		node, id string
		b        Backend
	}
	var cands []cand
	for _, e := range entries {
		if e == nil || e.Service == nil {
			skipped = append(skipped, "entry without a service")
			continue
		}
		s := e.Service
		var weight int
		switch e.Checks.AggregatedStatus() {
		case api.HealthPassing:
			weight = s.Weights.Passing
		case api.HealthWarning:
			weight = s.Weights.Warning
		default: // critical, maintenance, or a status Consul does not define
			continue
		}
		node, host := "", s.Address
		if e.Node != nil {
			node = e.Node.Node
			if host == "" {
				host = e.Node.Address
			}
		}
		id := cmp.Or(s.ID, s.Service)
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		switch {
		case host == "":
			skipped = append(skipped, fmt.Sprintf("instance %s on %s: no address", id, node))
			continue
		case s.Port < 1 || s.Port > 65535:
			skipped = append(skipped, fmt.Sprintf("instance %s on %s: port %d", id, node, s.Port))
			continue
		}
		cands = append(cands, cand{node: node, id: id, b: Backend{
			ID:      SanitizeID(id),
			Address: net.JoinHostPort(host, strconv.Itoa(s.Port)),
			Weight:  int32(min(max(weight, 0), MaxWeight)),
		}})
	}

	// Service IDs are unique per node only: qualify the ones that repeat.
	count := make(map[string]int, len(cands))
	for _, c := range cands {
		count[c.b.ID]++
	}
	for i := range cands {
		if count[cands[i].b.ID] > 1 {
			cands[i].b.ID = SanitizeID(cands[i].node + "." + cands[i].id)
		}
	}
	// Anything still equal (same node and ID twice, or a cut that collided)
	// gets a numeric suffix, in a stable order.
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(strings.Compare(a.b.ID, b.b.ID), strings.Compare(a.node, b.node),
			strings.Compare(a.id, b.id), strings.Compare(a.b.Address, b.b.Address))
	})
	backends = make([]Backend, 0, len(cands))
	seen := make(map[string]bool, len(cands))
	for _, c := range cands {
		id := c.b.ID
		for n := 2; seen[id]; n++ {
			suffix := "-" + strconv.Itoa(n)
			id = c.b.ID[:min(len(c.b.ID), MaxIDLen-len(suffix))] + suffix
		}
		seen[id] = true
		c.b.ID = id
		backends = append(backends, c.b)
	}
	slices.SortFunc(backends, func(a, b Backend) int { return strings.Compare(a.ID, b.ID) })
	return backends, skipped
}

// SanitizeID maps a Consul service ID onto the backend ID character set:
// characters outside [A-Za-z0-9._-] become "_", an ID that does not start
// with a letter or digit gets an "s" in front, an empty one becomes "s", and
// one longer than MaxIDLen is cut and ends in "-" plus 8 hex digits of an
// FNV-1a hash of the original, so distinct long IDs stay distinct.
func SanitizeID(raw string) string {
	var b strings.Builder
	for _, r := range raw {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	id := b.String()
	if id == "" || !isAlnum(id[0]) {
		id = "s" + id
	}
	if len(id) > MaxIDLen {
		h := fnv.New32a()
		h.Write([]byte(raw))
		id = fmt.Sprintf("%s-%08x", id[:MaxIDLen-9], h.Sum32())
	}
	return id
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
