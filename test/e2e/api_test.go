package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
)

// httpc serves the admin calls; the load generator has clients of its own.
var httpc = &http.Client{Timeout: 5 * time.Second}

// get decodes a GET answer from a node's admin API into v and returns the
// status, or an error when the node does not answer.
func (c *cluster) get(n, path string, v any) (int, error) {
	resp, err := httpc.Get(c.admin(n) + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			return resp.StatusCode, fmt.Errorf("GET %s on %s: %w: %s", path, n, err, body)
		}
	}
	return resp.StatusCode, nil
}

func (c *cluster) config(n string) (admin.Config, error) {
	var cfg admin.Config
	code, err := c.get(n, "/v1/config", &cfg)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET /v1/config on %s: %d", n, code)
	}
	return cfg, err
}

func (c *cluster) members(n string) ([]admin.Member, error) {
	var ms admin.Members
	code, err := c.get(n, "/v1/members", &ms)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET /v1/members on %s: %d", n, code)
	}
	return ms.Members, err
}

func (c *cluster) load(n string) (admin.Load, error) {
	var l admin.Load
	code, err := c.get(n, "/v1/load", &l)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET /v1/load on %s: %d", n, code)
	}
	return l, err
}

// leader is the raft leader as n sees it, or "".
func (c *cluster) leader(n string) string {
	ms, err := c.members(n)
	if err != nil {
		return ""
	}
	for _, m := range ms {
		if m.Leader {
			return m.Name
		}
	}
	return ""
}

// writeOutcome classifies an admin write the way a client must: acked
// writes happened, failed ones did not, indeterminate ones may have.
type writeOutcome int

const (
	acked writeOutcome = iota
	failed
	indeterminate
)

func (o writeOutcome) String() string {
	return [...]string{"acked", "failed", "indeterminate"}[o]
}

// setWeight sends PUT /v1/backends/{id}/weight to node n. 2xx is acked;
// 4xx, a 5xx whose answer says "outcome": "not-applied", and a connection
// refused before anything was sent are definite failures; any other 5xx, a
// timeout or a reset may or may not have been applied. The final check
// holds the API to its word: a write it called not applied must not be in
// the final config.
func (c *cluster) setWeight(ctx context.Context, n, id string, weight int32, timeout time.Duration) (writeOutcome, int, string) {
	return c.setWeightAt(ctx, c.admin(n), id, weight, timeout)
}

// setWeightAt is setWeight to an admin base URL, for goroutines other than
// the test's (c.admin may fail the test).
func (c *cluster) setWeightAt(ctx context.Context, base, id string, weight int32, timeout time.Duration) (writeOutcome, int, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body := fmt.Sprintf(`{"weight": %d}`, weight)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v1/backends/"+id+"/weight", strings.NewReader(body))
	if err != nil {
		return failed, 0, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := writeClient.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return failed, 0, "connection refused"
		}
		return indeterminate, 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	msg := fmt.Sprintf("%d %s", resp.StatusCode, strings.Join(strings.Fields(string(b)), " "))
	switch resp.StatusCode / 100 {
	case 2:
		return acked, resp.StatusCode, ""
	case 4:
		return failed, resp.StatusCode, msg
	}
	var eb struct {
		Outcome string `json:"outcome"`
	}
	if json.Unmarshal(b, &eb) == nil && eb.Outcome == "not-applied" {
		return failed, resp.StatusCode, msg
	}
	return indeterminate, resp.StatusCode, msg
}

// writeClient opens a connection per write, so that "refused" is always
// about this write and never a stale keep-alive connection.
var writeClient = &http.Client{Transport: &http.Transport{
	DisableKeepAlives: true,
	DialContext:       (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
}}

// eventually is testutil.Eventually at this suite's pace, every 100 ms:
// its conds make requests to a cluster in Docker, and some of them write.
func eventually(t testing.TB, d time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	return testutil.EventuallyEvery(t, d, 100*time.Millisecond, what, cond)
}

// waitHealthy waits until every node is ready, sees all three members
// alive and the same leader, and has applied the leader's config index.
func (c *cluster) waitHealthy(d time.Duration) {
	c.t.Helper()
	eventually(c.t, d, "cluster healthy (3 ready nodes, 3 alive members, one leader, same config)", func() error {
		var leader string
		var index uint64
		for i, n := range nodes {
			if code, err := c.get(n, "/readyz", nil); err != nil || code != http.StatusOK {
				return fmt.Errorf("%s not ready (%d, %v)", n, code, err)
			}
			ms, err := c.members(n)
			if err != nil {
				return err
			}
			alive, l := 0, ""
			for _, m := range ms {
				if m.Status == "alive" && m.RaftRole == "voter" {
					alive++
				}
				if m.Leader {
					l = m.Name
				}
			}
			if alive != len(nodes) || l == "" {
				return fmt.Errorf("%s sees %d alive voters, leader %q", n, alive, l)
			}
			cfg, err := c.config(n)
			if err != nil {
				return err
			}
			if i == 0 {
				leader, index = l, cfg.Index
			} else if l != leader || cfg.Index != index {
				return fmt.Errorf("%s sees leader %s at index %d, %s sees %s at %d", nodes[0], leader, index, n, l, cfg.Index)
			}
		}
		return nil
	})
}

// weights is a config's backend weights by ID.
func weights(cfg admin.Config) map[string]int32 {
	w := make(map[string]int32, len(cfg.Backends))
	for _, b := range cfg.Backends {
		w[b.ID] = b.Weight
	}
	return w
}
