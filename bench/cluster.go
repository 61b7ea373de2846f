package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/thebalancer/balancer/bench/backend"
	"github.com/thebalancer/balancer/node/admin"
)

// stopTimeout bounds a graceful stop of one process before it is killed.
const stopTimeout = 15 * time.Second

// backendProc is one in-process demo backend the harness owns.
type backendProc struct {
	spec BackendSpec
	mu   sync.Mutex      // guards srv and done
	srv  *backend.Server // guarded by mu
	done chan struct{}   // guarded by mu; closed when srv's Run returns
	stop context.CancelFunc
}

// startBackend binds spec.Address (or a free port when empty) and serves.
func startBackend(spec BackendSpec) (*backendProc, error) {
	b := &backendProc{spec: spec}
	if err := b.start(); err != nil {
		return nil, err
	}
	b.spec.Address = b.srv.Addr()
	return b, nil
}

func (b *backendProc) start() error {
	addr := b.spec.Address
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var srv *backend.Server
	var err error
	// A crashed backend's port is re-bound; retry briefly if the OS lags.
	for try := 0; try < 50; try++ {
		srv, err = backend.New(backend.Config{Listen: addr, Name: b.spec.ID, Mode: backend.ModeHTTP,
			Delay: b.spec.Delay, Jitter: b.spec.Jitter, Workers: b.spec.Workers})
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Run(ctx)
	}()
	b.mu.Lock()
	b.srv, b.done, b.stop = srv, done, cancel
	b.mu.Unlock()
	return nil
}

func (b *backendProc) stats() backend.Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.srv.Stats()
}

// crash closes the backend like a crash (listener and connections gone).
func (b *backendProc) crash() {
	b.mu.Lock()
	srv, done := b.srv, b.done
	b.mu.Unlock()
	srv.Close()
	<-done
}

// alive reports whether the backend is serving (not crashed).
func (b *backendProc) alive() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// shutdown stops the backend gracefully and waits for it.
func (b *backendProc) shutdown() {
	b.mu.Lock()
	stop, done := b.stop, b.done
	b.mu.Unlock()
	stop()
	<-done
}

// agentProc is one `balancer agent` process.
type agentProc struct {
	name   string
	cmd    *exec.Cmd
	exited chan error
	logf   *os.File

	Listen, Admin, Gossip string
}

// startAgent runs `bin agent` with args, logging to logPath, and waits for
// its "node started" line, which names the bound addresses.
func startAgent(ctx context.Context, bin, name, logPath string, args []string) (*agentProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"agent", "-node", name}, args...)...)
	dieWithParent(cmd)
	cmd.Stdout = logf
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start agent %s: %w", name, err)
	}
	a := &agentProc{name: name, cmd: cmd, exited: make(chan error, 1), logf: logf}
	started := make(chan map[string]any, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			logf.WriteString(line + "\n")
			if strings.Contains(line, `"msg":"node started"`) {
				var m map[string]any
				if json.Unmarshal([]byte(line), &m) == nil {
					select {
					case started <- m:
					default:
					}
				}
			}
		}
		_, _ = io.Copy(logf, stderr)
	}()
	go func() {
		<-copied // Wait closes the pipe; read it to the end first.
		a.exited <- cmd.Wait()
	}()
	select {
	case m := <-started:
		a.Listen, _ = m["listen"].(string)
		a.Admin, _ = m["admin"].(string)
		a.Gossip, _ = m["gossip"].(string)
		return a, nil
	case err := <-a.exited:
		a.exited <- err
		return nil, fmt.Errorf("agent %s exited at start (%v); log: %s\n%s", name, err, logPath, tailFile(logPath, 10))
	case <-time.After(30 * time.Second):
		a.kill()
		return nil, fmt.Errorf("agent %s did not start in 30s; log: %s", name, logPath)
	case <-ctx.Done():
		a.kill()
		return nil, ctx.Err()
	}
}

func (a *agentProc) kill() {
	_ = a.cmd.Process.Kill()
	<-a.exited
	a.logf.Close()
}

// stop sends SIGTERM, waits at most stopTimeout, then kills.
func (a *agentProc) stop() error {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.exited:
		a.logf.Close()
		if err != nil {
			return fmt.Errorf("agent %s: exit after SIGTERM: %w", a.name, err)
		}
		return nil
	case <-time.After(stopTimeout):
		a.kill()
		return fmt.Errorf("agent %s: no exit %s after SIGTERM; killed", a.name, stopTimeout)
	}
}

// cluster is K agents started for one algorithm.
type cluster struct {
	agents  []*agentProc
	dataDir string // the nodes' raft state, removed by stop
}

