package consensus

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func w32(v int32) *int32 { return &v }

func TestValidate(t *testing.T) {
	okSet := []Backend{{ID: "a", Address: "10.0.0.1:80", Weight: 1, Source: SourceStatic}}
	tests := []struct {
		name string
		cmd  Command
		want string // "" = valid; otherwise a substring of the error, which must wrap ErrInvalid
	}{
		{"upsert", Upsert("web-1", "10.0.0.1:8080", nil, false), ""},
		{"upsert with weight and drain", Upsert("web_1.x", "[::1]:8080", w32(MaxWeight), true), ""},
		{"upsert dns name", Upsert("w", "backend-1.internal:443", w32(0), false), ""},
		{"set weight 0", SetWeight("a", 0), ""},
		{"clear pin", ClearPin("a"), ""},
		{"set drain", SetDrain("a", true), ""},
		{"delete conditional", Delete("a").If(7), ""},
		{"seed", Seed(okSet), ""},
		{"seed empty", Seed(nil), ""},
		{"sync consul", Sync(SourceConsul, []Backend{{ID: "a", Address: "h:1", Weight: 3}}), ""},
		{"sync static empty", Sync(SourceStatic, nil), ""},

		{"no op", Command{}, "op is missing"},
		{"unknown op", Command{Op: "explode"}, "unknown op"},
		{"empty id", SetWeight("", 1), "id is empty"},
		{"id too long", Delete(strings.Repeat("a", 65)), "65 characters"},
		{"id starts with dash", Delete("-a"), "must start with a letter or digit"},
		{"id with slash", Delete("a/b"), "not allowed"},
		{"id with space", Delete("a b"), "not allowed"},
		{"weight -1", SetWeight("a", -1), "weight -1 is out of range"},
		{"weight too high", SetWeight("a", MaxWeight+1), "out of range"},
		{"set weight without weight", Command{Op: OpSetWeight, ID: "a"}, "weight is missing"},
		{"upsert weight 1e9", Upsert("a", "h:1", w32(1e9), false), "out of range"},
		{"upsert no address", Upsert("a", "", nil, false), "address"},
		{"upsert no port", Upsert("a", "10.0.0.1", nil, false), "want HOST:PORT"},
		{"upsert port 0", Upsert("a", "10.0.0.1:0", nil, false), "port must be a number 1-65535"},
		{"upsert port too big", Upsert("a", "10.0.0.1:65536", nil, false), "port"},
		{"upsert named port", Upsert("a", "10.0.0.1:http", nil, false), "port"},
		{"upsert no host", Upsert("a", ":80", nil, false), "a host is required"},
		{"upsert bad host", Upsert("a", "exa mple:80", nil, false), "neither an IP address nor a DNS name"},
		{"unused field", Command{Op: OpDelete, ID: "a", Address: "h:1"}, "field address is not used by op delete"},
		{"unused weight", Command{Op: OpClearPin, ID: "a", Weight: w32(1)}, "field weight"},
		{"unused backends", Command{Op: OpSetDrain, ID: "a", Backends: []Backend{}}, "field backends"},
		{"seed without source", Seed([]Backend{{ID: "a", Address: "h:1", Weight: 1}}), "backends[0].source"},
		{"seed duplicate", Seed(append(okSet, okSet[0])), "appears twice"},
		{"seed bad weight", Seed([]Backend{{ID: "a", Address: "h:1", Weight: -5, Source: SourceAPI}}), "backends[0].weight -5"},
		{"seed bad address", Seed([]Backend{{ID: "a", Address: "h", Weight: 1, Source: SourceAPI}}), "backends[0].address"},
		{"sync api", Sync(SourceAPI, nil), "source \"api\""},
		{"sync no source", Sync("", nil), "source"},
		{"sync foreign source", Sync(SourceConsul, okSet), "may only carry backends of that source"},
		{"sync too many", Sync(SourceConsul, make([]Backend, MaxBackends+1)), "at most"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.cmd)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestCommandRoundTrip(t *testing.T) {
	cmds := []Command{
		Upsert("a", "10.0.0.1:80", nil, false),
		Upsert("a", "10.0.0.1:80", w32(0), true).If(3),
		SetWeight("a", 42),
		ClearPin("a"),
		SetDrain("a", true),
		Delete("a").If(1 << 60),
		Seed([]Backend{{ID: "b", Address: "h:2", Weight: 2, Source: SourceConsul}, {ID: "a", Address: "h:1", Weight: 1, Source: SourceStatic}}),
		Sync(SourceConsul, []Backend{{ID: "a", Address: "h:1", Weight: 9}}),
	}
	for _, c := range cmds {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("encode %+v: %v", c, err)
		}
		if b[0] != commandV1 {
			t.Fatalf("version byte %d", b[0])
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		b2, _ := EncodeCommand(got)
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed the command:\n%s\n%s", b, b2)
		}
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty command"},
		{"version 0", []byte("\x00{}"), "unsupported command encoding version 0"},
		{"version 2", []byte("\x02{}"), "version 2"},
		{"raw json without version", []byte(`{"op":"delete","id":"a"}`), "version 123"},
		{"truncated", []byte("\x01{\"op\":"), "decode"},
		{"not an object", []byte("\x01[1,2]"), "decode"},
		{"unknown field", []byte("\x01{\"op\":\"delete\",\"id\":\"a\",\"force\":true}"), "unknown field"},
		{"weight string", []byte("\x01{\"op\":\"set_weight\",\"id\":\"a\",\"weight\":\"abc\"}"), "decode"},
		{"weight fraction", []byte("\x01{\"op\":\"set_weight\",\"id\":\"a\",\"weight\":1.5}"), "decode"},
		{"weight overflows int32", []byte("\x01{\"op\":\"set_weight\",\"id\":\"a\",\"weight\":1e10}"), "decode"},
		{"trailing data", []byte("\x01{\"op\":\"delete\",\"id\":\"a\"}{}"), "trailing data"},
		{"too big", append([]byte{1}, make([]byte, MaxCommandSize)...), "more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCommand(tc.in)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeCommand = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeCommand feeds arbitrary bytes to the decoder and, through the
// FSM, to the state transition: nothing may panic, every error must be one of
// the contract errors, a valid command must survive an encode/decode round
// trip, and an applied command must leave a well-formed config.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []Command{
		Upsert("a", "10.0.0.1:80", w32(3), true).If(5),
		SetWeight("c", 7), ClearPin("c"), SetDrain("a", true), Delete("d"),
		Seed([]Backend{{ID: "x", Address: "h:1", Weight: 1, Source: SourceStatic}}),
		Sync(SourceConsul, []Backend{{ID: "c", Address: "h:3", Weight: 2}, {ID: "n", Address: "[::1]:9", Weight: 0}}),
	} {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("\x01{}"))
	f.Add([]byte("\x01{\"op\":\"set_weight\",\"id\":\"a\",\"weight\":-1}"))
	f.Add([]byte("\x02garbage"))

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("decode error %v does not wrap ErrInvalid", err)
			}
		} else if Validate(c) == nil {
			enc, err := EncodeCommand(c)
			if err != nil {
				t.Fatalf("encode a valid command: %v", err)
			}
			c2, err := DecodeCommand(enc)
			if err != nil {
				t.Fatalf("decode own encoding %q: %v", enc, err)
			}
			if enc2, _ := EncodeCommand(c2); !bytes.Equal(enc, enc2) {
				t.Fatalf("round trip changed the command:\n%q\n%q", enc, enc2)
			}
		}

		fs := newFSM()
		fs.publish(sampleConfig())
		before := fs.config()
		res, ok := fs.Apply(&raft.Log{Index: 11, Type: raft.LogCommand, Data: data}).(applyResult)
		if !ok {
			t.Fatal("FSM.Apply returned something other than applyResult")
		}
		after := fs.config()
		if res.Err != nil {
			if !errors.Is(res.Err, ErrInvalid) && !errors.Is(res.Err, ErrUnknownBackend) && !errors.Is(res.Err, ErrConflict) {
				t.Fatalf("FSM error %v is not a contract error", res.Err)
			}
			if !configEqual(before, after) || res.Index != before.Index {
				t.Fatalf("a refused command changed the config")
			}
			return
		}
		if res.Changed != (after.Index == 11) || res.Index != after.Index {
			t.Fatalf("result %+v does not match config index %d", res, after.Index)
		}
		checkWellFormed(t, after)
	})
}

