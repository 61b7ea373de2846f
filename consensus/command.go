package consensus

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Op names a command.
type Op string

// The commands. See the constructors for what each one does.
const (
	OpUpsert    Op = "upsert"
	OpSetWeight Op = "set_weight"
	OpClearPin  Op = "clear_pin"
	OpSetDrain  Op = "set_drain"
	OpDelete    Op = "delete"
	OpSeed      Op = "seed"
	OpSync      Op = "sync"
	// OpSetClusterID names the raft cluster once (see SetClusterID). A node
	// built before it refuses the entry like any command it cannot decode:
	// the FSM returns ErrInvalid for it, counts it as rejected and changes
	// nothing, so a mixed-version cluster keeps running without the ID on
	// the older nodes.
	OpSetClusterID Op = "set_cluster_id"
)

// Command is one change to the replicated config. Build it with a
// constructor (Upsert, SetWeight, ...), optionally make it conditional with
// If, check it with Validate and propose it with Store.Apply.
//
// Which fields an Op uses (Validate rejects a command that sets any other):
//
//	upsert      ID, Address, Weight (optional), Drain
//	set_weight  ID, Weight (required)
//	clear_pin   ID
//	set_drain   ID, Drain
//	delete      ID
//	seed        Backends (each with its Source)
//	sync        Source, Backends
//	set_cluster_id  ClusterID
//
// IfIndex may be set on every command.
type Command struct {
	Op Op `json:"op"`
	// IfIndex, when non-zero, makes the command conditional: it is applied
	// only if Config.Index equals IfIndex, otherwise it fails with
	// ErrConflict and changes nothing.
	IfIndex  uint64    `json:"if_index,omitempty"`
	ID       string    `json:"id,omitempty"`
	Address  string    `json:"address,omitempty"`
	Weight   *int32    `json:"weight,omitempty"`
	Drain    bool      `json:"drain,omitempty"`
	Source   string    `json:"source,omitempty"`
	Backends []Backend `json:"backends,omitempty"`
	// ClusterID is only for OpSetClusterID. A new field rather than ID:
	// older nodes decode with unknown fields disallowed, so they refuse the
	// command outright instead of misreading it as a backend ID.
	ClusterID string `json:"cluster_id,omitempty"`
}

// Upsert creates or replaces a backend (PUT /v1/backends/{id}). A new backend
// gets Source "api"; an existing one keeps its Source. Address and Drain are
// replaced. A non-nil weight sets Weight and pins it (see Backend.Pinned); a
// nil weight keeps an existing backend's weight, or gives a new one
// DefaultWeight. A new backend's SourceWeight is its initial weight.
func Upsert(id, address string, weight *int32, drain bool) Command {
	return Command{Op: OpUpsert, ID: id, Address: address, Weight: weight, Drain: drain}
}

// SetWeight sets a backend's weight and pins it, so Consul syncs keep it.
func SetWeight(id string, weight int32) Command {
	return Command{Op: OpSetWeight, ID: id, Weight: &weight}
}

// ClearPin unpins a backend and restores its weight to its SourceWeight.
func ClearPin(id string) Command { return Command{Op: OpClearPin, ID: id} }

// SetDrain sets or clears a backend's drain flag.
func SetDrain(id string, drain bool) Command { return Command{Op: OpSetDrain, ID: id, Drain: drain} }

// Delete removes a backend. A backend whose source still lists it (Consul)
// comes back with the next Sync of that source.
func Delete(id string) Command { return Command{Op: OpDelete, ID: id} }

// Seed replaces the whole backend set, but only in a config nothing was ever
// committed to (Config.Index 0); otherwise it is a successful no-op
// (Result.Changed false). Several nodes may seed concurrently: the first
// committed Seed wins and the others change nothing. Each backend must carry
// its Source; its Weight becomes both Weight and SourceWeight; Pinned and
// SourceWeight in the input are ignored. A config whose backends were all
// deleted is not empty: seeding never resurrects what an operator removed.
func Seed(backends []Backend) Command { return Command{Op: OpSeed, Backends: backends} }

// Sync makes the backends of one source ("static" or "consul") match the
// given set: it adds the new ones, removes those of that source that are
// missing, and updates Address and SourceWeight of the others. An unpinned
// backend's Weight follows its SourceWeight; a pinned one keeps its Weight;
// Drain of existing backends is kept. Backends of other sources are never
// touched, and an input backend whose ID belongs to another source is
// skipped. Input backends' Source must be empty or equal source.
func Sync(source string, backends []Backend) Command {
	return Command{Op: OpSync, Source: source, Backends: backends}
}

// SetClusterID names the raft cluster: id (NewClusterID) becomes the
// cluster ID if none is set yet; otherwise it is a successful no-op, so
// concurrent proposals by successive leaders agree on the first committed
// one, as with Seed. The ID never changes the backend config: Config.Index
// stays, and Result.Changed reports whether the ID was set.
func SetClusterID(id string) Command { return Command{Op: OpSetClusterID, ClusterID: id} }

// ClusterIDLen is the length of a cluster ID: 128 random bits in hex.
const ClusterIDLen = 32

// NewClusterID returns a random 128-bit cluster ID in lowercase hex.
func NewClusterID() string {
	var b [ClusterIDLen / 2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+): it crashes the program instead
	return hex.EncodeToString(b[:])
}

