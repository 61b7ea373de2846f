package gossip

import (
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// bare returns a Gossip with no memberlist: enough to drive the delegate
// and the view directly, deterministically.
func bare(name string) (*Gossip, *delegate) {
	c := DefaultConfig()
	c.Name = name
	g := &Gossip{
		cfg:   c.withDefaults(),
		log:   slog.New(slog.DiscardHandler),
		wake:  make(chan struct{}, 1),
		nodes: make(map[string]*nodeRec),
	}
	meta := []byte(nil)
	g.meta.Store(&meta)
	return g, &delegate{g: g}
}

func mlNode(name string, port uint16) *memberlist.Node {
	return &memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: port}
}

func chunksOf(t *testing.T, origin string, seq uint64, states []BackendState, limit int) [][]byte {
	t.Helper()
	c, skipped := encodeReport(origin, seq, states, limit)
	if skipped != 0 {
		t.Fatalf("skipped %d", skipped)
	}
	return c
}

func peerOf(g *Gossip, name string) (PeerReport, bool) {
	for _, p := range g.Peers() {
		if p.Node == name {
			return p, true
		}
	}
	return PeerReport{}, false
}

// The freshness rule: a report replaces the previous one only when every
// chunk of a newer seq has arrived, in any order; older and repeated chunks
// are counted and ignored.
func TestViewAssemblesChunksAndIgnoresStale(t *testing.T) {
	g, d := bare("me")
	d.NotifyJoin(mlNode("me", 1))
	d.NotifyJoin(mlNode("p", 2))

	v1 := backends(30, "backend-%03d")
	c1 := chunksOf(t, "p", 100, v1, 200)
	if len(c1) < 3 {
		t.Fatalf("want several chunks, got %d", len(c1))
	}
	// Out of order: last chunk first; nothing applies until all arrived.
	for i := len(c1) - 1; i > 0; i-- {
		d.NotifyMsg(c1[i])
		if _, ok := peerOf(g, "p"); ok {
			t.Fatalf("report applied after %d of %d chunks", len(c1)-i, len(c1))
		}
	}
	d.NotifyMsg(c1[len(c1)-1]) // duplicate chunk
	d.NotifyMsg(c1[0])
	p, ok := peerOf(g, "p")
	if !ok || p.Seq != 100 || !reflect.DeepEqual(p.Backends, v1) {
		t.Fatalf("report after all chunks: %+v %v", p, ok)
	}

	// An older seq (reordered packet) and a repeat of the applied one.
	old := chunksOf(t, "p", 99, backends(1, "old-%d"), MaxMessageSize)
	d.NotifyMsg(old[0])
	d.NotifyMsg(c1[0])
	st := g.Stats()
	if st.StaleIgnored != 1 || st.Duplicates != 2 || st.ReportsApplied != 1 {
		t.Errorf("stats %+v: want 1 stale, 2 duplicates, 1 applied", st)
	}
	if p, _ := peerOf(g, "p"); p.Seq != 100 {
		t.Fatalf("stale message changed the report to seq %d", p.Seq)
	}

	// A newer seq abandons an unfinished older assembly.
	c2 := chunksOf(t, "p", 101, backends(30, "two-%03d"), 200)
	c3 := chunksOf(t, "p", 102, backends(5, "three-%d"), MaxMessageSize)
	d.NotifyMsg(c2[0])
	d.NotifyMsg(c3[0])
	d.NotifyMsg(c2[1]) // older than the newest assembly: stale
	if p, _ := peerOf(g, "p"); p.Seq != 102 || len(p.Backends) != 5 {
		t.Fatalf("want seq 102 with 5 backends, got %d with %d", p.Seq, len(p.Backends))
	}
	if st := g.Stats(); st.Incomplete != 1 || st.StaleIgnored != 2 {
		t.Errorf("stats %+v: want 1 incomplete, 2 stale", st)
	}

	// A chunk claiming a different count for the same seq is malformed.
	d.NotifyMsg(hdrChunk("p", 200, 0, 2))
	d.NotifyMsg(hdrChunk("p", 200, 1, 3))
	if st := g.Stats(); st.DecodeErrors != 1 {
		t.Errorf("DecodeErrors = %d, want 1", st.DecodeErrors)
	}
}

