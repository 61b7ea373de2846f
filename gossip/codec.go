package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// BreakerState is a backend's circuit state on one node, as gossiped.
type BreakerState uint8

// The circuit states. The numeric values are part of the wire format.
const (
	Closed   BreakerState = 0
	Open     BreakerState = 1
	HalfOpen BreakerState = 2
)

// String returns "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	default:
		return fmt.Sprintf("breaker(%d)", uint8(s))
	}
}

// BackendState is one node's live view of one backend.
type BackendState struct {
	ID       string       // backend ID, 1..MaxIDLen bytes
	InFlight int64        // requests (or connections) in flight from this node
	Breaker  BreakerState // this node's circuit for the backend
}

// Wire format limits. They bound what a sender emits and what a receiver
// allocates for a hostile message.
const (
	wireVersion = 1

	kindReport = 1 // one chunk of a node's full state
	kindBye    = 2 // the origin is leaving the cluster
	kindState  = 3 // push-pull bundle: every chunk, length-prefixed

	// MaxMessageSize is the largest message the sender emits. memberlist
	// measured ~1,395 bytes for a user message in a plain gossip packet,
	// ~1,356 with encryption and a label and about 1,100 when piggybacked on
	// a probe; 1,100 fits all of them, and the UDP datagram (plus memberlist's
	// 1-byte type, 5-byte CRC and 29-byte AES-GCM overhead) stays under the
	// default 1,400-byte UDPBufferSize.
	MaxMessageSize = 1100
	// MaxIDLen is the longest backend ID that travels; longer IDs are
	// skipped by the sender (and logged).
	MaxIDLen = 255
	// MaxNameLen is the longest node name (Validate enforces it).
	MaxNameLen = 128
	// MaxChunks bounds the chunks of one report: with short IDs (~20 bytes)
	// about 40 entries fit a chunk, so 128 chunks carry ~5,000 backends.
	MaxChunks = 128

	// maxWireChunk is what a receiver accepts as one chunk: a little more
	// than MaxMessageSize, so a peer with a slightly different limit still
	// gets through, but a hostile length cannot make us allocate much.
	maxWireChunk = 1400
	// minEntrySize is the smallest encoded entry (1-byte ID length, 1-byte
	// ID, 1-byte count, breaker byte); it caps the entries a buffer can claim.
	minEntrySize = 4
)

var (
	errTruncated = errors.New("truncated")
	errVersion   = errors.New("unsupported version")
)

// message is one decoded gossip message (kindReport or kindBye).
type message struct {
	kind   byte
	origin string
	seq    uint64
	index  int // chunk index (kindReport)
	count  int // chunk count (kindReport)
	states []BackendState
}

// encodeReport splits states into chunks of at most limit bytes, all with the
// same origin and seq. Entries that cannot travel (empty or over-long ID,
// unknown breaker state) are skipped and counted; if the state needs more than
// MaxChunks chunks, the excess entries are skipped too. There is always at
// least one chunk, so an empty state still refreshes peers.
func encodeReport(origin string, seq uint64, states []BackendState, limit int) (chunks [][]byte, skipped int) {
	// Header size with the widest index/count/entries varints we may need.
	head := 2 + uvarintLen(uint64(len(origin))) + len(origin) + uvarintLen(seq) +
		2*uvarintLen(MaxChunks) + uvarintLen(uint64(limit))
	budget := limit - head
	type span struct{ from, to int }
	var spans []span
	from, size := 0, 0
	for i, s := range states {
		n := entrySize(s)
		if n == 0 {
			continue
		}
		if size > 0 && size+n > budget {
			spans = append(spans, span{from, i})
			from, size = i, 0
		}
		size += n
	}
	spans = append(spans, span{from, len(states)})
	if len(spans) > MaxChunks {
		for _, sp := range spans[MaxChunks:] {
			for _, s := range states[sp.from:sp.to] {
				if entrySize(s) > 0 {
					skipped++
				}
			}
		}
		spans = spans[:MaxChunks]
	}
	chunks = make([][]byte, len(spans))
	for i, sp := range spans {
		part := states[sp.from:sp.to]
		valid := 0
		for _, s := range part {
			if entrySize(s) > 0 {
				valid++
			} else {
				skipped++
			}
		}
		b := make([]byte, 0, limit)
		b = append(b, wireVersion, kindReport)
		b = appendString(b, origin)
		b = binary.AppendUvarint(b, seq)
		b = binary.AppendUvarint(b, uint64(i))
		b = binary.AppendUvarint(b, uint64(len(spans)))
		b = binary.AppendUvarint(b, uint64(valid))
		for _, s := range part {
			if entrySize(s) == 0 {
				continue
			}
			b = appendString(b, s.ID)
			b = binary.AppendVarint(b, s.InFlight)
			b = append(b, byte(s.Breaker))
		}
		chunks[i] = b
	}
	return chunks, skipped
}

