package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// PeerReport is a live peer's latest complete report.
type PeerReport struct {
	Node     string         // the peer's node name
	Seq      uint64         // the report's sequence number (per node, increasing)
	Received time.Time      // when the last chunk of the report arrived here
	Backends []BackendState // the peer's state, in the order it published it
}

// Member is one cluster member as this node sees it.
type Member struct {
	Name  string
	Addr  string            // gossip HOST:PORT
	State string            // StateAlive, StateSuspect, StateDead or StateLeft
	Meta  map[string]string // the member's Config.Meta
}

// Member states. memberlist v0.6.0 does not expose its internal suspicion
// state (Node.State is never filled in for users), so "suspect" is derived
// here: memberlist still lists the member as alive, but nothing has been
// heard from it (no report) for ReportTTL, so its counts are out of the view.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)

// Stats are counters since New, plus the age of the live peer reports.
type Stats struct {
	Rounds           uint64 // full-state send rounds
	MessagesSent     uint64 // report chunks and byes sent (one per peer)
	BytesSent        uint64 // their payload bytes (before memberlist's framing, compression, encryption)
	SendErrors       uint64
	MessagesReceived uint64 // messages via NotifyMsg, plus chunks inside push-pull states
	BytesReceived    uint64 // payload bytes of NotifyMsg and push-pull states
	StatesReceived   uint64 // push-pull states merged
	DecodeErrors     uint64 // malformed messages dropped
	StaleIgnored     uint64 // messages with a seq older than the one already applied
	Duplicates       uint64 // messages (or chunks) already applied or assembled
	Rejected         uint64 // messages from this node's own name, or from too many unknown origins
	OtherCluster     uint64 // alive messages and join merges refused: the peer names another cluster (Config.Cluster)
	ReportsApplied   uint64 // complete reports that replaced a peer's previous one
	ReportsExpired   uint64 // reports evicted for being older than ReportTTL
	Incomplete       uint64 // partial reports dropped (superseded or timed out)
	SkippedEntries   uint64 // local entries that could not travel (bad ID or breaker, too many chunks)

	Peers           int           // live peer reports in the view
	OldestReportAge time.Duration // age of the oldest live peer report (0 when none)
	NewestReportAge time.Duration // age of the newest live peer report (0 when none)
}

// Gossip is one member of the gossip cluster: it publishes this node's
// backend states and keeps the view of every live peer's latest report.
// Create it with New, drive it with Run; all methods are safe for concurrent
// use.
type Gossip struct {
	cfg      Config
	log      *slog.Logger
	ml       *memberlist.Memberlist
	addr     string
	forget   time.Duration // how long dead or left members stay listed
	evictInt time.Duration

	meta atomic.Pointer[[]byte] // encoded Config.Meta (NodeMeta)

	// Publish side. Publish only stores and pokes; the sender encodes.
	pubMu  sync.Mutex
	pub    []BackendState // guarded by pubMu: latest published state
	pubVer uint64         // guarded by pubMu: bumped when pub changes
	wake   chan struct{}  // buffer 1: Publish and member joins wake the sender
	force  atomic.Bool    // a member joined: send the full state soon

	sendBuf []BackendState           // sender goroutine only
	seq     atomic.Uint64            // last sequence number used
	last    atomic.Pointer[[][]byte] // chunks of the last round, for push-pull
	lose    atomic.Int64             // tests: report packets to lose on the way out

	// The view. Delegate callbacks take mu briefly and never call memberlist;
	// nothing holds mu while calling memberlist.
	mu    sync.Mutex
	nodes map[string]*nodeRec // guarded by mu: members and report origins
	subs  []chan struct{}     // guarded by mu
	// lost holds the members memberlist declared dead (not left), by name,
	// for reconnectLoop. An entry goes when its name joins again, or when
	// an alive member holds its address (another node took the IP:port).
	lost map[string]lostMember // guarded by mu

	lifeMu sync.Mutex
	life   int // guarded by lifeMu: lifeNew, lifeRunning, lifeDone

	joined    chan struct{} // closed once Run has joined its seeds (or had none)
	conflict  chan string   // buffer 1: another address claims our name
	conflicts atomic.Uint64 // name conflicts about us seen so far
	probe     time.Duration // memberlist's ProbeInterval: paces re-joins

	// refused holds "name\x00cluster" of the peers refused for naming
	// another cluster, so each is warned about once.
	refused map[string]bool // guarded by mu

	noLeave      atomic.Bool  // tests: stop like a crash (no bye, no Leave)
	joinAttempts atomic.Int32 // tests: join attempts made

	st counters
}

