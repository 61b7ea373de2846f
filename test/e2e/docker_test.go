package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// env is what TestMain prepared for every test: the image and the compose
// command. skip, when set, is why the docker tests cannot run here.
var env struct {
	skip    string
	image   string
	compose []string // "docker compose" or "docker-compose"
	file    string   // deploy/compose.yaml

	mu       sync.Mutex
	projects map[string]bool // guarded by mu; up and not yet torn down
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		env.skip = "-short: docker tests skipped"
		return m.Run()
	}
	if err := setup(); err != nil {
		env.skip = err.Error() + "; the process-based variant of these fault tests is cmd/balancer/procs_test.go (node kill, leader kill, restart, minority), which needs no docker"
		return m.Run()
	}
	var once sync.Once
	cleanup := func() {
		once.Do(func() {
			env.mu.Lock()
			left := make([]string, 0, len(env.projects))
			for p := range env.projects {
				left = append(left, p)
			}
			env.mu.Unlock()
			for _, p := range left {
				downProject(p)
			}
			_ = exec.Command("docker", "rmi", "-f", env.image).Run()
		})
	}
	defer cleanup()
	// go test's timeout panics past every defer and t.Cleanup, and Ctrl-C
	// kills the process: tear the projects down before either can leave
	// containers, networks and volumes behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var guard <-chan time.Time
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > time.Minute {
			guard = time.After(d - 30*time.Second)
		}
	}
	go func() {
		select {
		case <-sigs:
		case <-guard:
			fmt.Fprintln(os.Stderr, "e2e: the test timeout is near; tearing down the docker projects")
		}
		cleanup()
		os.Exit(2)
	}()
	return m.Run()
}

// setup checks for docker and compose, builds the static binary and the
// image once for the whole run, under a tag of its own so parallel runs
// and the developer's balancer:dev are left alone.
func setup() error {
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return fmt.Errorf("docker unavailable (docker info: %v: %s)", err, firstLine(out))
	}
	switch {
	case exec.Command("docker", "compose", "version").Run() == nil:
		env.compose = []string{"docker", "compose"}
	case exec.Command("docker-compose", "version").Run() == nil:
		env.compose = []string{"docker-compose"}
	default:
		return fmt.Errorf("docker compose unavailable (neither the docker compose plugin nor docker-compose runs)")
	}
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..")
	env.file = filepath.Join(root, "deploy", "compose.yaml")

	dir, err := os.MkdirTemp("", "balancer-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		return err
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "balancer"), "./cmd/balancer")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v: %s", err, out)
	}
	env.image = "balancer:e2e-" + randHex(4)
	if out, err := exec.Command("docker", "build", "-q", "-f", filepath.Join(root, "deploy", "Dockerfile"), "-t", env.image, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("docker build: %v: %s", err, out)
	}
	env.projects = make(map[string]bool)
	return nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cluster is one compose project of deploy/compose.yaml.
type cluster struct {
	t       testing.TB
	project string
	env     []string
	net     string // BALANCER_CLUSTER_NET: the cluster network's /24 prefix
	token   string
	ports   *portCache
}

// portCache remembers where the containers' ports are published; a
// container started again gets new host ports (forgetPorts).
type portCache struct {
	mu sync.Mutex
	m  map[string]string // guarded by mu; "n1:8080" -> "127.0.0.1:49153"
}

// in returns c for use in subtest t: its helpers fail t.
func (c *cluster) in(t testing.TB) *cluster {
	cc := *c
	cc.t = t
	return &cc
}

// nodes and backends are the services of deploy/compose.yaml.
var (
	nodes    = []string{"n1", "n2", "n3"}
	backends = []string{"b1", "b2", "b3"}
)

const (
	trafficPort = "8080"
	adminPort   = "9090"
)

// startCluster brings up a fresh project with every host port chosen by
// the OS and waits until it serves: three alive members, one leader, every
// node ready. The project is torn down when the test ends, failed or not.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	if env.skip != "" {
		t.Skip(env.skip)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	c := &cluster{t: t, project: "balancer-e2e-" + randHex(4), token: randHex(16), ports: &portCache{m: make(map[string]string)}}
	base := append(os.Environ(),
		"BALANCER_IMAGE="+env.image,
		"BALANCER_GOSSIP_KEY="+base64.StdEncoding.EncodeToString(key),
		"BALANCER_ADMIN_TOKEN="+c.token,
		"COMPOSE_PROJECT_NAME="+c.project)
	for _, n := range nodes {
		up := strings.ToUpper(n)
		base = append(base, up+"_TRAFFIC_PORT=", up+"_ADMIN_PORT=")
	}
	env.mu.Lock()
	env.projects[c.project] = true
	env.mu.Unlock()
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
		downProject(c.project)
	})
	// The cluster network's subnet is fixed per project (the nodes bind
	// their addresses on it), so pick one at random and try another if it
	// overlaps a network that exists already.
	var err error
	for try := 0; try < 5; try++ {
		c.net = fmt.Sprintf("10.%d.%d", 200+randInt(50), randInt(256))
		c.env = append(base[:len(base):len(base)], "BALANCER_CLUSTER_NET="+c.net)
		var out []byte
		if out, err = c.composeOut("up", "-d"); err == nil {
			break
		}
		err = fmt.Errorf("%v: %s", err, out)
		if !strings.Contains(string(out), "overlap") {
			break
		}
		downProject(c.project)
	}
	if err != nil {
		t.Fatalf("compose up: %v", err)
	}
	c.waitHealthy(60 * time.Second)
	return c
}

