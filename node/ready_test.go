package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
	"github.com/thebalancer/balancer/proxy"
)

// A node whose every backend is drained answers every request with 503, so
// its readiness must say so: an upstream balancer or an orchestrator reads
// /readyz, not the traffic.
func TestNotReadyWhenNothingIsRoutable(t *testing.T) {
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1})
	n, _, _ := startNode(t, cfg)
	base := "http://" + n.AdminAddr()
	var st map[string]string
	testutil.Eventually(t, 10*time.Second, "ready", func() bool { return getJSON(t, base+"/readyz", &st) == 200 })
	cli := admin.NewClient(n.AdminAddr(), "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.SetDrain(ctx, "a", true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "not ready with the only backend drained", func() error {
		st = nil
		if code := getJSON(t, base+"/readyz", &st); code != 503 || !strings.Contains(st["error"], "drained") {
			return fmt.Errorf("%d %v", code, st)
		}
		return nil
	})
	if _, err := cli.SetDrain(ctx, "a", false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "ready again", func() bool { return getJSON(t, base+"/readyz", &st) == 200 })
}
