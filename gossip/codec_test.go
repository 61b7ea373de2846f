package gossip

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

func backends(n int, idFmt string) []BackendState {
	out := make([]BackendState, n)
	for i := range out {
		out[i] = BackendState{
			ID:       fmt.Sprintf(idFmt, i),
			InFlight: int64(i*37%1000) - 3, // a few negative values too
			Breaker:  BreakerState(i % 3),
		}
	}
	return out
}

// decodeAll decodes chunks and checks their framing; it returns the entries
// in chunk order.
func decodeAll(t *testing.T, chunks [][]byte, origin string, seq uint64) []BackendState {
	t.Helper()
	var got []BackendState
	for i, c := range chunks {
		m, err := decodeMessage(c)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if m.kind != kindReport || m.origin != origin || m.seq != seq || m.index != i || m.count != len(chunks) {
			t.Fatalf("chunk %d header = kind %d origin %q seq %d %d/%d", i, m.kind, m.origin, m.seq, m.index, m.count)
		}
		got = append(got, m.states...)
	}
	return got
}

func TestCodecRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		states     []BackendState
		wantChunks int // 0: don't check
	}{
		{name: "empty", states: nil, wantChunks: 1},
		{name: "one", states: []BackendState{{ID: "b1", InFlight: 7, Breaker: Open}}, wantChunks: 1},
		{name: "extremes", states: []BackendState{
			{ID: "min", InFlight: math.MinInt64, Breaker: HalfOpen},
			{ID: "max", InFlight: math.MaxInt64},
			{ID: strings.Repeat("x", MaxIDLen), InFlight: 1},
		}, wantChunks: 1},
		{name: "250 short IDs", states: backends(250, "b%d")},
		{name: "250 backends", states: backends(250, "backend-%03d")},
		{name: "250 host:port IDs", states: backends(250, "10.0.%d.1:8080")},
		{name: "5000 backends", states: backends(5000, "b-%04d")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chunks, skipped := encodeReport("node-1", 42, tc.states, MaxMessageSize)
			if skipped != 0 {
				t.Fatalf("skipped %d entries", skipped)
			}
			if tc.wantChunks > 0 && len(chunks) != tc.wantChunks {
				t.Errorf("%d chunks, want %d", len(chunks), tc.wantChunks)
			}
			for i, c := range chunks {
				if len(c) > MaxMessageSize {
					t.Errorf("chunk %d is %d bytes, limit %d", i, len(c), MaxMessageSize)
				}
			}
			got := decodeAll(t, chunks, "node-1", 42)
			if len(got) != len(tc.states) || (len(got) > 0 && !reflect.DeepEqual(got, tc.states)) {
				t.Fatalf("round trip changed the states: got %d entries, want %d", len(got), len(tc.states))
			}
			t.Logf("%d backends: %d chunks, %d bytes", len(tc.states), len(chunks), totalLen(chunks))
		})
	}
}

func totalLen(chunks [][]byte) int {
	n := 0
	for _, c := range chunks {
		n += len(c)
	}
	return n
}

// 250 backends must be split, every chunk within the limit, and the chunks
// must be reasonably full (the splitter does not waste packets).
func TestCodecSplits250Backends(t *testing.T) {
	states := backends(250, "backend-%03d")
	chunks, _ := encodeReport(strings.Repeat("n", MaxNameLen), math.MaxUint64, states, MaxMessageSize)
	if len(chunks) < 2 {
		t.Fatalf("250 backends in %d chunk(s); want a split", len(chunks))
	}
	for i, c := range chunks[:len(chunks)-1] {
		if len(c) > MaxMessageSize || len(c) < MaxMessageSize-30 {
			t.Errorf("chunk %d is %d bytes; want within 30 bytes under %d", i, len(c), MaxMessageSize)
		}
	}
	if got := decodeAll(t, chunks, strings.Repeat("n", MaxNameLen), math.MaxUint64); !reflect.DeepEqual(got, states) {
		t.Fatal("round trip changed the states")
	}
	// A smaller limit (e.g. a future label or encryption budget) is honoured too.
	small, _ := encodeReport("n", 1, states, 300)
	for i, c := range small {
		if len(c) > 300 {
			t.Errorf("limit 300: chunk %d is %d bytes", i, len(c))
		}
	}
}

func TestCodecSkipsEntriesThatCannotTravel(t *testing.T) {
	states := []BackendState{
		{ID: "ok", InFlight: 1},
		{ID: ""},
		{ID: strings.Repeat("x", MaxIDLen+1)},
		{ID: "bad-breaker", Breaker: 9},
		{ID: "ok2", InFlight: 2, Breaker: Open},
	}
	chunks, skipped := encodeReport("n", 1, states, MaxMessageSize)
	if skipped != 3 {
		t.Errorf("skipped %d, want 3", skipped)
	}
	got := decodeAll(t, chunks, "n", 1)
	want := []BackendState{states[0], states[4]}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestCodecByeAndState(t *testing.T) {
	m, err := decodeMessage(encodeBye("node-9", 77))
	if err != nil || m.kind != kindBye || m.origin != "node-9" || m.seq != 77 {
		t.Fatalf("bye: %+v, %v", m, err)
	}
	chunks, _ := encodeReport("node-9", 78, backends(300, "backend-%03d"), MaxMessageSize)
	got, err := decodeState(encodeState(chunks))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, chunks) {
		t.Fatal("state bundle changed the chunks")
	}
}

