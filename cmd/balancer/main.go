// Command balancer is the single binary of the balancer cluster: the agent
// that proxies traffic, the demo backend, and (as they land) the cluster
// and benchmark tools. main only wires signals and exit codes; each
// subcommand parses its own flags into a package Config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// usageError marks a bad command line or configuration: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

const topUsage = `balancer: a peer-to-peer load-balancer cluster

Usage:
  balancer agent [flags]          run a node (proxy + admin API)
  balancer demo-backend [flags]   run a synthetic backend for demos and tests
  balancer status [-admin ...]    the cluster at a glance: members, leader, backends
                                  with weights, breakers, in-flight, rate and p99
  balancer members [-admin ...]   list the cluster's members and their state
  balancer weights [-admin ...]   list the backends and weights a node applies
  balancer weights set ID WEIGHT [-admin ...]
                                  change a weight through any node
  balancer bench [flags]          benchmark the algorithms on a local cluster
  balancer certs -nodes N1,N2 ... create a test CA and node/client certificates

Run 'balancer COMMAND -h' for the flags of a command.
`

func main() {
	// Only the agent catches SIGHUP: the other commands are foreground
	// tools that should go when their terminal does.
	agent := len(os.Args) > 1 && os.Args[1] == "agent"
	ctx, stop := watchSignals(os.Stderr, agent, os.Exit)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "balancer:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "balancer:", err)
		return 1
	}
}

// run dispatches a subcommand. It returns when the command is done or ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return usagef("no command given")
	}
	switch args[0] {
	case "agent":
		return runAgent(ctx, args[1:], stdout, stderr)
	case "demo-backend":
		return runDemoBackend(ctx, args[1:], stdout, stderr)
	case "status":
		return runStatus(ctx, args[1:], stdout, stderr)
	case "members":
		return runMembers(ctx, args[1:], stdout, stderr)
	case "weights":
		return runWeights(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "certs":
		return runCerts(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, topUsage)
		return nil
	default:
		fmt.Fprint(stderr, topUsage)
		return usagef("unknown command %q", args[0])
	}
}

// parseFlags parses args into fs. -h prints the usage to help (stdout: it
// is what the user asked for) and returns flag.ErrHelp; a bad flag is one
// line, returned as a usage error that points at -h, rather than the whole
// usage after the message, which buries the message.
func parseFlags(fs *flag.FlagSet, args []string, help io.Writer) error {
	if err := parseOnce(fs, args, help); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (see %s -h)", fs.Arg(0), fs.Name())
	}
	return nil
}

// parseOnce is fs.Parse with parseFlags' handling of -h and of errors, for
// commands that parse flags between positional arguments.
func parseOnce(fs *flag.FlagSet, args []string, help io.Writer) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(help)
		fs.Usage()
		fs.SetOutput(out)
		return err
	case err != nil:
		return usageError{fmt.Errorf("%w (see %s -h)", err, fs.Name())}
	}
	return nil
}