func validClusterID(id string) bool {
	if len(id) != ClusterIDLen {
		return false
	}
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// If returns a copy of c that is applied only if the config index is still
// index (see Command.IfIndex). If(0) makes it unconditional.
func (c Command) If(index uint64) Command {
	c.IfIndex = index
	return c
}

// Wire encoding: one version byte, then the JSON encoding of Command (the
// field names are the json tags above). Version 1 is the only one so far; a
// later binary or extended encoding gets a new version byte, and a node that
// does not know a version refuses the command with ErrInvalid.
const (
	commandV1 byte = 1
	// MaxCommandSize bounds an encoded command; MaxBackends backends fit.
	MaxCommandSize = 1 << 20
)

// EncodeCommand returns the wire encoding of c.
func EncodeCommand(c Command) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(commandV1)
	if err := json.NewEncoder(&buf).Encode(c); err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	if buf.Len() > MaxCommandSize {
		return nil, invalidf("encoded command is %d bytes, more than %d", buf.Len(), MaxCommandSize)
	}
	return buf.Bytes(), nil
}

// DecodeCommand parses the wire encoding of a command. It does not validate
// the command (see Validate). Every error wraps ErrInvalid. It never panics,
// whatever the input.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) == 0 {
		return Command{}, invalidf("empty command")
	}
	if len(b) > MaxCommandSize {
		return Command{}, invalidf("command is %d bytes, more than %d", len(b), MaxCommandSize)
	}
	if b[0] != commandV1 {
		return Command{}, invalidf("unsupported command encoding version %d", b[0])
	}
	dec := json.NewDecoder(bytes.NewReader(b[1:]))
	dec.DisallowUnknownFields()
	var c Command
	if err := dec.Decode(&c); err != nil {
		return Command{}, invalidf("decode: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Command{}, invalidf("trailing data after the command")
	}
	return c, nil
}

// Validate reports whether c is well formed: a known Op, the fields that Op
// needs and no others, ids, addresses and weights in range, no duplicate ids.
// Errors wrap ErrInvalid and name the field and the allowed range. The leader
// calls it before proposing (Store.Apply does), and the FSM calls it again
// for every committed command. It does not look at the current config.
func Validate(c Command) error {
	// The fields each op uses; any other non-zero field is an error.
	var uses struct{ id, address, weight, drain, source, backends, clusterID bool }
	switch c.Op {
	case OpUpsert:
		uses.id, uses.address, uses.weight, uses.drain = true, true, true, true
	case OpSetWeight:
		uses.id, uses.weight = true, true
	case OpClearPin, OpDelete:
		uses.id = true
	case OpSetDrain:
		uses.id, uses.drain = true, true
	case OpSeed:
		uses.backends = true
	case OpSync:
		uses.source, uses.backends = true, true
	case OpSetClusterID:
		uses.clusterID = true
	case "":
		return invalidf("op is missing")
	default:
		return invalidf("unknown op %.32q", c.Op)
	}
	for _, f := range []struct {
		name      string
		set, used bool
	}{
		{"id", c.ID != "", uses.id},
		{"address", c.Address != "", uses.address},
		{"weight", c.Weight != nil, uses.weight},
		{"drain", c.Drain, uses.drain},
		{"source", c.Source != "", uses.source},
		{"backends", c.Backends != nil, uses.backends},
		{"cluster_id", c.ClusterID != "", uses.clusterID},
	} {
		if f.set && !f.used {
			return invalidf("field %s is not used by op %s", f.name, c.Op)
		}
	}

	if uses.id {
		if err := validateID("id", c.ID); err != nil {
			return err
		}
	}
	switch c.Op {
	case OpUpsert:
		if err := validateAddress("address", c.Address); err != nil {
			return err
		}
		if c.Weight != nil {
			return validateWeight("weight", *c.Weight)
		}
	case OpSetWeight:
		if c.Weight == nil {
			return invalidf("weight is missing: want a whole number 0..%d", MaxWeight)
		}
		return validateWeight("weight", *c.Weight)
	case OpSeed:
		return validateSet(c.Backends, "")
	case OpSetClusterID:
		if !validClusterID(c.ClusterID) {
			return invalidf("cluster_id %.40q: want %d lowercase hex digits", c.ClusterID, ClusterIDLen)
		}
	case OpSync:
		if c.Source != SourceStatic && c.Source != SourceConsul {
			return invalidf("source %.32q: want %q or %q", c.Source, SourceStatic, SourceConsul)
		}
		return validateSet(c.Backends, c.Source)
	}
	return nil
}

// validateSet checks the backends of a Seed (source "") or a Sync.
func validateSet(bs []Backend, source string) error {
	if len(bs) > MaxBackends {
		return invalidf("%d backends: at most %d", len(bs), MaxBackends)
	}
	seen := make(map[string]bool, len(bs))
	for i, b := range bs {
		field := fmt.Sprintf("backends[%d]", i)
		if err := validateID(field+".id", b.ID); err != nil {
			return err
		}
		if seen[b.ID] {
			return invalidf("%s.id %q appears twice", field, b.ID)
		}
		seen[b.ID] = true
		if err := validateAddress(field+".address", b.Address); err != nil {
			return err
		}
		if err := validateWeight(field+".weight", b.Weight); err != nil {
			return err
		}
		switch {
		case source == "" && !validSource(b.Source):
			return invalidf("%s.source %.32q: want %q, %q or %q", field, b.Source, SourceStatic, SourceConsul, SourceAPI)
		case source != "" && b.Source != "" && b.Source != source:
			return invalidf("%s.source %.32q: a sync of %q may only carry backends of that source", field, b.Source, source)
		}
	}
	return nil
}
