package consensus

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Limits of the replicated config. The FSM enforces them too, so a command
// that violates them is refused on every node alike.
const (
	MaxWeight     = 10000 // largest backend weight; 0 means "no new traffic"
	DefaultWeight = 1     // weight of a backend created through the API without one (as for -backend)
	MaxBackends   = 4096  // largest backend set a Seed or Sync may carry
	maxIDLen      = 64
	maxHostLen    = 253
)

// Backend sources: who created a backend and owns its address and source weight.
const (
	SourceStatic = "static" // -backend flags
	SourceConsul = "consul" // a Consul service or KV document
	SourceAPI    = "api"    // created through the admin API
)

// Backend is one entry of the replicated config. Values are immutable once
// published in a Config; copy before changing.
type Backend struct {
	ID      string `json:"id"`      // 1-64 chars of [A-Za-z0-9._-], starting with a letter or digit
	Address string `json:"address"` // HOST:PORT, numeric port 1-65535
	Weight  int32  `json:"weight"`  // effective weight, 0..MaxWeight; 0 = no new traffic
	Drain   bool   `json:"drain"`   // no new traffic; in-flight requests finish
	Source  string `json:"source"`  // SourceStatic, SourceConsul or SourceAPI
	// SourceWeight is the weight the backend's source (flags, Consul, or the
	// API call that created it) gives it.
	SourceWeight int32 `json:"source_weight"`
	// Pinned is set when an operator set Weight through the API: a Sync of
	// the backend's source updates SourceWeight but keeps Weight until
	// ClearPin restores Weight to SourceWeight.
	Pinned bool `json:"pinned"`
}

// Config is the replicated configuration.
type Config struct {
	// Index is the raft log index of the last command that changed the
	// config; 0 for a config nothing was ever committed to.
	Index    uint64    `json:"index"`
	Backends []Backend `json:"backends"` // sorted by ID, IDs unique
}

// Backend returns the backend with the given id.
func (c Config) Backend(id string) (Backend, bool) {
	i, ok := findBackend(c.Backends, id)
	if !ok {
		return Backend{}, false
	}
	return c.Backends[i], true
}

// clone returns a copy whose Backends the caller may change. The slice is
// never nil, so it encodes as [] in JSON.
func (c Config) clone() Config {
	bs := make([]Backend, len(c.Backends))
	copy(bs, c.Backends)
	return Config{Index: c.Index, Backends: bs}
}

func findBackend(bs []Backend, id string) (int, bool) {
	return slices.BinarySearchFunc(bs, id, func(b Backend, id string) int { return strings.Compare(b.ID, id) })
}

func sortBackends(bs []Backend) {
	slices.SortFunc(bs, func(a, b Backend) int { return strings.Compare(a.ID, b.ID) })
}

// validateID checks a backend id: 1-64 characters of A-Z a-z 0-9 . _ -,
// starting with a letter or digit.
func validateID(field, id string) error {
	if id == "" {
		return invalidf("%s is empty: want 1-%d characters of A-Z a-z 0-9 . _ -", field, maxIDLen)
	}
	if len(id) > maxIDLen {
		return invalidf("%s %.20q... is %d characters long: want 1-%d", field, id, len(id), maxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return invalidf("%s %q: must start with a letter or digit", field, id)
		}
		if !alnum && c != '.' && c != '_' && c != '-' {
			return invalidf("%s %q: character %q not allowed: want A-Z a-z 0-9 . _ -", field, id, c)
		}
	}
	return nil
}

// validateAddress checks HOST:PORT with a non-empty host (an IP address or a
// DNS name) and a numeric port 1-65535. It never resolves anything: the FSM
// calls it and must give the same answer on every node.
func validateAddress(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return invalidf("%s %q: want HOST:PORT", field, addr)
	}
	if host == "" {
		return invalidf("%s %q: a host is required", field, addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return invalidf("%s %q: port must be a number 1-65535", field, addr)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if len(host) > maxHostLen {
		return invalidf("%s: host is longer than %d characters", field, maxHostLen)
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return invalidf("%s %q: host is neither an IP address nor a DNS name", field, addr)
		}
	}
	return nil
}

// ValidateBackend checks a backend's id, address and weight by the rules
// every command is held to, so that a backend accepted anywhere else (a
// -backend flag, a Consul instance) is one the FSM accepts too. what names
// it in the messages, e.g. "backend".
func ValidateBackend(what string, b Backend) error {
	if err := validateID(what+" id", b.ID); err != nil {
		return err
	}
	if err := validateAddress(what+" "+b.ID+" address", b.Address); err != nil {
		return err
	}
	return validateWeight(what+" "+b.ID+" weight", b.Weight)
}

func validateWeight(field string, w int32) error {
	if w < 0 || w > MaxWeight {
		return invalidf("%s %d is out of range: want a whole number 0..%d (0 = no new traffic)", field, w, MaxWeight)
	}
	return nil
}

func validSource(s string) bool {
	return s == SourceStatic || s == SourceConsul || s == SourceAPI
}
