package node

import (
	"context"
	"fmt"
	"log/slog"
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
	n, _ := startNode(t, cfg)
	base := "http://" + n.AdminAddr()
	var st map[string]string
	testutil.Eventually(t, 10*time.Second, "ready, on the seeded config", func() bool {
		return getJSON(t, base+"/readyz", &st) == 200 && n.store.Config().Index > 0
	})
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

// -backend flags only seed an empty config. A node restarted with edited
// flags runs on the replicated config, and must say that its flags were
// ignored rather than leave the operator to guess.
func TestEditedBackendFlagsOnRestartAreReported(t *testing.T) {
	cfg := testConfig(t, proxy.Backend{ID: "a", Address: "127.0.0.1:1", Weight: 1})
	first, stop := startNode(t, cfg)
	testutil.Eventually(t, 10*time.Second, "the seed applied", func() bool { return first.store.Config().Index > 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	logs := &testutil.SyncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.Backends = []proxy.Backend{{ID: "a", Address: "127.0.0.1:2", Weight: 1}, {ID: "b", Address: "127.0.0.1:3", Weight: 1}}
	n, _ := startNode(t, cfg)
	testutil.Eventually(t, 10*time.Second, "the warning about the ignored flags", func() error {
		if l := logs.String(); !strings.Contains(l, "flags only seed an empty config") ||
			!strings.Contains(l, "a (address 127.0.0.1:1 in the config)") || !strings.Contains(l, "b (not in the config)") {
			return fmt.Errorf("logs so far:\n%s", l)
		}
		return nil
	})
	if got := n.store.Config().Backends; len(got) != 1 || got[0].Address != "127.0.0.1:1" {
		t.Errorf("config after the restart: %+v, want the replicated one", got)
	}
}
