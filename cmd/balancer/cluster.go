package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/thebalancer/balancer/consensus"
	"github.com/thebalancer/balancer/node/admin"
	"github.com/thebalancer/balancer/pki"
)

// adminConn holds the flags every client command shares.
type adminConn struct {
	addr, token   string
	ca, cert, key string
}

// adminFlags registers the connection flags every client command shares.
func adminFlags(fs *flag.FlagSet) *adminConn {
	def := os.Getenv("BALANCER_ADMIN")
	if def == "" {
		def = "127.0.0.1:9090"
	}
	c := &adminConn{}
	fs.StringVar(&c.addr, "admin", def, "admin API of any node, `HOST:PORT` or URL; https://HOST:PORT for a node with -tls-cert (env BALANCER_ADMIN)")
	fs.StringVar(&c.token, "token", os.Getenv("BALANCER_ADMIN_TOKEN"), "admin bearer `token` (env BALANCER_ADMIN_TOKEN)")
	fs.StringVar(&c.ca, "ca", os.Getenv("BALANCER_ADMIN_CA"), "trust the node's certificate if this CA (`PEM file`) signed it, instead of the system's roots; implies https (env BALANCER_ADMIN_CA)")
	fs.StringVar(&c.cert, "cert", os.Getenv("BALANCER_ADMIN_CERT"), "client certificate (`PEM file`) for a node with -tls-ca; implies https (env BALANCER_ADMIN_CERT)")
	fs.StringVar(&c.key, "key", os.Getenv("BALANCER_ADMIN_KEY"), "private key (`PEM file`) of -cert (env BALANCER_ADMIN_KEY)")
	return c
}

// client builds the admin client; a TLS file that cannot be used is a usage error.
func (c *adminConn) client() (*admin.Client, error) {
	if (c.cert == "") != (c.key == "") {
		return nil, usagef("-cert and -key go together: a client certificate and its private key")
	}
	if c.ca == "" && c.cert == "" {
		return admin.NewClient(c.addr, c.token), nil
	}
	if strings.HasPrefix(c.addr, "http://") {
		return nil, usagef("-admin %s: -ca and -cert need an https:// admin address", c.addr)
	}
	var roots *x509.CertPool
	if c.ca != "" {
		p, err := pki.LoadPool(c.ca)
		if err != nil {
			return nil, usagef("-ca: %v", err)
		}
		roots = p
	}
	var cert *tls.Certificate
	if c.cert != "" {
		kp, err := pki.LoadKeyPair(c.cert, c.key)
		if err != nil {
			return nil, usagef("-cert/-key: %v", err)
		}
		cert = &kp
	}
	return admin.NewClient(c.addr, c.token, admin.WithTLS(pki.ClientConfig(roots, cert))), nil
}

// clientCommand parses the flags of a command that reads one node's admin
// API (the shared connection flags, plus what extra registers) and builds
// its client.
func clientCommand(name, usage string, args []string, stdout, stderr io.Writer, extra func(*flag.FlagSet)) (*admin.Client, *adminConn, error) {
	fs := flag.NewFlagSet("balancer "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	conn := adminFlags(fs)
	if extra != nil {
		extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return nil, nil, err
	}
	cl, err := conn.client()
	return cl, conn, err
}

func runMembers(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cl, conn, err := clientCommand("members", "Usage: balancer members [-admin HOST:PORT]\n\nLists the cluster's members as the node at -admin sees them.\n\nFlags:\n", args, stdout, stderr, nil)
	if err != nil {
		return err
	}
	m, err := cl.Members(ctx)
	if err != nil {
		return conn.explain(err)
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
	cl, conn, err := clientCommand("weights", "Usage: balancer weights [-admin HOST:PORT]\n\nLists the backends and weights applied on the node at -admin.\n\nFlags:\n", args, stdout, stderr, nil)
	if err != nil {
		return err
	}
	cfg, err := cl.Config(ctx)
	if err != nil {
		return conn.explain(err)
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
	conn := adminFlags(fs)
	wait := fs.Bool("wait", true, "wait until every node has applied the change")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: balancer weights set ID WEIGHT [-admin HOST:PORT]\n\nSets a backend's weight (0..%d; 0 = no new traffic) through any node; followers forward\nto the raft leader. The weight is pinned: Consul syncs keep it until\n`curl -X DELETE http://ADMIN/v1/backends/ID/weight` clears it.\n\nFlags:\n", consensus.MaxWeight)
		fs.PrintDefaults()
	}
	// Flags may come before or after the two positional arguments.
	var pos []string
	for len(args) > 0 {
		if err := parseOnce(fs, args, stdout); err != nil {
			return err
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
	cl, err := conn.client()
	if err != nil {
		return err
	}
	res, err := cl.SetWeight(ctx, pos[0], int32(w), opts...)
	if err != nil {
		return conn.explain(err)
	}
	fmt.Fprintf(stdout, "%s weight %d committed at config index %d by leader %s", pos[0], w, res.Index, res.Leader)
	if *wait {
		if res.AppliedEverywhere {
			fmt.Fprint(stdout, "; applied on every node")
		} else {
			fmt.Fprint(stdout, "; NOT yet applied on every node")
			if res.WaitError != "" {
				fmt.Fprintf(stdout, "\n  %s", res.WaitError)
			}
		}
	}
	fmt.Fprintln(stdout)
	return nil
}

// explain adds what to do to the errors of a client and a node that
// disagree about TLS, which otherwise read as a bare 400 or a TLS alert.
func (c *adminConn) explain(err error) error {
	var ae *admin.Error
	answered := errors.As(err, &ae) // the node answered with a status
	msg := err.Error()
	https := strings.HasPrefix(c.addr, "https://") || c.ca != "" || c.cert != ""
	switch {
	case answered && ae.Status == http.StatusBadRequest && strings.Contains(ae.Message, "HTTPS"):
		return fmt.Errorf("%w: the node's admin API speaks HTTPS (-tls-cert): use -admin https://HOST:PORT, with -ca and, if it demands one, -cert/-key", err)
	case strings.Contains(msg, "certificate required"):
		return fmt.Errorf("%w: the node requires a client certificate (-tls-ca): pass -cert and -key", err)
	case strings.Contains(msg, "unknown authority"):
		return fmt.Errorf("%w: pass the CA that signed the node's certificate with -ca", err)
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w: the node's admin API is plain HTTP: use -admin http://HOST:PORT without -ca/-cert", err)
	case https && c.cert == "" && !answered && !isDialError(err) && !isTimeout(err) && looksRefused(msg):
		// TLS 1.3 sends the node's refusal after the handshake, so the
		// request often meets a closed connection (broken pipe, reset,
		// http2's "could not be established") instead of the alert.
		return fmt.Errorf("%w: the node may require a client certificate (-tls-ca): pass -cert and -key", err)
	}
	return err
}

// isTimeout reports whether err is a deadline: a slow or unreachable node,
// not a TLS refusal.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// looksRefused reports whether msg reads like a TLS handshake failure or a
// node hanging up on a client without a certificate.
func looksRefused(msg string) bool {
	for _, s := range []string{"tls:", "bad certificate", "handshake", "broken pipe", "connection reset", "EOF", "could not be established"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// isDialError reports whether err happened before a connection existed
// (refused, unreachable, DNS).
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