// A restarted peer whose clock went back (seq far below the old one) is a
// new incarnation, not a stale sender.
func TestViewAcceptsRestartWithClockGoneBack(t *testing.T) {
	g, d := bare("me")
	d.NotifyJoin(mlNode("p", 2))
	old := uint64(time.Now().UnixNano())
	d.NotifyMsg(chunksOf(t, "p", old, backends(1, "old-%d"), MaxMessageSize)[0])
	d.NotifyMsg(chunksOf(t, "p", old-1000, backends(1, "reordered-%d"), MaxMessageSize)[0])
	if p, _ := peerOf(g, "p"); p.Seq != old || g.Stats().StaleIgnored != 1 {
		t.Fatalf("reordered chunk applied: %+v", p)
	}
	restarted := old - uint64(5*time.Second)
	d.NotifyMsg(chunksOf(t, "p", restarted, backends(2, "new-%d"), MaxMessageSize)[0])
	if p, _ := peerOf(g, "p"); p.Seq != restarted || len(p.Backends) != 2 {
		t.Fatalf("restarted node's report not applied: %+v", p)
	}
}

func hdrChunk(origin string, seq uint64, idx, count int) []byte {
	return hdr(origin, seq, uint64(idx), uint64(count), 0)
}

func TestViewMembershipRules(t *testing.T) {
	g, d := bare("me")
	sub := g.Subscribe()
	d.NotifyJoin(mlNode("me", 1))
	d.NotifyMsg(chunksOf(t, "me", 1, backends(1, "b%d"), MaxMessageSize)[0])
	if len(g.Peers()) != 0 || g.Stats().Rejected != 1 {
		t.Fatal("a report under our own name was accepted")
	}

	// A report that arrives before the join event is held, then shown.
	d.NotifyMsg(chunksOf(t, "early", 5, backends(2, "b%d"), MaxMessageSize)[0])
	if len(g.Peers()) != 0 {
		t.Fatal("report from a non-member is visible")
	}
	d.NotifyJoin(mlNode("early", 2))
	if p, ok := peerOf(g, "early"); !ok || len(p.Backends) != 2 {
		t.Fatal("held report not shown after the join")
	}
	select {
	case <-sub:
	default:
		t.Error("no change signal")
	}

	// Failure: the report goes at once, the member is dead.
	d.NotifyLeave(mlNode("early", 2))
	if _, ok := peerOf(g, "early"); ok {
		t.Fatal("report survived NotifyLeave")
	}
	if s := stateOf(g, "early"); s != StateDead {
		t.Errorf("state %s, want dead", s)
	}
	// A late packet of the dead process stays invisible...
	d.NotifyMsg(chunksOf(t, "early", 6, backends(2, "b%d"), MaxMessageSize)[0])
	if _, ok := peerOf(g, "early"); ok {
		t.Fatal("report of a dead member is visible")
	}
	// ...and the restarted process (new address, higher seq) is shown.
	d.NotifyJoin(mlNode("early", 9))
	d.NotifyMsg(chunksOf(t, "early", 1000, backends(3, "b%d"), MaxMessageSize)[0])
	if p, ok := peerOf(g, "early"); !ok || p.Seq != 1000 {
		t.Fatalf("restarted node's report: %+v", p)
	}
	if ms := g.Members(); ms[0].Name != "early" || ms[0].Addr != "127.0.0.1:9" {
		t.Errorf("members %+v", ms)
	}

	// A bye drops the report at once and marks the member left, even
	// before memberlist's own leave arrives; an older report can't undo it.
	d.NotifyMsg(encodeBye("early", 1001))
	if _, ok := peerOf(g, "early"); ok || stateOf(g, "early") != StateLeft {
		t.Fatalf("after bye: visible=%v state=%s", ok, stateOf(g, "early"))
	}
	d.NotifyMsg(chunksOf(t, "early", 1000, backends(3, "b%d"), MaxMessageSize)[0])
	if _, ok := peerOf(g, "early"); ok {
		t.Fatal("older report revived a member that said bye")
	}
	d.NotifyLeave(mlNode("early", 9))
	if s := stateOf(g, "early"); s != StateLeft {
		t.Errorf("state %s after bye+leave, want left", s)
	}

	// Unknown origins are held for at most maxStrangers nodes.
	for i := range maxStrangers + 10 {
		d.NotifyMsg(chunksOf(t, fmt.Sprintf("stranger-%d", i), 1, nil, MaxMessageSize)[0])
	}
	if n := g.strangers(); n != maxStrangers {
		t.Errorf("%d strangers held, want %d", n, maxStrangers)
	}
}

