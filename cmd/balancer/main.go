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
		return runAgent(ctx, args[1:], stderr)
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

// parseFlags parses args into fs, turning parse errors into usage errors
// (flag has already printed the message and usage).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