func randInt(n int64) int {
	v, _ := rand.Int(rand.Reader, big.NewInt(n))
	return int(v.Int64())
}

// downProject removes a project's containers, networks and volumes.
func downProject(project string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append(env.compose[1:], "-p", project, "-f", env.file, "down", "-v", "-t", "2")
	cmd := exec.CommandContext(ctx, env.compose[0], args...)
	// down interpolates the file too; the values only need to parse.
	cmd.Env = append(os.Environ(), "BALANCER_GOSSIP_KEY=x", "BALANCER_ADMIN_TOKEN=x", "BALANCER_CLUSTER_NET=10.255.255")
	_ = cmd.Run()
	env.mu.Lock()
	delete(env.projects, project)
	env.mu.Unlock()
}

func (c *cluster) composeOut(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	full := append(append([]string(nil), env.compose[1:]...), "-p", c.project, "-f", env.file)
	cmd := exec.CommandContext(ctx, env.compose[0], append(full, args...)...)
	cmd.Env = c.env
	return cmd.CombinedOutput()
}

func (c *cluster) compose(args ...string) string {
	c.t.Helper()
	out, err := c.composeOut(args...)
	if err != nil {
		c.t.Fatalf("compose %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func docker(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// container is the container ID of a service.
func (c *cluster) container(svc string) string {
	c.t.Helper()
	id := c.compose("ps", "-q", svc)
	if id == "" {
		c.t.Fatalf("service %s has no container", svc)
	}
	return firstLine([]byte(id))
}

// addr is the host address a service's container port is published on.
// A container started again gets new host ports, so callers re-read it
// after a start (refreshPorts).
func (c *cluster) addr(svc, port string) string {
	c.t.Helper()
	c.ports.mu.Lock()
	a, ok := c.ports.m[svc+":"+port]
	c.ports.mu.Unlock()
	if ok {
		return a
	}
	out := docker(c.t, "port", c.container(svc), port+"/tcp")
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "127.0.0.1:") {
			a = strings.TrimSpace(line)
		}
	}
	if a == "" {
		c.t.Fatalf("%s port %s is not published on 127.0.0.1: %q", svc, port, out)
	}
	c.ports.mu.Lock()
	c.ports.m[svc+":"+port] = a
	c.ports.mu.Unlock()
	return a
}

func (c *cluster) forgetPorts(svc string) {
	c.ports.mu.Lock()
	defer c.ports.mu.Unlock()
	for k := range c.ports.m {
		if strings.HasPrefix(k, svc+":") {
			delete(c.ports.m, k)
		}
	}
}

func (c *cluster) admin(n string) string   { return "http://" + c.addr(n, adminPort) }
func (c *cluster) traffic(n string) string { return c.addr(n, trafficPort) }

// kill sends SIGKILL: no drain, no leave, peers must detect the death.
func (c *cluster) kill(svc string) {
	docker(c.t, "kill", "-s", "KILL", c.container(svc))
	c.forgetPorts(svc)
}

// stop sends SIGTERM and waits for the graceful exit.
func (c *cluster) stop(svc string) {
	docker(c.t, "stop", "-t", "30", c.container(svc))
	c.forgetPorts(svc)
}

func (c *cluster) start(svc string) {
	docker(c.t, "start", c.container(svc))
	c.forgetPorts(svc)
}

// network is the compose project's network of that name.
func (c *cluster) network(name string) string {
	return c.project + "_" + name
}

// partition cuts a node off the cluster network (gossip, raft, forwarded
// writes); its traffic and admin ports stay reachable on the edge network.
func (c *cluster) partition(n string) {
	docker(c.t, "network", "disconnect", c.network("cluster"), c.container(n))
}

// heal reconnects the node with the address it had: its gossip and raft
// listeners are bound to it.
func (c *cluster) heal(n string) {
	docker(c.t, "network", "connect", "--ip", c.net+"."+nodeHost(n), "--alias", n+".cluster", c.network("cluster"), c.container(n))
}

// nodeHost is the last octet of a node's cluster address in compose.yaml.
func nodeHost(n string) string {
	return map[string]string{"n1": "11", "n2": "12", "n3": "13"}[n]
}

func (c *cluster) dumpLogs() {
	out, _ := c.composeOut("logs", "--no-color", "--tail", "60")
	c.t.Logf("compose logs (last 60 lines per service):\n%s", bytes.TrimSpace(out))
}