// A dead member is tried again only while no alive member holds its
// address: the address's new holder may join before or after the death,
// or move there, and the check runs again before each retry.
func TestViewLostMemberAddressTaken(t *testing.T) {
	g, d := bare("me")
	lost := func() []string {
		now := time.Now()
		var out []string
		for name := range g.lostAddrs(now) {
			out = append(out, name)
		}
		slices.Sort(out)
		return out
	}
	d.NotifyJoin(mlNode("me", 1))
	for _, n := range []*memberlist.Node{mlNode("b", 2), mlNode("d", 4), mlNode("x", 9)} {
		d.NotifyJoin(n)
		d.NotifyLeave(n)
	}
	if got := lost(); !slices.Equal(got, []string{"b", "d", "x"}) {
		t.Fatalf("lost %v, want [b d x]", got)
	}

	// Another node joins at b's address.
	d.NotifyJoin(mlNode("c", 2))
	if got := lost(); !slices.Equal(got, []string{"d", "x"}) {
		t.Fatalf("after c joined at b's address: lost %v, want [d x]", got)
	}
	// c moves to d's address.
	d.NotifyUpdate(mlNode("c", 4))
	if got := lost(); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("after c moved to d's address: lost %v, want [x]", got)
	}
	// A member dies at an address an alive member already holds.
	d.NotifyJoin(mlNode("e", 5))
	d.NotifyJoin(mlNode("f", 5))
	d.NotifyLeave(mlNode("f", 5))
	if got := lost(); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("after f died at e's address: lost %v, want [x]", got)
	}
	// The check before each retry: an entry whose address is held, however
	// it got there, is dropped; ours counts too.
	g.mu.Lock()
	g.lost["g"] = lostMember{addr: "127.0.0.1:5", since: time.Now()}
	g.lost["h"] = lostMember{addr: "127.0.0.1:1", since: time.Now()}
	g.mu.Unlock()
	if got := lost(); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("held addresses retried: lost %v, want [x]", got)
	}
	// The lost name itself coming back clears its entry.
	d.NotifyJoin(mlNode("x", 9))
	if got := lost(); len(got) != 0 {
		t.Fatalf("after x came back: lost %v", got)
	}
}

func stateOf(g *Gossip, name string) string {
	for _, m := range g.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return "absent"
}

func TestViewEvictsByTTL(t *testing.T) {
	g, d := bare("me")
	g.cfg.ReportTTL = time.Second
	d.NotifyJoin(mlNode("p", 2))
	d.NotifyMsg(chunksOf(t, "p", 1, backends(2, "b%d"), MaxMessageSize)[0])
	half := chunksOf(t, "p", 2, backends(30, "backend-%03d"), 200)
	d.NotifyMsg(half[0])
	sub := g.Subscribe()
	now := time.Now()
	g.evict(now)
	if len(g.Peers()) != 1 {
		t.Fatal("fresh report evicted")
	}
	g.evict(now.Add(2 * time.Second))
	st := g.Stats()
	if st.ReportsExpired != 1 || st.Incomplete != 1 {
		t.Errorf("stats %+v: want 1 expired, 1 incomplete", st)
	}
	g.mu.Lock()
	r := g.nodes["p"]
	gone := r.report == nil && r.pend == nil
	g.mu.Unlock()
	if !gone {
		t.Error("report or assembly kept past the TTL")
	}
	select {
	case <-sub:
	default:
		t.Error("eviction not signalled")
	}
	// Dead members are forgotten after memberlist's dead time.
	g.forget = time.Minute
	d.NotifyLeave(mlNode("p", 2))
	g.evict(time.Now().Add(30 * time.Second))
	if stateOf(g, "p") != StateDead {
		t.Error("dead member forgotten too early")
	}
	g.evict(time.Now().Add(2 * time.Minute))
	if stateOf(g, "p") != "absent" {
		t.Error("dead member never forgotten")
	}
}

