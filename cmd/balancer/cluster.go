package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/thebalancer/balancer/consensus"
	"github.com/thebalancer/balancer/node/admin"
)

// adminFlags are the flags every client command shares.
func adminFlags(fs *flag.FlagSet) (addr, token *string) {
	def := os.Getenv("BALANCER_ADMIN")
	if def == "" {
		def = "127.0.0.1:9090"
	}
	addr = fs.String("admin", def, "admin API of any node, `HOST:PORT` (env BALANCER_ADMIN)")
	token = fs.String("token", os.Getenv("BALANCER_ADMIN_TOKEN"), "admin bearer `token` (env BALANCER_ADMIN_TOKEN)")
	return addr, token
}

func runMembers(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("balancer members", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr, token := adminFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: balancer members [-admin HOST:PORT]\n\nLists the cluster's members as the node at -admin sees them.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	m, err := admin.NewClient(*addr, *token).Members(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tGOSSIP\tADMIN\tRAFT\tAPPLIED")
	for _, mb := range m.Members {
		role := mb.RaftRole
		if mb.Leader {
			role += " (leader)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", mb.Name, mb.Status, dash(mb.GossipAddr), dash(mb.AdminAddr), dash(role), mb.AppliedIndex)
	}
	return tw.Flush()
}

func runWeights(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "set" {
		return runWeightsSet(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("balancer weights", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr, token := adminFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: balancer weights [-admin HOST:PORT]\n\nLists the backends and weights applied on the node at -admin.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := admin.NewClient(*addr, *token).Config(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "config index %d\n", cfg.Index)
	fmt.Fprintln(tw, "ID\tADDRESS\tWEIGHT\tDRAIN\tSOURCE")
	for _, b := range cfg.Backends {
		w := strconv.Itoa(int(b.Weight))
		if b.Pinned {
			w += " (pinned)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", b.ID, b.Address, w, b.Drain, dash(b.Source))
	}
	return tw.Flush()
}

func runWeightsSet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("balancer weights set", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr, token := adminFlags(fs)
	wait := fs.Bool("wait", true, "wait until every node has applied the change")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: balancer weights set ID WEIGHT [-admin HOST:PORT]\n\nSets a backend's weight (0..%d; 0 = no new traffic) through any node; followers forward\nto the raft leader. The weight is pinned: Consul syncs keep it until\n`curl -X DELETE http://ADMIN/v1/backends/ID/weight` clears it.\n\nFlags:\n", consensus.MaxWeight)
		fs.PrintDefaults()
	}
	// Flags may come before or after the two positional arguments.
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err}
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	if len(pos) != 2 {
		fs.Usage()
		return usagef("weights set: want ID and WEIGHT, got %d arguments", len(pos))
	}
	w, err := strconv.ParseInt(pos[1], 10, 32)
	if err != nil || w < 0 || w > consensus.MaxWeight {
		return usagef("weights set: weight %q: want a whole number 0..%d", pos[1], consensus.MaxWeight)
	}
	var opts []admin.WriteOption
	if *wait {
		opts = append(opts, admin.WaitApplied())
	}
	res, err := admin.NewClient(*addr, *token).SetWeight(ctx, pos[0], int32(w), opts...)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s weight %d committed at config index %d by leader %s", pos[0], w, res.Index, res.Leader)
	if *wait {
		if res.AppliedEverywhere {
			fmt.Fprint(stdout, "; applied on every node")
		} else {
			fmt.Fprint(stdout, "; NOT yet applied on every node")
		}
	}
	fmt.Fprintln(stdout)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
