package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/thebalancer/balancer/pki"
)

const certsUsage = `Usage: balancer certs [-out DIR] -nodes NAME[,NAME...] -hosts HOST[,HOST...] [flags]

Creates a small CA and signs a certificate for each node and one for the CLI,
with ECDSA P-256 keys, for tests, demos and small private clusters:

  DIR/ca.pem, DIR/ca-key.pem          the CA (keep ca-key.pem off the nodes)
  DIR/NODE.pem, DIR/NODE-key.pem      per node; valid as server and client, so one
                                      pair serves -tls-cert/-tls-key (admin API and
                                      write forwarding) and -raft-tls-cert/-raft-tls-key
  DIR/CLIENT.pem, DIR/CLIENT-key.pem  client only: -cert/-key of members and weights

Keys are written with mode 0600. Every node certificate is valid for all of
-hosts (and the node's name): list the addresses nodes are dialled at.
An existing CA in DIR is never replaced without -force.

Flags:
`

func runCerts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("balancer certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "certs", "`directory` to write the files to (created 0700 if missing)")
	nodes := fs.String("nodes", "", "node `names`, comma-separated: one certificate each")
	hosts := fs.String("hosts", "127.0.0.1,localhost", "IP addresses and DNS `names`, comma-separated, that every node certificate is valid for")
	client := fs.String("client", "client", "`name` of the CLI's client certificate; empty: none")
	days := fs.Int("days", 365, "validity in `days`")
	force := fs.Bool("force", false, "replace an existing CA in -out (every certificate it signed stops being trusted)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), certsUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if len(splitList(*nodes)) == 0 {
		fs.Usage()
		return usagef("-nodes: name at least one node, e.g. -nodes n1,n2,n3")
	}
	if *days < 1 || *days > 3650 {
		return usagef("-days %d: want 1..3650", *days)
	}
	o := pki.Options{Dir: *out, Nodes: splitList(*nodes), Hosts: splitList(*hosts), Client: *client,
		Validity: time.Duration(*days) * 24 * time.Hour, Force: *force}
	if err := o.Validate(); err != nil {
		return usageError{err}
	}
	written, err := pki.Generate(o)
	if errors.Is(err, pki.ErrCAExists) {
		return usageError{err}
	}
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	for _, f := range written {
		fmt.Fprintln(stdout, "wrote", f)
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
