package seed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// KVWatcher turns a JSON document stored under one Consul KV key into
// backends (schema in ParseDocument). A missing key is not an empty set: a
// mistyped -consul-kv or a deleted key would otherwise empty the config of
// the whole cluster. Fetch reports it as ErrKeyNotFound; Watch keeps the last
// set, warns at once and then every Config.Remind while the key is missing,
// and picks the key up when it appears. Only a document that says so
// ({"backends": []}) is an empty set. A document that fails ParseDocument is
// reported (Fetch returns the error, Watch logs it once) and the last good
// set stays in force until a valid document replaces it.
type KVWatcher struct {
	client *api.Client
	key    string
	cfg    Config
	log    *slog.Logger
}

// NewKV watches the document under key through client.
// Options: WithConfig, WithLogger.
func NewKV(client *api.Client, key string, opts ...Option) *KVWatcher {
	o := buildOptions(opts)
	return &KVWatcher{client: client, key: key, cfg: o.cfg, log: o.cfg.Logger.With("consul_kv", key)}
}

// Fetch reads the document once (no blocking). It returns the set sorted
// by ID and the X-Consul-Index of the reply; a missing key gives the index
// and an error wrapping ErrKeyNotFound; a rejected document gives the index
// and an error wrapping ErrInvalidDocument.
func (w *KVWatcher) Fetch(ctx context.Context) ([]Backend, uint64, error) {
	r, err := w.fetch(ctx, 0, 0)
	if err != nil {
		return nil, 0, err
	}
	if r.invalid != nil {
		return nil, r.index, r.invalid
	}
	if r.absent != nil {
		return nil, r.index, r.absent
	}
	return r.backends, r.index, nil
}

// Watch runs the blocking-query loop until ctx ends, then returns nil. It
// calls out the same way as ServiceWatcher.Watch; a rejected document is
// logged once and not delivered, and a missing key is warned about (see
// KVWatcher) and not delivered.
func (w *KVWatcher) Watch(ctx context.Context, out func([]Backend)) error {
	return watch(ctx, w.cfg, w.log, w.fetch, out)
}

func (w *KVWatcher) fetch(ctx context.Context, waitIndex uint64, wait time.Duration) (read, error) {
	q := (&api.QueryOptions{WaitIndex: waitIndex, WaitTime: wait}).WithContext(ctx)
	pair, meta, err := w.client.KV().Get(w.key, q)
	if err != nil {
		return read{}, fmt.Errorf("consul kv %s: %w", w.key, err)
	}
	r := read{index: meta.LastIndex, backends: []Backend{}}
	if pair == nil { // 404: no such key (yet), or deleted
		r.absent = fmt.Errorf("consul kv %s: %w", w.key, ErrKeyNotFound)
		r.hint = fmt.Sprintf(`create it with: consul kv put %s @backends.json (an empty set is {"backends": []})`, w.key)
		return r, nil
	}
	backends, err := ParseDocument(pair.Value)
	if err != nil {
		r.invalid = fmt.Errorf("consul kv %s (modify index %d): %w", w.key, pair.ModifyIndex, err)
		return r, nil
	}
	r.backends = backends
	return r, nil
}

// idPattern is the backend ID character set, the same as the node's.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// document is the KV schema; see ParseDocument.
type document struct {
	Backends *[]docBackend `json:"backends"`
}

type docBackend struct {
	ID      *string         `json:"id"`
	Address *string         `json:"address"`
	Weight  json.RawMessage `json:"weight"`
}

// maxProblems bounds how many problems one error lists.
const maxProblems = 10

// ParseDocument decodes and validates a backend document:
//
//	{
//	  "backends": [
//	    {"id": "web-1", "address": "10.0.0.1:8080", "weight": 5},
//	    {"id": "web-2", "address": "[2001:db8::2]:8080"}
//	  ]
//	}
//
// Rules:
//   - the value is one JSON object; anything after it is an error;
//   - "backends" is required and is an array (it may be empty: no backends);
//   - each entry has "id" (required; 1..64 characters of [A-Za-z0-9._-],
//     starting with a letter or digit; unique in the document), "address"
//     (required; host:port, a non-empty host, IPv6 in brackets, a numeric
//     port 1..65535) and "weight" (optional, default 1; a whole JSON number
//     0..10000, where 0 means no new traffic; not a string, not null);
//   - unknown fields are rejected, at the top level and in entries. Field
//     names match case-insensitively, as encoding/json does.
//
// The error wraps ErrInvalidDocument and lists up to 10 problems, each
// naming its place, e.g. `backends[2].weight: 20000 out of range 0..10000`.
// The result is sorted by ID.
func ParseDocument(data []byte) ([]Backend, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: empty value (an empty set is {\"backends\": []})", ErrInvalidDocument)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var doc document
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDocument, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrInvalidDocument)
	}
	if doc.Backends == nil {
		return nil, fmt.Errorf("%w: \"backends\" is required (an array)", ErrInvalidDocument)
	}

	var problems []string
	add := func(i int, field, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("backends[%d].%s: ", i, field)+fmt.Sprintf(format, args...))
	}
	out := make([]Backend, 0, len(*doc.Backends))
	seen := make(map[string]int)
	for i, e := range *doc.Backends {
		var b Backend
		switch {
		case e.ID == nil:
			add(i, "id", "required")
		case !idPattern.MatchString(*e.ID):
			add(i, "id", "%q: want 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", *e.ID)
		default:
			b.ID = *e.ID
			if j, dup := seen[b.ID]; dup {
				add(i, "id", "%q already used by backends[%d]", b.ID, j)
			}
			seen[b.ID] = i
		}
		if e.Address == nil {
			add(i, "address", "required")
		} else if err := checkAddress(*e.Address); err != nil {
			add(i, "address", "%q: %v", *e.Address, err)
		} else {
			b.Address = *e.Address
		}
		b.Weight = 1
		if e.Weight != nil {
			w, err := parseWeight(e.Weight)
			if err != nil {
				add(i, "weight", "%v", err)
			}
			b.Weight = w
		}
		out = append(out, b)
	}
	if len(problems) > 0 {
		msg := strings.Join(problems[:min(len(problems), maxProblems)], "; ")
		if n := len(problems) - maxProblems; n > 0 {
			msg += fmt.Sprintf("; and %d more", n)
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalidDocument, msg)
	}
	slices.SortFunc(out, func(a, b Backend) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func checkAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if host == "" {
		return errors.New("a host is required")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] == '+' || port[0] == '-' {
		return errors.New("want a numeric port 1..65535")
	}
	return nil
}

// parseWeight accepts a whole JSON number in 0..MaxWeight, written without
// fraction or exponent.
func parseWeight(raw json.RawMessage) (int32, error) {
	s := string(bytes.TrimSpace(raw))
	if s == "" || !(s[0] == '-' || s[0] >= '0' && s[0] <= '9') {
		return 0, fmt.Errorf("%s: want a number 0..%d", s, MaxWeight)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: want a whole number 0..%d", s, MaxWeight)
	}
	if n < 0 || n > MaxWeight {
		return 0, fmt.Errorf("%d out of range 0..%d", n, MaxWeight)
	}
	return int32(n), nil
}