// Push-pull carries the last round's chunks; merging them applies the
// report like UDP delivery, and hostile bundles are dropped.
func TestPushPullState(t *testing.T) {
	a, da := bare("a")
	b, db := bare("b")
	if da.LocalState(false) != nil {
		t.Error("state before the first round")
	}
	chunks := chunksOf(t, "a", 7, backends(200, "backend-%03d"), MaxMessageSize)
	a.last.Store(&chunks)
	db.NotifyJoin(mlNode("a", 1))
	db.MergeRemoteState(da.LocalState(true), true)
	p, ok := peerOf(b, "a")
	if !ok || p.Seq != 7 || len(p.Backends) != 200 {
		t.Fatalf("after merge: %+v", p)
	}
	db.MergeRemoteState(da.LocalState(false), false) // same seq again
	if st := b.Stats(); st.Duplicates == 0 || st.ReportsApplied != 1 || st.StatesReceived != 2 {
		t.Errorf("stats %+v", st)
	}
	db.MergeRemoteState([]byte{1, kindState, 200}, false)
	db.MergeRemoteState(encodeState([][]byte{{1, 2, 3}}), false)
	if st := b.Stats(); st.DecodeErrors != 2 {
		t.Errorf("DecodeErrors %d, want 2", st.DecodeErrors)
	}
	_ = a
}