const (
	lifeNew = iota
	lifeRunning
	lifeDone
)

// seqRestartGap: a seq this far (1ms of clock) below the applied one cannot
// be a reordered packet (that would take a million send rounds); it comes
// from a restarted process whose clock went back.
const seqRestartGap = uint64(time.Millisecond)

// maxStrangers bounds the records kept for origins memberlist has not told
// us about (a report may arrive just before the member's join event).
const maxStrangers = 64

type counters struct {
	rounds, msgsSent, bytesSent, sendErrors      atomic.Uint64
	msgsRecv, bytesRecv, statesRecv              atomic.Uint64
	decodeErrs, stale, dups, rejected            atomic.Uint64
	applied, expired, incomplete, skippedEntries atomic.Uint64
	otherCluster                                 atomic.Uint64
}

// nodeRec is everything known about one node name. Guarded by Gossip.mu.
type nodeRec struct {
	name string

	// Membership, from memberlist's events.
	member bool            // memberlist told us about this node
	node   memberlist.Node // copy without Meta: the SendBestEffort target
	meta   map[string]string
	state  string    // StateAlive, StateDead or StateLeft, as memberlist says
	since  time.Time // last membership change
	bye    bool      // the node announced its leave; cleared by newer news
	shown  string    // state last reported by Members (to signal changes)

	// Load reports.
	seq    uint64      // newest seq applied (report or bye); older is stale
	report *PeerReport // latest complete report (immutable), nil if none
	heard  time.Time   // last valid report chunk from it
	pend   *assembly   // report being assembled
}

// assembly collects the chunks of one seq.
type assembly struct {
	seq     uint64
	started time.Time
	chunks  [][]BackendState
	got     []bool
	have    int
}

// New validates cfg, creates the memberlist (binding the UDP and TCP
// sockets) and returns a Gossip that has not joined anyone yet. Call Run to
// join and gossip; if Run is never called, call Close.
func New(cfg Config) (*Gossip, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &Gossip{
		cfg:      cfg,
		log:      logger,
		wake:     make(chan struct{}, 1),
		conflict: make(chan string, 1),
		nodes:    make(map[string]*nodeRec),
		lost:     make(map[string]lostMember),
		joined:   make(chan struct{}),
	}
	now := time.Now()
	for name, addr := range cfg.Rejoin {
		if name != cfg.Name && addr != "" {
			g.lost[name] = lostMember{addr: addr, since: now, rejoin: true}
		}
	}
	// A per-process start value: a restarted node's seqs are higher than
	// anything its previous process sent (rounds are >= 1ms apart, far
	// slower than the nanosecond clock).
	g.seq.Store(uint64(time.Now().UnixNano()))
	meta := encodeMeta(cfg.Meta)
	g.meta.Store(&meta)
	g.evictInt = min(max(cfg.ReportTTL/10, 10*time.Millisecond), 250*time.Millisecond)

	mc := cfg.memberlistConfig()
	mc.Logger = newStdLogger(logger)
	d := &delegate{g: g}
	mc.Delegate = d
	mc.Events = d
	mc.Conflict = d
	if cfg.Cluster != nil {
		mc.Merge = d
		mc.Alive = d
	}
	g.forget = mc.GossipToTheDeadTime
	g.probe = mc.ProbeInterval
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
	}
	g.ml = ml
	ln := ml.LocalNode()
	g.addr = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	return g, nil
}

// Joined is closed once Run has contacted one of Config.Join, or at once
// when there are none. Members is the cluster's view from then on, not
// only this node's. It is never closed when Run is not called, fails to
// join or is stopped while joining: wait on it together with a context.
func (g *Gossip) Joined() <-chan struct{} { return g.joined }

// Addr returns the gossip HOST:PORT peers use to reach this node: the
// advertise address if one is set, else the bound address with the port the
// OS picked for port 0. Pass it to other nodes' Join.
func (g *Gossip) Addr() string { return g.addr }

// Close releases the sockets of a Gossip whose Run was never called. Once
// Run has started, cancel its context instead; Close is then a no-op.
func (g *Gossip) Close() error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.life != lifeNew {
		return nil
	}
	g.life = lifeDone
	return g.ml.Shutdown()
}