func TestMetaRoundTrip(t *testing.T) {
	meta := map[string]string{"admin": "127.0.0.1:8081", "raft": "127.0.0.1:9000", "e": ""}
	got, err := decodeMeta(encodeMeta(meta))
	if err != nil || !reflect.DeepEqual(got, meta) {
		t.Fatalf("got %v, %v", got, err)
	}
	if !bytes.Equal(encodeMeta(meta), encodeMeta(map[string]string{"raft": "127.0.0.1:9000", "e": "", "admin": "127.0.0.1:8081"})) {
		t.Error("meta encoding depends on map order")
	}
	if b := encodeMeta(nil); b != nil {
		t.Errorf("empty meta encodes to %d bytes", len(b))
	}
	for _, bad := range [][]byte{{2}, {1}, {1, 5, 1, 'a'}, {1, 1, 1, 'a', 9, 'b'}, {1, 0, 0}, bytes.Repeat([]byte{1}, 600)} {
		if _, err := decodeMeta(bad); err == nil {
			t.Errorf("decodeMeta(%x) accepted", bad)
		}
	}
}

// hdr builds a report header by hand so tests can lie in any field.
func hdr(origin string, seq, idx, count, entries uint64) []byte {
	b := []byte{wireVersion, kindReport}
	b = appendString(b, origin)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, idx)
	b = binary.AppendUvarint(b, count)
	return binary.AppendUvarint(b, entries)
}

