package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/proxy/pick"
)

// buildBalancer builds cmd/balancer into a temporary directory.
func buildBalancer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "balancer")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/balancer").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestBenchShortRun runs the real `balancer bench` with 2 nodes, 2 backends
// and every algorithm for about a second each, and checks the outputs.
func TestBenchShortRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real agent processes: skipped with -short")
	}
	bin := buildBalancer(t)
	out := filepath.Join(t.TempDir(), "results")
	args := []string{"bench", "-nodes", "2", "-backends", "2", "-duration", "1s", "-warmup", "300ms", "-out", out}
	haproxy := false
	if _, err := exec.LookPath("haproxy"); err == nil {
		args = append(args, "-compare", "haproxy")
		haproxy = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("balancer bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("table:\n%s", stdout.String())

	// The table names every run.
	for _, name := range append(pick.Names(), "direct") {
		if !regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(name) + `\s+\d+`).MatchString(stdout.String()) {
			t.Errorf("table has no row for %s", name)
		}
	}

	raw, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Runs     []map[string]any `json:"runs"`
		Backends []map[string]any `json:"backends"`
		Overhead map[string]any   `json:"overhead"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if len(doc.Backends) != 2 {
		t.Errorf("results.json has %d backends, want 2", len(doc.Backends))
	}
	if doc.Overhead == nil || num(doc.Overhead["rps_ratio"]) <= 0 || num(doc.Overhead["p50_ratio"]) <= 0 {
		t.Errorf("overhead missing or zero: %v", doc.Overhead)
	}
	runs := map[string]map[string]any{}
	for _, r := range doc.Runs {
		runs[r["name"].(string)] = r
	}
	want := append([]string{"direct"}, pick.Names()...)
	if haproxy {
		want = append(want, "haproxy", "haproxy x2")
	}
	for _, name := range want {
		r, ok := runs[name]
		if !ok {
			t.Errorf("results.json has no run %s", name)
			continue
		}
		if e, _ := r["error"].(string); e != "" {
			t.Errorf("%s: run failed: %s", name, e)
			continue
		}
		checkRun(t, name, r)
	}

	page, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	html := strings.ToLower(string(page))
	for _, bad := range []string{"http://", "https://", "<script", "<link", "src="} {
		if strings.Contains(html, bad) {
			t.Errorf("report.html contains %q: it must be self-contained", bad)
		}
	}
	// CDF, tail, and one in-flight chart per run with backend samples.
	if n, min := strings.Count(html, "<svg"), 2+len(want); n < min {
		t.Errorf("report.html has %d charts, want at least %d", n, min)
	}
	for _, name := range want {
		if !strings.Contains(html, ">"+name+"<") {
			t.Errorf("report.html does not name %s", name)
		}
	}
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

// checkRun checks that one run of results.json holds every figure.
func checkRun(t *testing.T, name string, r map[string]any) {
	t.Helper()
	if num(r["requests"]) <= 0 || num(r["rps"]) <= 0 {
		t.Errorf("%s: requests %v, rps %v", name, r["requests"], r["rps"])
	}
	if _, ok := r["errors"].(float64); !ok {
		t.Errorf("%s: no errors count", name)
	}
	lat, _ := r["latency"].(map[string]any)
	for _, k := range []string{"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"} {
		if num(lat[k]) <= 0 {
			t.Errorf("%s: latency %s = %v", name, k, lat[k])
		}
	}
	if num(lat["p50_ms"]) > num(lat["p99_ms"]) || num(lat["p99_ms"]) > num(lat["max_ms"]) {
		t.Errorf("%s: percentiles out of order: %v", name, lat)
	}
	share, _ := r["share"].(map[string]any)
	var total float64
	for _, id := range []string{"b1", "b2"} {
		if _, ok := share[id]; !ok {
			t.Errorf("%s: no share for backend %s: %v", name, id, share)
		}
		total += num(share[id])
	}
	if total < 0.99 || total > 1.01 {
		t.Errorf("%s: shares sum to %v", name, total)
	}
	// A starved machine may leave every sample idle, so only presence and
	// consistency are checked here; stats_test checks the math.
	bal, _ := r["balance"].(map[string]any)
	for _, k := range []string{"samples", "max_over_mean", "max_over_mean_p99", "avg_in_flight"} {
		if _, ok := bal[k]; !ok {
			t.Errorf("%s: balance lacks %s: %v", name, k, r["balance"])
		}
	}
	if num(bal["samples"]) > 0 && num(bal["max_over_mean"]) < 1 {
		t.Errorf("%s: balance max/mean %v < 1", name, bal["max_over_mean"])
	}
	inf, _ := r["in_flight"].(map[string]any)
	if vals, _ := inf["values"].([]any); len(vals) < 5 {
		t.Errorf("%s: in_flight has %d samples", name, len(vals))
	}
	if cdf, _ := r["cdf"].([]any); len(cdf) < 10 {
		t.Errorf("%s: cdf has %d points", name, len(cdf))
	}
	if name == "direct" {
		return
	}
	if num(r["rps_vs_direct"]) <= 0 || num(r["p50_vs_direct"]) <= 0 {
		t.Errorf("%s: ratios to direct %v %v", name, r["rps_vs_direct"], r["p50_vs_direct"])
	}
	if r["kind"] == "balancer" {
		st, _ := r["staleness"].(map[string]any)
		if num(st["samples"]) <= 0 {
			t.Errorf("%s: no gossip staleness samples: %v", name, r["staleness"])
		}
		for _, k := range []string{"mean_ms", "p99_ms", "max_ms"} {
			if _, ok := st[k]; !ok {
				t.Errorf("%s: staleness lacks %s", name, k)
			}
		}
	}
}