// Run joins the cluster (retrying with backoff until a seed answers or
// JoinTimeout passes), then sends this node's state and evicts stale peer
// reports until ctx ends. It then announces the leave, calls memberlist's
// Leave (bounded by LeaveTimeout) and Shutdown. It returns nil on a clean
// stop (a Leave that times out is logged: peers will detect the death) and
// an error if the join fails. Run may be called once.
func (g *Gossip) Run(ctx context.Context) error {
	g.lifeMu.Lock()
	if g.life != lifeNew {
		g.lifeMu.Unlock()
		return errors.New("gossip: Run called twice or after Close")
	}
	g.life = lifeRunning
	g.lifeMu.Unlock()
	defer func() {
		g.lifeMu.Lock()
		g.life = lifeDone
		g.lifeMu.Unlock()
		// Shutdown's only error is the transport's, and memberlist logs it.
		_ = g.ml.Shutdown()
	}()

	if len(g.cfg.Join) > 0 {
		if err := g.join(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while joining: a clean stop
			}
			return err
		}
	}
	close(g.joined)
	loops, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { g.sendLoop(loops) })
	wg.Go(func() { g.evictLoop(loops) })
	wg.Go(func() { g.repairLoop(loops) })
	wg.Go(func() { g.reconnectLoop(loops) })
	<-ctx.Done()
	cancel()
	wg.Wait()

	if g.noLeave.Load() {
		return nil
	}
	g.sendBye()
	began := time.Now()
	if err := g.ml.Leave(g.cfg.LeaveTimeout); err != nil {
		g.log.Warn("gossip leave not confirmed; peers will detect the departure as a failure", "err", err)
		return nil
	}
	g.log.Debug("left the gossip cluster", "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// join calls memberlist's Join until it contacts a seed, backing off from
// 100ms to 2s, for at most JoinTimeout.
func (g *Gossip) join(ctx context.Context) error {
	start := time.Now()
	deadline := start.Add(g.cfg.JoinTimeout)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		n, err := g.joinCtx(ctx, g.cfg.Join)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		g.joinAttempts.Add(1)
		if err == nil {
			g.log.Info("joined gossip cluster", "seeds", g.cfg.Join, "contacted", n, "attempts", attempt,
				"took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		msg := flatten(err)
		if strings.Contains(msg, otherCluster) {
			// Retrying cannot help: a cluster's ID never changes.
			return fmt.Errorf("-join %s: %s (a wrong -join, or the address now belongs to another cluster; give each cluster its own -gossip-key)",
				strings.Join(g.cfg.Join, ","), msg)
		}
		hint := joinHint(msg, len(g.cfg.Key) > 0)
		if time.Now().Add(backoff).After(deadline) {
			return fmt.Errorf("-join %s: gave up after %v (%d attempts): %s%s",
				strings.Join(g.cfg.Join, ","), g.cfg.JoinTimeout, attempt, msg, hint)
		}
		g.log.Warn("gossip join failed; retrying", "seeds", g.cfg.Join, "attempt", attempt,
			"retry_in", backoff, "err", msg+hint)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// repairLoop re-joins when peers evidently do not have our address. The
// case it exists for is a restart on a new address: while the cluster still
// lists our name at the old address, memberlist refuses ours, and once the
// old entry is declared dead nothing re-announces us until the next
// push-pull (15-30s later). Two signs trigger it: memberlist reports a
// conflict about our name, or an alive peer has sent us nothing for
// ReportTTL (peers send only to the address they hold for us, at least every
// ReportTTL/3, and at once when they accept us). It then re-joins (a
// push-pull that re-announces us), backing off from ProbeInterval to 10x,
// until every peer is heard from. A dead entry can be reclaimed at once, see
// Config.DeadNodeReclaimTime.
func (g *Gossip) repairLoop(ctx context.Context) {
	started := time.Now()
	t := time.NewTicker(g.probe)
	defer t.Stop()
	var conflictAt, next time.Time
	backoff, rejoins := g.probe, 0
	for {
		select {
		case <-ctx.Done():
			return
		case other := <-g.conflict:
			if conflictAt.IsZero() {
				conflictAt, rejoins = time.Now(), 0
				g.log.Warn("the cluster lists this node's name at another address: a previous process not yet declared dead, or a duplicate -node name; re-joining until our address is accepted",
					"node", g.cfg.Name, "ours", g.addr, "theirs", other)
			}
		case <-t.C:
		}
		now := time.Now()
		unheard := g.unheard(now, started)
		if !conflictAt.IsZero() {
			switch {
			case g.heardFromAllSince(conflictAt):
				g.log.Info("the cluster accepted this node's address", "addr", g.addr, "rejoins", rejoins,
					"took", now.Sub(conflictAt).Round(time.Millisecond))
				conflictAt = time.Time{}
			case now.Sub(conflictAt) > reclaimGiveUp:
				g.log.Warn("peers still do not report to this node after re-joining; check for a duplicate -node name",
					"node", g.cfg.Name, "addr", g.addr, "rejoins", rejoins)
				conflictAt = time.Time{}
			default:
				unheard = g.rejoinAddrs()
			}
		}
		if len(unheard) == 0 {
			backoff = g.probe
			continue
		}
		if now.Before(next) {
			continue
		}
		rejoins++
		// unheard may hold a frozen peer (alive to memberlist until its
		// probes fail), so the Join must not hold up a stop either.
		if _, err := g.joinCtx(ctx, append(unheard, g.cfg.Join...)); err != nil {
			if ctx.Err() != nil {
				return
			}
			g.log.Debug("gossip re-join failed", "err", flatten(err))
		}
		next = time.Now().Add(backoff)
		backoff = min(2*backoff, 10*g.probe)
	}
}

// joinCtx calls memberlist's Join in a goroutine of its own and returns
// its result, or ctx's error as soon as ctx ends. memberlist's Join takes
// no context: to a frozen peer (SIGSTOPped; its kernel completes the TCP
// connect) it waits out TCPTimeout (10 s on a LAN), and a stop that waited
// for it would use up docker stop's grace period.
//
// An exception to "every goroutine has a wait", for that reason: once ctx
// has ended, nothing waits for the goroutine. It ends on its own when the
// Join returns, within memberlist's TCPTimeout per address (connect, then
// the exchange's deadline). Meanwhile it touches only g.ml and its own
// buffered channel; memberlist v0.6.0 does not refuse a Join after
// Shutdown, so a peer that thaws in time may still complete the push-pull,
// and the delegate callbacks it runs only take g.mu briefly and never block.
func (g *Gossip) joinCtx(ctx context.Context, addrs []string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err // stopping: start no Join
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1) // buffer 1: an abandoned Join's send never blocks
	addrs = slices.Clone(addrs)
	go func() {
		n, err := g.ml.Join(addrs)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		return r.n, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// lostMember is a member declared dead, or one of Config.Rejoin: where it
// was, and since when.
type lostMember struct {
	addr   string
	since  time.Time
	rejoin bool // from Config.Rejoin, not declared dead in this run
}

// reconnectFor bounds how long a dead member is tried again (serf's
// default reconnect timeout); reconnectDial bounds the connect that probes
// it first, so that a member that is down costs a short dial rather than
// memberlist's Join (TCPTimeout, 10 s on a LAN). The probe does not catch a
// frozen process (SIGSTOP: its kernel still completes the connect), so the
// Join itself runs in joinCtx and a stop does not wait for it.
const (
	reconnectFor  = 72 * time.Hour
	reconnectDial = 500 * time.Millisecond
)

// reconnectLoop re-joins members that memberlist declared dead, every 5
// probe intervals. After a partition that outlasts GossipToTheDeadTime
// (30 s on a LAN) memberlist on both sides has forgotten the other: it
// probes, gossips and push-pulls only with members it believes alive, so
// the cluster would stay split in two after the network healed (raft
// reconnects by itself; the load view and shared circuits would not).
// serf's reconnect exists for the same reason.
func (g *Gossip) reconnectLoop(ctx context.Context) {
	t := time.NewTicker(5 * g.probe)
	defer t.Stop()
	d := net.Dialer{Timeout: reconnectDial}
	for first := true; ; first = false {
		// The first pass runs at once: it finds Config.Rejoin's members.
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		for name, l := range g.lostAddrs(time.Now()) {
			addr := l.addr
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				continue // still unreachable
			}
			c.Close()
			if _, err := g.joinCtx(ctx, []string{addr}); err != nil {
				if ctx.Err() != nil {
					return
				}
				g.log.Debug("gossip reconnect failed", "node", name, "addr", addr, "err", flatten(err))
				continue
			}
			// The Join succeeding says only that something answered at
			// addr. Its push-pull has run our join events, so the name is
			// alive by now if it came back; if another node answered, its
			// join event has dropped the entry.
			switch {
			case g.alive(name) && l.rejoin:
				g.log.Info("rejoined the gossip cluster through a member of the previous run", "node", name, "addr", addr)
			case g.alive(name):
				g.log.Info("reconnected to a member declared dead (a healed partition)", "node", name, "addr", addr)
			default:
				g.log.Debug("gossip reconnect reached a member's address but not the member", "node", name, "addr", addr)
			}
		}
	}
}

// lostAddrs returns the addresses of the members to try again. It drops
// those lost for longer than reconnectFor, and those whose address an alive
// member holds (the join and update events drop those too; this catches
// whatever they missed).
func (g *Gossip) lostAddrs(now time.Time) map[string]lostMember {
	type drop struct{ name, addr, holder string }
	var dropped []drop
	g.mu.Lock()
	held := g.aliveAt()
	out := make(map[string]lostMember, len(g.lost))
	for name, l := range g.lost {
		switch {
		case now.Sub(l.since) > reconnectFor:
			delete(g.lost, name)
		case held[l.addr] != "":
			delete(g.lost, name)
			dropped = append(dropped, drop{name, l.addr, held[l.addr]})
		default:
			out[name] = l
		}
	}
	g.mu.Unlock()
	for _, d := range dropped {
		g.logTaken([]string{d.name}, d.addr, d.holder)
	}
	return out
}

// aliveAt maps the address of every member memberlist lists as alive (this
// node included) to its name. Caller holds mu.
func (g *Gossip) aliveAt() map[string]string {
	out := make(map[string]string, len(g.nodes))
	for _, r := range g.nodes {
		if r.member && r.state == StateAlive {
			out[r.node.Address()] = r.name
		}
	}
	return out
}

// dropLostAt drops the lost members whose address is addr, which an alive
// member now holds, and returns their names. Caller holds mu.
func (g *Gossip) dropLostAt(addr string) []string {
	var names []string
	for name, l := range g.lost {
		if l.addr == addr {
			delete(g.lost, name)
			names = append(names, name)
		}
	}
	return names
}

// logTaken logs the lost members no longer tried because holder uses their
// address. Call it without mu: a log write may block.
func (g *Gossip) logTaken(names []string, addr, holder string) {
	for _, name := range names {
		g.log.Debug("gossip stops reconnecting to a dead member: another member now uses its address",
			"node", name, "addr", addr, "holder", holder)
	}
}

// alive reports whether memberlist lists the member name as alive.
func (g *Gossip) alive(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.nodes[name]
	return r != nil && r.member && r.state == StateAlive
}

// reclaimGiveUp bounds the re-joins after a name conflict.
const reclaimGiveUp = 2 * time.Minute

// heardFromAllSince reports whether every alive peer has sent a report
// chunk since t.
func (g *Gossip) heardFromAllSince(t time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range g.nodes {
		if g.isPeer(r) && !r.heard.After(t) {
			return false
		}
	}
	return true
}

// unheard lists the addresses of alive peers that have sent nothing for
// ReportTTL (counting from their join and from started).
func (g *Gossip) unheard(now, started time.Time) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, r := range g.nodes {
		if !g.isPeer(r) {
			continue
		}
		last := latest(r.heard, r.since, started)
		if now.Sub(last) > g.cfg.ReportTTL {
			out = append(out, r.node.Address())
		}
	}
	return out
}

func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

// isPeer reports whether r is another member memberlist lists as alive and
// that has not said bye. Caller holds mu.
func (g *Gossip) isPeer(r *nodeRec) bool {
	return r.member && r.state == StateAlive && !r.bye && r.name != g.cfg.Name
}

// rejoinAddrs lists the alive peers' addresses and the seeds.
func (g *Gossip) rejoinAddrs() []string {
	addrs := append([]string(nil), g.cfg.Join...)
	for _, n := range g.targets() {
		addrs = append(addrs, n.Address())
	}
	return addrs
}

// flatten turns memberlist's multi-line multierror text into one line.
func flatten(err error) string {
	s := err.Error()
	if i := strings.Index(s, " occurred:"); i >= 0 && strings.Contains(s[:i], "error") {
		s = s[i+len(" occurred:"):]
	}
	var parts []string
	for _, p := range strings.Split(s, "\n") {
		p = strings.TrimPrefix(strings.TrimSpace(p), "* ")
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "; ")
}

// joinHint explains the join failures that mean "a seed answered but the
// exchange failed", which in practice is a gossip key mismatch.
func joinHint(msg string, haveKey bool) string {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "no installed keys could decrypt"):
		return " (our -gossip-key differs from the seed's: every node needs the same key)"
	case strings.Contains(m, "remote state is encrypted and encryption is not configured"):
		return " (the seed uses a -gossip-key and we have none: every node needs the same key)"
	case strings.Contains(m, "encryption is configured but remote state is not encrypted"):
		return " (we use a -gossip-key and the seed has none: every node needs the same key)"
	case strings.Contains(m, "encrypt"), strings.Contains(m, "decrypt"):
		return " (the -gossip-key probably differs between nodes: every node needs the same key)"
	case haveKey && (strings.Contains(m, "eof") || strings.Contains(m, "connection reset")):
		return " (the seed answered but the exchange failed: its -gossip-key probably differs from ours)"
	}
	return ""
}

// Publish stores the latest local state (this node's in-flight count and
// breaker state per backend). Any goroutine may call it, as often as it
// likes: it copies states, marks them dirty if they changed and wakes the
// sender without blocking; the sender coalesces changes to one round per
// SendInterval.
func (g *Gossip) Publish(states []BackendState) {
	g.pubMu.Lock()
	if equalStates(g.pub, states) {
		g.pubMu.Unlock()
		return
	}
	g.pub = append(g.pub[:0], states...)
	g.pubVer++
	g.pubMu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

func equalStates(a, b []BackendState) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Peers returns the latest report of every live peer: not this node, not
// dead or left, not older than ReportTTL. Sorted by node name; the caller
// owns the returned slices.
func (g *Gossip) Peers() []PeerReport {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]PeerReport, 0, len(g.nodes))
	for _, r := range g.nodes {
		if g.visible(r, now) {
			p := *r.report
			p.Backends = append([]BackendState(nil), p.Backends...)
			out = append(out, p)
		}
	}
	sortBy(out, func(p PeerReport) string { return p.Node })
	return out
}

