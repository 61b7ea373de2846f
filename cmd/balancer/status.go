package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/thebalancer/balancer/node/admin"
)

const statusUsage = `Usage: balancer status [-admin HOST:PORT] [-json]

Shows the cluster as the node at -admin sees it, with each reachable peer's
own raft state and traffic: the members (gossip state, raft role, term,
raft commit index, applied config index, time since the leader was heard),
the leader, the
config index, and every backend with its weight, drain flag, circuit state
on each node, in-flight requests per node and in total, and its request
rate, error rate and p99 latency over the last ten seconds (rates summed
over the nodes, p99 over all their requests). The same view as the status page at
http://ADMIN/.

Flags:
`

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON bool
	cl, conn, err := clientCommand("status", statusUsage, args, stdout, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the /v1/status answer as JSON")
	})
	if err != nil {
		return err
	}
	st, err := cl.Status(ctx)
	if err != nil {
		return conn.explain(err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return printStatus(stdout, st)
}

func printStatus(w io.Writer, st admin.Status) error {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY: " + st.NotReady
	}
	fmt.Fprintf(w, "node %s (%s), leader %s, config index %d\n\n", st.Node, ready, dash(st.Leader), st.ConfigIndex)

	raft := map[string]*admin.RaftStatus{}
	unreachable := map[string]string{}
	for _, n := range st.Nodes {
		if n.Raft != nil {
			raft[n.Name] = n.Raft
		}
		if n.Error != "" {
			unreachable[n.Name] = n.Error
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// COMMIT is the raft log's commit index; CONFIG the config index the
	// member has applied (from gossip), to compare with the header's.
	fmt.Fprintln(tw, "MEMBER\tSTATE\tRAFT\tTERM\tCOMMIT\tCONFIG\tLEADER CONTACT\tADMIN\tGOSSIP")
	for _, m := range st.Members {
		role, term, commit, applied, contact := dash(m.RaftRole), "-", "-", strconv.FormatUint(m.AppliedIndex, 10), "-"
		if r := raft[m.Name]; r != nil {
			role = r.State
			term, commit = strconv.FormatUint(r.Term, 10), strconv.FormatUint(r.CommitIndex, 10)
			contact = fmtContact(r.LastContactMS)
		} else if _, ok := unreachable[m.Name]; ok {
			role += " (unreachable)"
		}
		if m.Leader {
			role += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Status, role, term, commit, applied, contact, dash(m.AdminAddr), dash(m.GossipAddr))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)

	nodes := st.NodeNames()
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tADDRESS\tWEIGHT\tDRAIN\tBREAKERS\tIN FLIGHT\tREQ/S\tERR/S\tP99")
	for _, b := range st.Backends {
		weight := strconv.Itoa(int(b.Weight))
		if b.Pinned {
			weight += " (pinned)"
		}
		drain := "no"
		if b.Drain {
			drain = "DRAINING"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%s\n", b.ID, b.Address, weight, drain,
			breakers(nodes, b.Breaker), inFlight(nodes, b), b.Rate, b.ErrorRate, fmtMS(b.P99MS))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(unreachable) > 0 {
		names := make([]string, 0, len(unreachable))
		for n := range unreachable {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintln(w)
		for _, n := range names {
			fmt.Fprintf(w, "%s did not answer, so its raft state and traffic are missing: %s\n", n, unreachable[n])
		}
	}
	return nil
}

// breakers lists each node's circuit, or just "closed" when every node agrees.
func breakers(nodes []string, by map[string]string) string {
	var parts []string
	allClosed := true
	for _, n := range nodes {
		if s, ok := by[n]; ok {
			parts = append(parts, n+"="+s)
			allClosed = allClosed && s == "closed"
		}
	}
	if allClosed && len(parts) > 0 {
		return "closed"
	}
	return dash(strings.Join(parts, " "))
}

func inFlight(nodes []string, b admin.BackendStatus) string {
	var parts []string
	for _, n := range nodes {
		if c, ok := b.InFlight[n]; ok {
			parts = append(parts, n+"="+strconv.FormatInt(c, 10))
		}
	}
	return fmt.Sprintf("%d (%s)", b.InFlightTotal, strings.Join(parts, " "))
}

func fmtMS(ms float64) string {
	if ms <= 0 {
		return "-"
	}
	return time.Duration(ms * float64(time.Millisecond)).Round(100 * time.Microsecond).String()
}

func fmtContact(ms int64) string {
	switch {
	case ms < 0:
		return "never"
	case ms == 0:
		return "-"
	}
	return (time.Duration(ms) * time.Millisecond).String() + " ago"
}
