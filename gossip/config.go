package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures one gossip member. Start from DefaultConfig; the zero
// value of an optional field means "the default".
type Config struct {
	// Name is the node's unique name in the cluster (memberlist's Name;
	// flag -node). A restarted node reuses its name.
	Name string
	// Bind is the gossip HOST:PORT (flag -gossip) for both UDP and TCP.
	// HOST must be an IP address (empty means 0.0.0.0); port 0 picks a free
	// port, which Addr reports.
	Bind string
	// Advertise is an optional HOST:PORT that peers use to reach this node,
	// for NAT or a bind on 0.0.0.0.
	Advertise string
	// Join lists seed members as HOST:PORT (flag -join). Empty: start a new
	// cluster. Run retries the join until one seed answers or JoinTimeout.
	Join []string
	// JoinTimeout bounds the join retries (backoff 100ms doubling to 2s).
	JoinTimeout time.Duration
	// Rejoin lists members of an earlier run, name -> HOST:PORT, to find
	// the cluster again without -join (a founder restarted with the flags
	// it was first started with). Unlike Join they are tried in the
	// background, like members declared dead, so a restart while they are
	// all down neither blocks nor fails.
	Rejoin map[string]string
	// Key turns on memberlist's AES-GCM encryption: nil, or 16, 24 or 32
	// bytes (flag -gossip-key). Every member needs the same key.
	Key []byte
	// Meta holds small facts about the node (admin address, raft address)
	// that peers see in Members. Encoded it must fit 512 bytes. Put this
	// node's cluster ID under MetaCluster once it has one (see Cluster).
	Meta map[string]string
	// Cluster returns this node's cluster ID, or "" while it has none. When
	// it is set and returns an ID, a peer whose metadata names another
	// non-empty ID under MetaCluster is refused: its alive messages are
	// dropped, so it never becomes a member, and a join (ours or theirs)
	// that would merge its member list fails. Peers that name no ID (a new
	// node, an older version) are admitted. memberlist calls it under its
	// node lock, for every alive message: it must return at once and must
	// not call into this Gossip. Nil admits every peer.
	Cluster func() string
	// SendInterval is the coalescing period: local changes are sent at most
	// this often (the first change after a quiet period goes at once).
	SendInterval time.Duration
	// ReportTTL is how long a peer's report counts; older reports leave the
	// view. Each node re-sends its full state at least every ReportTTL/3.
	ReportTTL time.Duration
	// Profile picks memberlist's preset: "lan" (DefaultLANConfig) or
	// "local" (DefaultLocalConfig, for loopback and tests).
	Profile string
	// Logger receives this package's logs and memberlist's own log lines
	// at their level ([DEBUG] Debug, [INFO] Info, [WARN] Warn, [ERR] Error).
	// Nil discards them.
	Logger *slog.Logger

	// LeaveTimeout bounds memberlist's Leave broadcast at the end of Run.
	LeaveTimeout time.Duration
	// ProbeInterval, GossipInterval and PushPullInterval override the
	// profile's failure-detector, gossip and anti-entropy periods when
	// non-zero (tests shrink them). ProbeTimeout is kept below ProbeInterval.
	ProbeInterval    time.Duration
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	// DeadNodeReclaimTime is how long after a member is declared dead that
	// its name may come back from a different address (a restart on a new
	// port). The default (1ns: as soon as the cluster has declared the old
	// process dead) lets a restarted node's refutation of its own death be
	// accepted at once. memberlist's own default (0: never) refuses the new
	// address until the dead entry is reaped, and a refutation that lands
	// inside a longer window is lost until the next push-pull.
	DeadNodeReclaimTime time.Duration
}

// The memberlist presets Config.Profile accepts.
const (
	ProfileLAN   = "lan"
	ProfileLocal = "local"
)

// DefaultConfig returns the defaults: bind 0.0.0.0:7946, LAN profile,
// 50ms send interval, 3s report TTL, 30s join timeout, 5s leave timeout.
func DefaultConfig() Config {
	return Config{
		Bind:                "0.0.0.0:7946",
		JoinTimeout:         30 * time.Second,
		SendInterval:        50 * time.Millisecond,
		ReportTTL:           3 * time.Second,
		Profile:             ProfileLAN,
		LeaveTimeout:        5 * time.Second,
		DeadNodeReclaimTime: time.Nanosecond,
	}
}