// visible reports whether r's report belongs in the view. Caller holds mu.
func (g *Gossip) visible(r *nodeRec, now time.Time) bool {
	return r.report != nil && r.member && r.state == StateAlive && !r.bye &&
		r.name != g.cfg.Name && now.Sub(r.report.Received) <= g.cfg.ReportTTL
}

// Members lists the cluster members this node knows, itself included,
// sorted by name. Dead and left members stay listed for memberlist's
// GossipToTheDeadTime. The table is kept from memberlist's events, so
// Members never waits on memberlist.
func (g *Gossip) Members() []Member {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.nodes))
	for _, r := range g.nodes {
		if !r.member {
			continue
		}
		m := Member{Name: r.name, Addr: r.node.Address(), State: g.memberState(r, now)}
		if len(r.meta) > 0 {
			m.Meta = make(map[string]string, len(r.meta))
			for k, v := range r.meta {
				m.Meta[k] = v
			}
		}
		out = append(out, m)
	}
	sortBy(out, func(m Member) string { return m.Name })
	return out
}

// memberState derives a member's state. Caller holds mu.
func (g *Gossip) memberState(r *nodeRec, now time.Time) string {
	switch {
	case r.state != StateAlive:
		return r.state
	case r.bye:
		return StateLeft
	case r.name == g.cfg.Name:
		return StateAlive
	}
	if now.Sub(latest(r.heard, r.since)) > g.cfg.ReportTTL {
		return StateSuspect
	}
	return StateAlive
}