// entrySize is the encoded size of s, or 0 if s cannot travel.
func entrySize(s BackendState) int {
	if len(s.ID) == 0 || len(s.ID) > MaxIDLen || s.Breaker > HalfOpen {
		return 0
	}
	return uvarintLen(uint64(len(s.ID))) + len(s.ID) + varintLen(s.InFlight) + 1
}

// encodeBye encodes the leave announcement.
func encodeBye(origin string, seq uint64) []byte {
	b := make([]byte, 0, 2+1+len(origin)+binary.MaxVarintLen64)
	b = append(b, wireVersion, kindBye)
	b = appendString(b, origin)
	return binary.AppendUvarint(b, seq)
}

// encodeState bundles chunks for push-pull.
func encodeState(chunks [][]byte) []byte {
	n := 2 + binary.MaxVarintLen64
	for _, c := range chunks {
		n += binary.MaxVarintLen64 + len(c)
	}
	b := make([]byte, 0, n)
	b = append(b, wireVersion, kindState)
	b = binary.AppendUvarint(b, uint64(len(chunks)))
	for _, c := range chunks {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	return b
}

// decodeMessage decodes one report chunk or bye. It never panics, never
// keeps b, and allocates at most in proportion to len(b).
func decodeMessage(b []byte) (message, error) {
	var m message
	if len(b) > maxWireChunk {
		return m, fmt.Errorf("message of %d bytes exceeds %d", len(b), maxWireChunk)
	}
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != wireVersion {
		return m, fmt.Errorf("%w %d", errVersion, v)
	}
	m.kind = d.byte()
	m.origin = d.string(MaxNameLen, "origin")
	m.seq = d.uvarint()
	if d.err == nil && m.origin == "" {
		d.fail(errors.New("empty origin"))
	}
	switch {
	case d.err != nil:
	case m.kind == kindBye:
	case m.kind == kindReport:
		idx, cnt := d.uvarint(), d.uvarint()
		n := d.uvarint()
		if d.err != nil {
			break
		}
		if cnt == 0 || cnt > MaxChunks || idx >= cnt {
			d.fail(fmt.Errorf("chunk %d of %d out of range (max %d)", idx, cnt, MaxChunks))
			break
		}
		if n > uint64(d.remaining()/minEntrySize) {
			d.fail(fmt.Errorf("entry count %d exceeds what %d bytes can hold", n, d.remaining()))
			break
		}
		m.index, m.count = int(idx), int(cnt)
		m.states = make([]BackendState, 0, n)
		for range n {
			id := d.string(MaxIDLen, "backend ID")
			if d.err == nil && id == "" {
				d.fail(errors.New("empty backend ID"))
			}
			inflight := d.varint()
			br := BreakerState(d.byte())
			if d.err != nil {
				break
			}
			if br > HalfOpen {
				d.fail(fmt.Errorf("breaker state %d unknown", br))
				break
			}
			m.states = append(m.states, BackendState{ID: id, InFlight: inflight, Breaker: br})
		}
	default:
		d.fail(fmt.Errorf("unknown kind %d", m.kind))
	}
	if d.err == nil && d.remaining() != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", d.remaining()))
	}
	if d.err != nil {
		return message{}, d.err
	}
	return m, nil
}

