package node

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/thebalancer/balancer/consensus"
	"github.com/thebalancer/balancer/consensus/consultest"
	"github.com/thebalancer/balancer/consensus/seed"
	"github.com/thebalancer/balancer/internal/testutil"
)

// consulNode starts a lone node that seeds and syncs from the Consul double.
func consulNode(t *testing.T, consul *consultest.Server, service string) *Node {
	t.Helper()
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	cfg := testConfig(t)
	cfg.Consul = ConsulConfig{Service: service, Addr: consul.URL(), Seed: seed.Config{
		WaitTime: 2 * time.Second, MinInterval: 10 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}}
	n, _ := startNode(t, cfg)
	return n
}

func hostPortOf(t *testing.T, addr string) (string, int) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	return h, port
}

func backendOf(n *Node, id string) (consensus.Backend, bool) {
	return n.store.Config().Backend(id)
}

func TestConsulSeedsAndSyncsInstances(t *testing.T) {
	consul := consultest.New(t)
	b1, b2 := startBackend(t, "w1", "http"), startBackend(t, "w2", "http")
	h1, p1 := hostPortOf(t, b1.Addr())
	h2, p2 := hostPortOf(t, b2.Addr())
	consul.SetService("web",
		consultest.Instance{ID: "w1", Address: h1, Port: p1, Weights: api.AgentWeights{Passing: 3, Warning: 1}},
		consultest.Instance{ID: "w2", Address: h2, Port: p2, Weights: api.AgentWeights{Passing: 1, Warning: 1}, Status: consultest.Warning})
	n := consulNode(t, consul, "web")
	testutil.Eventually(t, 10*time.Second, "the service's instances in the replicated config", func() bool {
		w1, ok1 := backendOf(n, "w1")
		w2, ok2 := backendOf(n, "w2")
		return ok1 && ok2 && w1.Weight == 3 && w2.Weight == 1 && w1.Source == consensus.SourceConsul
	})
	// Traffic flows to them.
	testutil.Eventually(t, 5*time.Second, "traffic through the Consul-seeded routes", func() bool {
		code, _ := (&testNode{Node: n}).get(t, "/")
		return code == 200
	})
	// An instance appears, another goes critical.
	b3 := startBackend(t, "w3", "http")
	h3, p3 := hostPortOf(t, b3.Addr())
	consul.AddInstance("web", consultest.Instance{ID: "w3", Address: h3, Port: p3, Weights: api.AgentWeights{Passing: 2, Warning: 1}})
	consul.SetStatus("web", "w2", consultest.Critical)
	testutil.Eventually(t, 10*time.Second, "w3 added and the critical w2 removed", func() bool {
		_, has2 := backendOf(n, "w2")
		w3, has3 := backendOf(n, "w3")
		return !has2 && has3 && w3.Weight == 2
	})
	consul.RemoveInstance("web", "w3")
	testutil.Eventually(t, 10*time.Second, "w3 removed", func() bool {
		_, has3 := backendOf(n, "w3")
		return !has3
	})
}

func TestOperatorWeightSurvivesConsulSync(t *testing.T) {
	consul := consultest.New(t)
	consul.SetService("web", consultest.Instance{ID: "w1", Address: "127.0.0.1", Port: 8081, Weights: api.AgentWeights{Passing: 3, Warning: 1}})
	n := consulNode(t, consul, "web")
	testutil.Eventually(t, 10*time.Second, "w1 seeded", func() bool { _, ok := backendOf(n, "w1"); return ok })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.Apply(ctx, consensus.SetWeight("w1", 9)); err != nil {
		t.Fatal(err)
	}
	consul.SetService("web", consultest.Instance{ID: "w1", Address: "127.0.0.1", Port: 8081, Weights: api.AgentWeights{Passing: 5, Warning: 1}})
	testutil.Eventually(t, 10*time.Second, "Consul's new weight recorded as the source weight", func() bool {
		b, _ := backendOf(n, "w1")
		return b.SourceWeight == 5
	})
	if b, _ := backendOf(n, "w1"); b.Weight != 9 || !b.Pinned {
		t.Fatalf("the operator's weight was overridden by a Consul sync: %+v", b)
	}
	// Clearing the pin hands the weight back to Consul.
	if _, err := n.Apply(ctx, consensus.ClearPin("w1")); err != nil {
		t.Fatal(err)
	}
	if b, _ := backendOf(n, "w1"); b.Weight != 5 || b.Pinned {
		t.Fatalf("after clearing the pin: %+v", b)
	}
}

func TestConsulDownAtStartDoesNotStopTheNode(t *testing.T) {
	consul := consultest.New(t)
	consul.SetService("web", consultest.Instance{ID: "w1", Address: "127.0.0.1", Port: 8081})
	consul.Stop()
	n := consulNode(t, consul, "web")
	var st map[string]string
	testutil.Eventually(t, 10*time.Second, "the node to be up and leading without Consul", func() bool {
		return n.store.IsLeader() && getJSON(t, "http://"+n.AdminAddr()+"/healthz", &st) == 200
	})
	if _, ok := backendOf(n, "w1"); ok {
		t.Fatal("a backend appeared while Consul was down")
	}
	if err := consul.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the config synced once Consul is back", func() bool { _, ok := backendOf(n, "w1"); return ok })
}