// checkWellFormed asserts the config invariants every applied command keeps.
func checkWellFormed(t testing.TB, c Config) {
	t.Helper()
	for i, b := range c.Backends {
		if i > 0 && c.Backends[i-1].ID >= b.ID {
			t.Fatalf("backends not sorted/unique at %d: %q >= %q", i, c.Backends[i-1].ID, b.ID)
		}
		if validateID("id", b.ID) != nil || validateAddress("address", b.Address) != nil ||
			validateWeight("w", b.Weight) != nil || validateWeight("sw", b.SourceWeight) != nil || !validSource(b.Source) {
			t.Fatalf("malformed backend %+v", b)
		}
	}
}

// FuzzConfigApply drives the state transition with structured commands, so
// the fuzzer reaches apply and its invariants without having to find JSON.
func FuzzConfigApply(f *testing.F) {
	f.Add(uint8(0), "z", "10.0.0.9:80", int32(3), true, false, uint64(0), uint8(2))
	f.Add(uint8(1), "c", "", int32(-1), false, true, uint64(10), uint8(0))
	f.Add(uint8(6), "c", "h:1", int32(9), false, false, uint64(0), uint8(3))
	f.Fuzz(func(t *testing.T, op uint8, id, addr string, weight int32, drain, noWeight bool, ifIndex uint64, n uint8) {
		var w *int32
		if !noWeight {
			w = &weight
		}
		var set []Backend
		for i := range int(n % 5) {
			set = append(set, Backend{ID: id + strings.Repeat("x", i), Address: addr, Weight: weight + int32(i), Source: SourceConsul})
		}
		var cmd Command
		switch op % 7 {
		case 0:
			cmd = Upsert(id, addr, w, drain)
		case 1:
			cmd = SetWeight(id, weight)
		case 2:
			cmd = ClearPin(id)
		case 3:
			cmd = SetDrain(id, drain)
		case 4:
			cmd = Delete(id)
		case 5:
			cmd = Seed(set)
		case 6:
			cmd = Sync(SourceConsul, set)
		}
		cmd = cmd.If(ifIndex)
		start := sampleConfig()
		if n%2 == 0 {
			start = Config{Backends: []Backend{}}
		}
		orig := start.clone()
		got, changed, err := start.apply(cmd, 11)
		if err != nil {
			if changed || !configEqual(got, orig) {
				t.Fatalf("refused %+v changed the config", cmd)
			}
			return
		}
		if changed != (got.Index == 11) {
			t.Fatalf("changed=%v index=%d", changed, got.Index)
		}
		checkWellFormed(t, got)
		// Determinism: the same command on the same config gives the same result.
		again, _, _ := orig.apply(cmd, 11)
		if !configEqual(got, again) {
			t.Fatalf("apply is not deterministic for %+v", cmd)
		}
	})
}