// decodeState splits a push-pull bundle into its chunks (still encoded; the
// returned slices alias b).
func decodeState(b []byte) ([][]byte, error) {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != wireVersion {
		return nil, fmt.Errorf("%w %d", errVersion, v)
	}
	if k := d.byte(); d.err == nil && k != kindState {
		return nil, fmt.Errorf("state bundle has kind %d", k)
	}
	n := d.uvarint()
	if d.err == nil && n > MaxChunks {
		d.fail(fmt.Errorf("state bundle of %d chunks exceeds %d", n, MaxChunks))
	}
	var chunks [][]byte
	if d.err == nil {
		chunks = make([][]byte, 0, n)
	}
	for i := uint64(0); d.err == nil && i < n; i++ {
		l := d.uvarint()
		if d.err != nil {
			break
		}
		if l > maxWireChunk {
			d.fail(fmt.Errorf("chunk of %d bytes exceeds %d", l, maxWireChunk))
			break
		}
		chunks = append(chunks, d.bytes(int(l)))
	}
	if d.err == nil && d.remaining() != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", d.remaining()))
	}
	if d.err != nil {
		return nil, d.err
	}
	return chunks, nil
}

// encodeMeta encodes node metadata compactly: a version byte, the pair count,
// then key and value of each pair in key order, each a uvarint length plus
// bytes.
func encodeMeta(meta map[string]string) []byte {
	if len(meta) == 0 {
		return nil
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := []byte{wireVersion}
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, meta[k])
	}
	return b
}

// metaMaxSize is memberlist's MetaMaxSize: NodeMeta must not return more.
const metaMaxSize = 512

// decodeMeta is the inverse of encodeMeta. An empty input is an empty map.
func decodeMeta(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) > metaMaxSize {
		return nil, fmt.Errorf("meta of %d bytes exceeds %d", len(b), metaMaxSize)
	}
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != wireVersion {
		return nil, fmt.Errorf("meta: %w %d", errVersion, v)
	}
	n := d.uvarint()
	if d.err == nil && n > uint64(d.remaining()/2) {
		d.fail(fmt.Errorf("meta pair count %d too large", n))
	}
	var m map[string]string
	if d.err == nil {
		m = make(map[string]string, n)
	}
	for i := uint64(0); d.err == nil && i < n; i++ {
		k := d.string(metaMaxSize, "meta key")
		v := d.string(metaMaxSize, "meta value")
		if d.err == nil {
			m[k] = v
		}
	}
	if d.err == nil && d.remaining() != 0 {
		d.fail(fmt.Errorf("meta: %d trailing bytes", d.remaining()))
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// decoder reads from b and remembers the first error; after an error every
// read returns a zero value.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = fmt.Errorf("at byte %d: %w", d.off, err)
	}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 1 {
		d.fail(errTruncated)
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if !d.took(n) {
		return 0
	}
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if !d.took(n) {
		return 0
	}
	return v
}

// took advances past a varint that encoding/binary read in n bytes, or
// records why there was none (n == 0: input ended; n < 0: overflow).
func (d *decoder) took(n int) bool {
	switch {
	case n > 0:
		d.off += n
		return true
	case n == 0:
		d.fail(errTruncated)
	default:
		d.fail(errors.New("varint overflows 64 bits"))
	}
	return false
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > d.remaining() {
		d.fail(errTruncated)
		return nil
	}
	v := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return v
}

// string reads a uvarint length and that many bytes, at most max, and copies
// them into a new string (the input buffer is never retained).
func (d *decoder) string(max int, what string) string {
	l := d.uvarint()
	if d.err != nil {
		return ""
	}
	if l > uint64(max) {
		d.fail(fmt.Errorf("%s length %d exceeds %d", what, l, max))
		return ""
	}
	if l > uint64(d.remaining()) {
		d.fail(errTruncated)
		return ""
	}
	return string(d.bytes(int(l))) // string() copies
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}