// Subscribe returns a channel that receives a signal (buffer 1, coalesced,
// never blocking the gossip) whenever the view may have changed: a peer
// report applied or evicted, a member joined, left, changed or turned
// suspect. Re-read Peers or Members after each signal.
func (g *Gossip) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	g.mu.Lock()
	g.subs = append(g.subs, ch)
	g.mu.Unlock()
	return ch
}

// notify signals the subscribers. Caller holds mu.
func (g *Gossip) notify() {
	for _, ch := range g.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// UpdateMeta replaces this node's metadata and re-advertises it, waiting up
// to timeout for the broadcast. Call it only while Run is running.
func (g *Gossip) UpdateMeta(meta map[string]string, timeout time.Duration) error {
	b := encodeMeta(meta)
	if len(b) > metaMaxSize {
		return fmt.Errorf("gossip meta: %d bytes encoded, at most %d allowed", len(b), metaMaxSize)
	}
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.life != lifeRunning {
		return errors.New("gossip: UpdateMeta needs a running Gossip")
	}
	g.meta.Store(&b)
	return g.ml.UpdateNode(timeout)
}

// Stats returns the counters and the current report ages.
func (g *Gossip) Stats() Stats {
	s := Stats{
		Rounds:           g.st.rounds.Load(),
		MessagesSent:     g.st.msgsSent.Load(),
		BytesSent:        g.st.bytesSent.Load(),
		SendErrors:       g.st.sendErrors.Load(),
		MessagesReceived: g.st.msgsRecv.Load(),
		BytesReceived:    g.st.bytesRecv.Load(),
		StatesReceived:   g.st.statesRecv.Load(),
		DecodeErrors:     g.st.decodeErrs.Load(),
		StaleIgnored:     g.st.stale.Load(),
		Duplicates:       g.st.dups.Load(),
		Rejected:         g.st.rejected.Load(),
		OtherCluster:     g.st.otherCluster.Load(),
		ReportsApplied:   g.st.applied.Load(),
		ReportsExpired:   g.st.expired.Load(),
		Incomplete:       g.st.incomplete.Load(),
		SkippedEntries:   g.st.skippedEntries.Load(),
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range g.nodes {
		if !g.visible(r, now) {
			continue
		}
		age := now.Sub(r.report.Received)
		if s.Peers == 0 || age > s.OldestReportAge {
			s.OldestReportAge = age
		}
		if s.Peers == 0 || age < s.NewestReportAge {
			s.NewestReportAge = age
		}
		s.Peers++
	}
	return s
}

// sendLoop sends the full state: at once on the first change after a quiet
// SendInterval, then at most every SendInterval while changes keep coming,
// and at least every ReportTTL/3 regardless, so peers' copies stay fresh.
// The last change of a burst goes out once more, SendInterval later: a
// report is one unacknowledged UDP packet, and without the repeat a single
// lost packet would leave peers on the state before the change until the
// next refresh, while they take the sender's silence for "nothing changed".
func (g *Gossip) sendLoop(ctx context.Context) {
	refresh := g.cfg.ReportTTL / 3
	var last time.Time
	sentVer := ^uint64(0) // send once at start, so peers see us at once
	repeat := false       // the last round carried a change not yet sent twice
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.wake:
		}
		now := time.Now()
		g.pubMu.Lock()
		dirty := g.pubVer != sentVer
		g.pubMu.Unlock()
		pending := dirty || repeat || g.force.Load()
		if now.Sub(last) >= refresh || (pending && now.Sub(last) >= g.cfg.SendInterval) {
			g.force.Store(false)
			// Whether this round carried news is what it sent, not what
			// was dirty before: a Publish can land in between.
			v := g.sendRound()
			repeat = v != sentVer
			sentVer = v
			last = now
			g.pubMu.Lock()
			pending = g.pubVer != sentVer
			g.pubMu.Unlock()
			pending = pending || repeat || g.force.Load()
		}
		next := last.Add(refresh)
		if pending {
			next = last.Add(g.cfg.SendInterval)
		}
		t.Reset(max(0, time.Until(next)))
	}
}

