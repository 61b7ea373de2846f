package node

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// loopbackAdvertised reports whether peers on other hosts would be handed
// a raft or admin address that is this host's loopback: the gossip address
// (advertised, HOST:PORT) is not loopback, so peers may live elsewhere, but
// the advertised raft or admin address is, and a peer dialling it reaches
// itself. A wildcard gossip address counts as not loopback: memberlist
// advertises an interface address for it.
func loopbackAdvertised(gossipAddr, raftAddr, adminAddr string) (raft, admin bool) {
	if loopbackHost(gossipAddr) {
		return false, false
	}
	return loopbackHost(raftAddr), loopbackHost(adminAddr)
}

// loopbackHost reports whether HOST:PORT names a loopback address
// (127.0.0.0/8, ::1) or localhost. Other names are not resolved.
func loopbackHost(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}

// checkAdvertised refuses loopback raft or admin addresses next to a
// gossip address other hosts can reach, unless the operator chose them
// (c.RaftLoopbackOK, c.AdminLoopbackOK: every node on one host). It returns
// the chosen ones for a warning.
func (c Config) checkAdvertised() (warn []string, err error) {
	if !c.clustered() {
		return nil, nil
	}
	gossipAddr := c.Gossip.Advertise
	if gossipAddr == "" {
		gossipAddr = c.Gossip.Bind
	}
	raftAddr := c.Raft.Advertise
	if raftAddr == "" {
		raftAddr = c.Raft.Bind
	}
	adminAddr := c.AdminAdvertise
	if adminAddr == "" {
		adminAddr = c.Admin
	}
	raft, admin := loopbackAdvertised(gossipAddr, raftAddr, adminAddr)
	var bad, flags []string
	for _, x := range []struct {
		loop, ok          bool
		what, addr, flags string
	}{
		{raft, c.RaftLoopbackOK, "raft", raftAddr, "-raft (or -raft-advertise)"},
		{admin, c.AdminLoopbackOK, "admin", adminAddr, "-admin (or -admin-advertise)"},
	} {
		switch {
		case x.loop && x.ok:
			warn = append(warn, x.what+" "+x.addr)
		case x.loop:
			bad = append(bad, x.what+" at "+x.addr)
			flags = append(flags, x.flags)
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("gossip address %s lets peers on other hosts join, but they would dial %s: their own loopback; set %s to an address they can reach (or give a loopback address explicitly to run every node on this host)",
			gossipAddr, strings.Join(bad, " and "), strings.Join(flags, " and "))
	}
	return warn, nil
}