func TestNodeMetaNeverExceedsLimit(t *testing.T) {
	g, d := bare("me")
	b := encodeMeta(map[string]string{"admin": "127.0.0.1:8081"})
	g.meta.Store(&b)
	if got := d.NodeMeta(512); !reflect.DeepEqual(got, b) {
		t.Errorf("NodeMeta = %x", got)
	}
	if got := d.NodeMeta(3); got != nil {
		t.Error("NodeMeta returned more than the limit")
	}
	if d.GetBroadcasts(3, 1400) != nil {
		t.Error("GetBroadcasts returned messages")
	}
	// Garbage meta from a peer is dropped, the member still listed.
	d.NotifyJoin(&memberlist.Node{Name: "p", Addr: net.IPv4(127, 0, 0, 1), Port: 1, Meta: []byte{9, 9, 9}})
	if ms := g.Members(); len(ms) != 1 || ms[0].Meta != nil || g.Stats().DecodeErrors != 1 {
		t.Errorf("members %+v", ms)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Name = "n1"
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"defaults with a name", func(c *Config) {}, ""},
		{"zero optional fields", func(c *Config) { *c = Config{Name: "n1"} }, ""},
		{"ipv6 and keys", func(c *Config) { c.Bind = "[::1]:0"; c.Key = make([]byte, 32); c.Join = []string{"[::1]:7946", "h:1"} }, ""},
		{"no name", func(c *Config) { c.Name = "" }, "-node"},
		{"long name", func(c *Config) { c.Name = strings.Repeat("n", 129) }, "-node"},
		{"bind without port", func(c *Config) { c.Bind = "127.0.0.1" }, "-gossip"},
		{"bind hostname", func(c *Config) { c.Bind = "localhost:7946" }, "-gossip"},
		{"bind bad port", func(c *Config) { c.Bind = "127.0.0.1:70000" }, "-gossip"},
		{"advertise port 0", func(c *Config) { c.Advertise = "10.0.0.1:0" }, "advertise"},
		{"join without port", func(c *Config) { c.Join = []string{"10.0.0.1"} }, "-join"},
		{"join port 0", func(c *Config) { c.Join = []string{"10.0.0.1:0"} }, "-join"},
		{"join no host", func(c *Config) { c.Join = []string{":7946"} }, "-join"},
		{"key 10 bytes", func(c *Config) { c.Key = make([]byte, 10) }, "-gossip-key"},
		{"meta too big", func(c *Config) { c.Meta = map[string]string{"k": strings.Repeat("v", 510)} }, "meta"},
		{"profile", func(c *Config) { c.Profile = "wan" }, "profile"},
		{"send interval", func(c *Config) { c.SendInterval = time.Microsecond }, "send interval"},
		{"ttl too short", func(c *Config) { c.ReportTTL = 100 * time.Millisecond }, "TTL"},
		{"negative join timeout", func(c *Config) { c.JoinTimeout = -1 }, "join timeout"},
		{"negative timer", func(c *Config) { c.ProbeInterval = -1 }, "timer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate = %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestMemberlistConfig(t *testing.T) {
	c := DefaultConfig()
	c.Name, c.Bind, c.Advertise, c.Profile = "n", "127.0.0.1:0", "10.1.2.3:7000", ProfileLocal
	c.ProbeInterval, c.GossipInterval, c.PushPullInterval = 100*time.Millisecond, 20*time.Millisecond, time.Second
	c.Key = []byte("0123456789abcdef")
	mc := c.memberlistConfig()
	if mc.BindAddr != "127.0.0.1" || mc.BindPort != 0 || mc.AdvertiseAddr != "10.1.2.3" || mc.AdvertisePort != 7000 {
		t.Errorf("addresses %s:%d adv %s:%d", mc.BindAddr, mc.BindPort, mc.AdvertiseAddr, mc.AdvertisePort)
	}
	if mc.ProbeInterval != 100*time.Millisecond || mc.ProbeTimeout > 50*time.Millisecond ||
		mc.GossipInterval != 20*time.Millisecond || mc.PushPullInterval != time.Second {
		t.Errorf("timers probe %v/%v gossip %v pushpull %v", mc.ProbeInterval, mc.ProbeTimeout, mc.GossipInterval, mc.PushPullInterval)
	}
	if mc.RetransmitMult != memberlist.DefaultLocalConfig().RetransmitMult || string(mc.SecretKey) != "0123456789abcdef" {
		t.Error("profile or key not applied")
	}
	if mc.DeadNodeReclaimTime <= 0 {
		t.Error("DeadNodeReclaimTime not set: a restart on a new port would be refused")
	}
	c.Bind = ":7946"
	if mc := c.memberlistConfig(); mc.BindAddr != "0.0.0.0" || mc.BindPort != 7946 {
		t.Errorf("empty host binds %s:%d", mc.BindAddr, mc.BindPort)
	}
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		line  string
		level slog.Level
		msg   string
	}{
		{"[DEBUG] memberlist: x", slog.LevelDebug, "memberlist: x"},
		{"[INFO] memberlist: x", slog.LevelInfo, "memberlist: x"},
		{"[WARN] memberlist: x", slog.LevelWarn, "memberlist: x"},
		{"[ERR] memberlist: x", slog.LevelError, "memberlist: x"},
		{"[ERROR] memberlist: x", slog.LevelError, "memberlist: x"},
		{"no prefix", slog.LevelInfo, "no prefix"},
		{"[odd] thing", slog.LevelInfo, "[odd] thing"},
		{"[unclosed", slog.LevelInfo, "[unclosed"},
		{"", slog.LevelInfo, ""},
	}
	for _, tc := range tests {
		level, msg := parseLevel([]byte(tc.line))
		if level != tc.level || string(msg) != tc.msg {
			t.Errorf("parseLevel(%q) = %v %q, want %v %q", tc.line, level, msg, tc.level, tc.msg)
		}
	}
}