func TestDecodeRejectsBadInput(t *testing.T) {
	good, _ := encodeReport("node-1", 5, backends(20, "backend-%03d"), MaxMessageSize)
	entry := appendString(nil, "b1")
	entry = binary.AppendVarint(entry, 3)
	entry = append(entry, byte(Closed))
	huge := binary.AppendUvarint(nil, math.MaxUint64)

	tests := []struct {
		name string
		in   []byte
		want string // substring of the error
	}{
		{"nil", nil, "truncated"},
		{"version only", []byte{1}, "truncated"},
		{"future version", []byte{2, kindReport}, "version"},
		{"unknown kind", append([]byte{1, 9}, appendString(binary.AppendUvarint(nil, 1), "n")...), "kind"},
		{"state kind is not a message", encodeState(good), "kind"},
		{"empty origin", append([]byte{1, kindBye, 0}, 1), "empty origin"},
		{"origin length huge", append([]byte{1, kindReport}, huge...), "origin length"},
		{"origin length past end", []byte{1, kindReport, 50, 'a'}, "truncated"},
		{"origin too long", append([]byte{1, kindReport}, appendString(nil, strings.Repeat("o", MaxNameLen+1))...), "origin length"},
		{"varint overflow", append([]byte{1, kindBye, 1, 'n'}, bytes.Repeat([]byte{0xff}, 11)...), "overflow"},
		{"truncated chunk", good[0][:len(good[0])-1], "truncated"},
		{"trailing bytes", append(append([]byte(nil), good[0]...), 0), "trailing"},
		{"bye with trailing bytes", append(encodeBye("n", 1), 1), "trailing"},
		{"count zero", hdr("n", 1, 0, 0, 0), "out of range"},
		{"index past count", hdr("n", 1, 3, 3, 0), "out of range"},
		{"count over max", hdr("n", 1, 0, MaxChunks+1, 0), "out of range"},
		{"huge entry count", append(hdr("n", 1, 0, 1, math.MaxUint64), entry...), "entry count"},
		{"entry count past data", append(hdr("n", 1, 0, 1, 2), entry...), "entry count"},
		{"empty ID", append(hdr("n", 1, 0, 1, 1), 0, 0, 0, 0), "empty backend ID"},
		{"ID length huge", append(append(hdr("n", 1, 0, 1, 1), huge...), 0, 0, 0), "backend ID length"},
		{"ID over max", append(hdr("n", 1, 0, 1, 1), appendString(nil, strings.Repeat("i", MaxIDLen+1))...), "backend ID length"},
		{"bad breaker", append(hdr("n", 1, 0, 1, 1), appendString(nil, "b1")[0], 'b', '1', 2, 3), "breaker"},
		{"too big", make([]byte, maxWireChunk+1), "exceeds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decodeMessage(tc.in)
			if err == nil {
				t.Fatalf("accepted: %+v", m)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestDecodeStateRejectsBadInput(t *testing.T) {
	good, _ := encodeReport("node-1", 5, backends(200, "backend-%03d"), MaxMessageSize)
	bundle := encodeState(good)
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"wrong kind", append([]byte{1, kindReport}, bundle[2:]...)},
		{"truncated", bundle[:len(bundle)-1]},
		{"trailing", append(append([]byte(nil), bundle...), 0)},
		{"too many chunks", append([]byte{1, kindState}, binary.AppendUvarint(nil, MaxChunks+1)...)},
		{"huge count", append([]byte{1, kindState}, binary.AppendUvarint(nil, math.MaxUint64)...)},
		{"huge chunk", append([]byte{1, kindState, 1}, binary.AppendUvarint(nil, math.MaxUint64)...)},
		{"chunk over limit", append([]byte{1, kindState, 1}, binary.AppendUvarint(nil, maxWireChunk+1)...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeState(tc.in); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// Every prefix of a valid message is rejected, never a panic.
func TestDecodeEveryTruncation(t *testing.T) {
	chunks, _ := encodeReport("node-1", 1<<40, backends(40, "backend-%03d"), MaxMessageSize)
	msgs := append(chunks, encodeBye("node-1", 9))
	for _, c := range msgs {
		for i := range len(c) {
			if _, err := decodeMessage(c[:i]); err == nil {
				t.Fatalf("prefix of %d/%d bytes accepted", i, len(c))
			}
		}
	}
	bundle := encodeState(chunks)
	for i := range len(bundle) {
		if _, err := decodeState(bundle[:i]); err == nil {
			t.Fatalf("state prefix of %d/%d bytes accepted", i, len(bundle))
		}
	}
}

func TestBreakerStateString(t *testing.T) {
	for s, want := range map[BreakerState]string{Closed: "closed", Open: "open", HalfOpen: "half-open", 7: "breaker(7)"} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", s, got, want)
		}
	}
}

// FuzzDecodeReport feeds arbitrary bytes to every decoder of peer input.
// They must never panic, and whatever they accept must be within the caps
// and survive a re-encode.
func FuzzDecodeReport(f *testing.F) {
	// Small seeds: the fuzzer minimises every new interesting input for up
	// to -fuzzminimizetime (60s by default) with a cost that grows with its
	// length, and mutations of 1 KB chunks stall the run in minimisation.
	chunks, _ := encodeReport("node-1", 12345, backends(12, "b-%02d"), 80)
	for _, c := range chunks {
		f.Add(c)
	}
	f.Add(encodeBye("node-2", 1))
	f.Add(encodeState(chunks[:2]))
	f.Add(encodeMeta(map[string]string{"admin": "127.0.0.1:8081"}))
	f.Add(hdr("n", 1, 0, 1, 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMessage(b); err == nil {
			checkMessage(t, m, len(b))
		}
		if cs, err := decodeState(b); err == nil {
			if len(cs) > MaxChunks {
				t.Fatalf("%d chunks accepted", len(cs))
			}
			for _, c := range cs {
				if m, err := decodeMessage(c); err == nil {
					checkMessage(t, m, len(c))
				}
			}
		}
		if meta, err := decodeMeta(b); err == nil && len(meta) > len(b) {
			t.Fatalf("%d meta pairs from %d bytes", len(meta), len(b))
		}
	})
}

func checkMessage(t *testing.T, m message, n int) {
	t.Helper()
	if m.origin == "" || len(m.origin) > MaxNameLen {
		t.Fatalf("origin %q accepted", m.origin)
	}
	switch m.kind {
	case kindBye:
		return
	case kindReport:
	default:
		t.Fatalf("kind %d accepted", m.kind)
	}
	if m.count < 1 || m.count > MaxChunks || m.index < 0 || m.index >= m.count {
		t.Fatalf("chunk %d/%d accepted", m.index, m.count)
	}
	if len(m.states)*minEntrySize > n {
		t.Fatalf("%d entries from %d bytes", len(m.states), n)
	}
	for _, s := range m.states {
		if entrySize(s) == 0 {
			t.Fatalf("entry %+v accepted", s)
		}
	}
	// What was accepted re-encodes into one chunk that decodes the same.
	chunks, skipped := encodeReport(m.origin, m.seq, m.states, maxWireChunk+64)
	if skipped != 0 || len(chunks) != 1 {
		t.Fatalf("re-encode: %d chunks, %d skipped", len(chunks), skipped)
	}
	m2, err := decodeMessage(chunks[0])
	if err != nil {
		if len(chunks[0]) > maxWireChunk {
			return // the canonical form of a padded message can't be bigger; guard anyway
		}
		t.Fatalf("re-encoded chunk rejected: %v", err)
	}
	if !reflect.DeepEqual(m2.states, m.states) && (len(m2.states) != 0 || len(m.states) != 0) {
		t.Fatal("re-encode changed the entries")
	}
}
