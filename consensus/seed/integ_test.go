package seed_test

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/thebalancer/balancer/consensus/seed"
)

// TestIntegConsul runs the watchers against a real Consul agent. It needs
// CONSUL_HTTP_ADDR (and CONSUL_HTTP_TOKEN when ACLs are on, with
// service:write and key:write on the names it creates); it registers a
// uniquely named service and key and removes them afterwards.
//
//	consul agent -dev &
//	CONSUL_HTTP_ADDR=127.0.0.1:8500 go test -race -run Integ ./consensus/seed
func TestIntegConsul(t *testing.T) {
	if os.Getenv("CONSUL_HTTP_ADDR") == "" {
		t.Skip("CONSUL_HTTP_ADDR is not set: skipping the test against a real Consul agent (run `consul agent -dev` and set it to try)")
	}
	c, err := seed.NewClient("", "")
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("balancer-integ-%d", time.Now().UnixNano())
	cfg, _ := fast(t)

	t.Run("service", func(t *testing.T) {
		agent := c.Agent()
		register := func(id string, port int, w api.AgentWeights) {
			t.Helper()
			err := agent.ServiceRegister(&api.AgentServiceRegistration{
				ID: id, Name: name, Address: "127.0.0.1", Port: port, Weights: &w,
				Check: &api.AgentServiceCheck{CheckID: "check-" + id, TTL: "10m", Status: api.HealthPassing},
			})
			if err != nil {
				t.Fatalf("register %s: %v", id, err)
			}
			t.Cleanup(func() { _ = agent.ServiceDeregister(id) })
		}
		register(name+"-1", 18081, api.AgentWeights{Passing: 7, Warning: 2})
		one := seed.Backend{ID: name + "-1", Address: "127.0.0.1:18081", Weight: 7}
		ch := start(t, seed.NewService(c, name, seed.WithConfig(cfg)))
		awaitSet(t, ch, one)

		register(name+"-2", 18082, api.AgentWeights{Passing: 3, Warning: 1})
		two := seed.Backend{ID: name + "-2", Address: "127.0.0.1:18082", Weight: 3}
		awaitSet(t, ch, one, two)

		if err := agent.UpdateTTL("check-"+name+"-1", "integ", api.HealthWarning); err != nil {
			t.Fatal(err)
		}
		awaitSet(t, ch, seed.Backend{ID: name + "-1", Address: "127.0.0.1:18081", Weight: 2}, two)

		if err := agent.UpdateTTL("check-"+name+"-1", "integ", api.HealthCritical); err != nil {
			t.Fatal(err)
		}
		awaitSet(t, ch, two)

		// Deregistering the last instance keeps the last set (see
		// ServiceWatcher); TestServiceWithoutInstancesKeepsLastSet covers it.
	})

	t.Run("kv", func(t *testing.T) {
		key := "balancer-integ/" + name
		kv := c.KV()
		t.Cleanup(func() { _, _ = kv.Delete(key, nil) })
		ch := start(t, seed.NewKV(c, key, seed.WithConfig(cfg)))
		// A missing key delivers nothing (TestKVKeyMissingKeepsLastSet).
		if _, err := kv.Put(&api.KVPair{Key: key, Value: []byte(doc1)}, nil); err != nil {
			t.Fatal(err)
		}
		awaitSet(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 5}, seed.Backend{ID: "b", Address: "10.0.0.2:80", Weight: 1})
		if _, err := kv.Put(&api.KVPair{Key: key, Value: []byte(doc2)}, nil); err != nil {
			t.Fatal(err)
		}
		awaitSet(t, ch, seed.Backend{ID: "a", Address: "10.0.0.1:80", Weight: 7})
	})
}

// awaitSet receives sets until one equals want: a real agent may deliver
// intermediate sets (anti-entropy, check updates) that the double does not.
func awaitSet(t *testing.T, ch <-chan []seed.Backend, want ...seed.Backend) {
	t.Helper()
	deadline := time.After(within)
	var last []seed.Backend
	for {
		select {
		case got := <-ch:
			if slices.Equal(got, want) {
				return
			}
			last = got
		case <-deadline:
			t.Fatalf("no set %v within %v; last %v", want, within, last)
		}
	}
}