// startCluster starts k agents in dir (node 1 first, the rest joining it)
// with -bootstrap-expect k and waits until every one answers /readyz 200
// and sees every member alive.
//
// Raft state goes to a fresh temporary directory (removed by stop): a data
// directory left by an earlier run would restore that run's backends.
func startCluster(ctx context.Context, bin, dir string, k int, algorithm string, backends []BackendSpec) (*cluster, error) {
	dataDir, err := os.MkdirTemp("", "balancer-bench-"+algorithm+"-")
	if err != nil {
		return nil, fmt.Errorf("node data dir: %w", err)
	}
	var beFlags []string
	for _, b := range backends {
		beFlags = append(beFlags, "-backend", fmt.Sprintf("%s=%s@%d", b.ID, b.Address, b.Weight))
	}
	argsFor := func(i int, join string) []string {
		name := fmt.Sprintf("n%d", i+1)
		args := []string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-gossip", "127.0.0.1:0", "-raft", "127.0.0.1:0",
			"-bootstrap-expect", fmt.Sprint(k), "-data-dir", filepath.Join(dataDir, name), "-algorithm", algorithm,
			"-log-format", "json", "-gossip-profile", "local"}
		if join != "" {
			args = append(args, "-join", join)
		}
		return append(args, beFlags...)
	}
	c := &cluster{agents: make([]*agentProc, k), dataDir: dataDir}
	first, err := startAgent(ctx, bin, "n1", filepath.Join(dir, "n1.log"), argsFor(0, ""))
	if err != nil {
		c.stop()
		return nil, err
	}
	c.agents[0] = first
	var wg sync.WaitGroup
	errs := make([]error, k)
	for i := 1; i < k; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("n%d", i+1)
			c.agents[i], errs[i] = startAgent(ctx, bin, name, filepath.Join(dir, name+".log"), argsFor(i, first.Gossip))
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.stop()
		return nil, err
	}
	if err := c.waitReady(ctx, 60*time.Second); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// waitReady polls each node's /readyz, then its member list, until all
// are ready and see k alive members, or timeout passes.
func (c *cluster) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, a := range c.agents {
		cl := admin.NewClient(a.Admin, "")
		for {
			ok := false
			if resp, err := hc.Get("http://" + a.Admin + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					if m, err := cl.Members(ctx); err == nil {
						alive := 0
						for _, mb := range m.Members {
							if mb.Status == "alive" {
								alive++
							}
						}
						ok = alive >= len(c.agents)
					}
				}
			}
			if ok {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("node %s (admin %s) not ready with %d alive members after %s", a.name, a.Admin, len(c.agents), timeout)
			case err := <-a.exited:
				a.exited <- err
				return fmt.Errorf("node %s exited while starting: %v", a.name, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	hc.CloseIdleConnections()
	return nil
}

// stop stops every agent at once (SIGTERM, bounded wait, then kill).
func (c *cluster) stop() error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.agents))
	for i, a := range c.agents {
		if a == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.stop()
		}()
	}
	wg.Wait()
	if err := os.RemoveAll(c.dataDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *cluster) listens() []string {
	var out []string
	for _, a := range c.agents {
		out = append(out, a.Listen)
	}
	return out
}

func (c *cluster) admins() []string {
	var out []string
	for _, a := range c.agents {
		out = append(out, a.Admin)
	}
	return out
}

// haproxyProc is one HAProxy in front of the backends.
type haproxyProc struct {
	cmd    *exec.Cmd
	exited chan error
	Listen string
}

// startHAProxy runs haproxy with `balance leastconn` and keep-alive to the
// backends, and waits until its listener accepts.
func startHAProxy(ctx context.Context, dir string, backends []BackendSpec) (*haproxyProc, error) {
	path, err := exec.LookPath("haproxy")
	if err != nil {
		return nil, fmt.Errorf("-compare haproxy: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n  http-reuse always\n")
	fmt.Fprintf(&b, "frontend fe\n  bind %s\n  default_backend be\nbackend be\n  balance leastconn\n", addr)
	for _, be := range backends {
		fmt.Fprintf(&b, "  server %s %s weight %d\n", be.ID, be.Address, be.Weight)
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, "-db", "-f", cfgPath)
	dieWithParent(cmd)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	h := &haproxyProc{cmd: cmd, exited: make(chan error, 1), Listen: addr}
	go func() {
		h.exited <- cmd.Wait()
		logf.Close()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return h, nil
		}
		select {
		case err := <-h.exited:
			return nil, fmt.Errorf("haproxy exited at start (%v); see %s", err, filepath.Join(dir, "haproxy.log"))
		case <-ctx.Done():
			h.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.stop()
			return nil, fmt.Errorf("haproxy did not listen on %s in 10s", addr)
		}
	}
}

func (h *haproxyProc) stop() {
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(stopTimeout):
		_ = h.cmd.Process.Kill()
		<-h.exited
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