// withDefaults fills zero optional fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Bind == "" {
		c.Bind = d.Bind
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = d.JoinTimeout
	}
	if c.SendInterval == 0 {
		c.SendInterval = d.SendInterval
	}
	if c.ReportTTL == 0 {
		c.ReportTTL = d.ReportTTL
	}
	if c.Profile == "" {
		c.Profile = d.Profile
	}
	if c.LeaveTimeout == 0 {
		c.LeaveTimeout = d.LeaveTimeout
	}
	if c.DeadNodeReclaimTime == 0 {
		c.DeadNodeReclaimTime = d.DeadNodeReclaimTime
	}
	return c
}

// Validate reports the first problem with c (after defaults are applied to
// zero fields). Messages name the agent flag where there is one.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Name == "":
		return errors.New("-node: node name must not be empty")
	case len(c.Name) > MaxNameLen:
		return fmt.Errorf("-node: node name is %d bytes, at most %d allowed", len(c.Name), MaxNameLen)
	}
	if _, _, err := splitHostPort(c.Bind, true, true); err != nil {
		return fmt.Errorf("-gossip: %w", err)
	}
	if c.Advertise != "" {
		if _, _, err := splitHostPort(c.Advertise, true, false); err != nil {
			return fmt.Errorf("gossip advertise address: %w", err)
		}
	}
	for _, j := range c.Join {
		host, _, err := splitHostPort(j, false, false)
		if err == nil && host == "" {
			err = fmt.Errorf("%q: missing host (want HOST:PORT)", j)
		}
		if err != nil {
			return fmt.Errorf("-join: %w", err)
		}
	}
	switch len(c.Key) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("-gossip-key: key is %d bytes, want 16, 24 or 32 (AES-128/192/256)", len(c.Key))
	}
	if n := len(encodeMeta(c.Meta)); n > metaMaxSize {
		return fmt.Errorf("gossip meta: %d bytes encoded, at most %d allowed", n, metaMaxSize)
	}
	switch {
	case c.Profile != ProfileLAN && c.Profile != ProfileLocal:
		return fmt.Errorf("gossip profile %q: want %q or %q", c.Profile, ProfileLAN, ProfileLocal)
	case c.JoinTimeout < 0:
		return fmt.Errorf("gossip join timeout %v must be positive", c.JoinTimeout)
	case c.SendInterval < time.Millisecond:
		return fmt.Errorf("gossip send interval %v must be at least 1ms", c.SendInterval)
	case c.ReportTTL < 3*c.SendInterval:
		return fmt.Errorf("gossip report TTL %v must be at least 3 send intervals (%v)", c.ReportTTL, 3*c.SendInterval)
	case c.LeaveTimeout < 0:
		return fmt.Errorf("gossip leave timeout %v must be positive", c.LeaveTimeout)
	case c.ProbeInterval < 0, c.GossipInterval < 0, c.PushPullInterval < 0, c.DeadNodeReclaimTime < 0:
		return errors.New("gossip timer overrides must not be negative")
	}
	return nil
}

// splitHostPort checks HOST:PORT. ipOnly requires HOST to be empty or an IP
// literal (memberlist binds and advertises IPs, not names); zeroPort allows
// port 0.
func splitHostPort(s string, ipOnly, zeroPort bool) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q: want HOST:PORT: %w", s, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 || (port == 0 && !zeroPort) {
		return "", 0, fmt.Errorf("%q: bad port %q", s, ps)
	}
	if ipOnly && host != "" && net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("%q: host must be an IP address", s)
	}
	return host, port, nil
}

// memberlistConfig builds memberlist's config from c (already validated).
func (c Config) memberlistConfig() *memberlist.Config {
	var mc *memberlist.Config
	if c.Profile == ProfileLocal {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = c.Name
	host, port, _ := splitHostPort(c.Bind, true, true)
	if host == "" {
		host = "0.0.0.0"
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", port
	if c.Advertise != "" {
		ah, ap, _ := splitHostPort(c.Advertise, true, false)
		mc.AdvertiseAddr, mc.AdvertisePort = ah, ap
	}
	if c.ProbeInterval > 0 {
		mc.ProbeInterval = c.ProbeInterval
		if mc.ProbeTimeout > c.ProbeInterval/2 {
			mc.ProbeTimeout = c.ProbeInterval / 2
		}
	}
	if c.GossipInterval > 0 {
		mc.GossipInterval = c.GossipInterval
	}
	if c.PushPullInterval > 0 {
		mc.PushPullInterval = c.PushPullInterval
	}
	mc.DeadNodeReclaimTime = c.DeadNodeReclaimTime
	if len(c.Key) > 0 {
		mc.SecretKey = append([]byte(nil), c.Key...)
	}
	return mc
}