// sendRound encodes the current state under a new seq and sends every chunk
// to every alive peer with SendBestEffort (one UDP packet each, one hop).
// It returns the published version it sent.
func (g *Gossip) sendRound() uint64 {
	g.pubMu.Lock()
	g.sendBuf = append(g.sendBuf[:0], g.pub...)
	ver := g.pubVer
	g.pubMu.Unlock()

	seq := g.seq.Add(1)
	chunks, skipped := encodeReport(g.cfg.Name, seq, g.sendBuf, MaxMessageSize)
	if skipped > 0 && g.st.skippedEntries.Add(uint64(skipped)) == uint64(skipped) {
		g.log.Warn("gossip skips backends that cannot travel (empty or over-long ID, unknown breaker state, or too many chunks)",
			"skipped", skipped, "max_id_len", MaxIDLen, "max_chunks", MaxChunks)
	}
	g.last.Store(&chunks)
	g.st.rounds.Add(1)
	for _, n := range g.targets() {
		for _, c := range chunks {
			if g.lose.Load() > 0 { // only this goroutine takes from it
				g.lose.Add(-1)
				continue
			}
			g.send(&n, c)
		}
	}
	return ver
}

// sendBye tells every alive peer that this node is leaving, so they drop
// its report at once and list it as left rather than dead. The bye alone
// tells a leave from a crash, and one lost UDP packet would make a peer
// take a graceful stop for a failure (raft keeps the server until it is
// reaped), so it goes twice: as a packet, at once, and over memberlist's
// TCP stream, waiting at most half of LeaveTimeout for the slowest peer.
func (g *Gossip) sendBye() {
	msg := encodeBye(g.cfg.Name, g.seq.Add(1))
	targets := g.targets()
	for _, n := range targets {
		g.send(&n, msg)
	}
	var wg sync.WaitGroup
	for _, n := range targets {
		wg.Go(func() {
			if err := g.ml.SendReliable(&n, msg); err != nil {
				g.log.Debug("gossip bye over TCP failed; the packet may have arrived", "to", n.Name, "err", err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(g.cfg.LeaveTimeout / 2)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func (g *Gossip) send(n *memberlist.Node, msg []byte) {
	if err := g.ml.SendBestEffort(n, msg); err != nil {
		if g.st.sendErrors.Add(1) == 1 {
			g.log.Warn("gossip send failed (further failures are only counted)", "to", n.Name, "err", err)
		}
		return
	}
	g.st.msgsSent.Add(1)
	g.st.bytesSent.Add(uint64(len(msg)))
}

// targets lists the alive peers to send to.
func (g *Gossip) targets() []memberlist.Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]memberlist.Node, 0, len(g.nodes))
	for _, r := range g.nodes {
		if g.isPeer(r) {
			out = append(out, r.node)
		}
	}
	return out
}

// evictLoop drops reports older than ReportTTL, partial reports that never
// completed, and forgotten members, and signals the changes.
func (g *Gossip) evictLoop(ctx context.Context) {
	t := time.NewTicker(g.evictInt)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.evict(time.Now())
		}
	}
}

func (g *Gossip) evict(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := false
	for name, r := range g.nodes {
		if r.report != nil && now.Sub(r.report.Received) > g.cfg.ReportTTL {
			changed = changed || g.visible(r, r.report.Received)
			r.report = nil
			g.st.expired.Add(1)
		}
		if r.pend != nil && now.Sub(r.pend.started) > g.cfg.ReportTTL {
			r.pend = nil
			g.st.incomplete.Add(1)
		}
		switch {
		case !r.member && r.report == nil && r.pend == nil && now.Sub(r.heard) > g.cfg.ReportTTL:
			delete(g.nodes, name)
		case r.member && r.state != StateAlive && now.Sub(r.since) > g.forget:
			delete(g.nodes, name)
			changed = true
		case r.member:
			if s := g.memberState(r, now); s != r.shown {
				r.shown = s
				changed = true
			}
		}
	}
	if changed {
		g.notify()
	}
}

// received applies one decoded message. Caller holds mu; it returns whether
// the view changed.
func (g *Gossip) received(m message, now time.Time) bool {
	if m.origin == g.cfg.Name {
		g.st.rejected.Add(1)
		return false
	}
	r := g.nodes[m.origin]
	if r == nil {
		if m.kind != kindReport || g.strangers() >= maxStrangers {
			g.st.rejected.Add(1)
			return false
		}
		r = &nodeRec{name: m.origin}
		g.nodes[m.origin] = r
	}
	switch {
	case m.seq+seqRestartGap < r.seq:
		// Far below anything reordering can explain: a restarted process
		// whose clock went back. Treat it as a new incarnation.
		g.log.Info("gossip peer's seq went back: taking it as a restarted node", "node", r.name,
			"seq", m.seq, "was", r.seq)
		r.seq, r.pend = 0, nil
	case m.seq < r.seq:
		g.st.stale.Add(1)
		return false
	case m.seq == r.seq:
		g.st.dups.Add(1)
		return false
	}
	if m.kind == kindBye {
		wasVisible := g.visible(r, now)
		r.seq, r.report, r.pend, r.bye = m.seq, nil, nil, true
		return wasVisible || r.member
	}

	p := r.pend
	switch {
	case p != nil && m.seq < p.seq:
		g.st.stale.Add(1)
		return false
	case p == nil || m.seq > p.seq:
		if p != nil {
			g.st.incomplete.Add(1)
		}
		p = &assembly{seq: m.seq, started: now, chunks: make([][]BackendState, m.count), got: make([]bool, m.count)}
		r.pend = p
	case m.count != len(p.chunks):
		g.st.decodeErrs.Add(1)
		return false
	}
	if p.got[m.index] {
		g.st.dups.Add(1)
		return false
	}
	p.got[m.index] = true
	p.chunks[m.index] = m.states
	p.have++
	r.heard = now
	if p.have < len(p.chunks) {
		return false
	}
	total := 0
	for _, c := range p.chunks {
		total += len(c)
	}
	backends := make([]BackendState, 0, total)
	for _, c := range p.chunks {
		backends = append(backends, c...)
	}
	r.report = &PeerReport{Node: r.name, Seq: p.seq, Received: now, Backends: backends}
	r.seq, r.pend, r.bye = p.seq, nil, false
	g.st.applied.Add(1)
	return g.visible(r, now)
}

// strangers counts records for origins memberlist has not announced.
// Caller holds mu.
func (g *Gossip) strangers() int {
	n := 0
	for _, r := range g.nodes {
		if !r.member {
			n++
		}
	}
	return n
}

func sortBy[T any](s []T, key func(T) string) {
	slices.SortFunc(s, func(a, b T) int { return strings.Compare(key(a), key(b)) })
}
