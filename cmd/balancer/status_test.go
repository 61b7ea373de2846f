package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
	"github.com/thebalancer/balancer/node/admin"
)

// artifactsDir is where tests leave files for a human to look at
// (git-ignored): the repository's test-artifacts/.
func artifactsDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "..", "test-artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sendTraffic sends n requests through an agent and checks they succeed.
func sendTraffic(t testing.TB, a *agent, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if code, body := a.getBody(t, "/"); code != 200 {
			t.Fatalf("request %d through %s: %d %s", i, a.name, code, body)
		}
	}
}

func TestProcStatusCommand(t *testing.T) {
	backends := startDemoBackends(t, "a", "b")
	backends["a"] += "@3"
	agents := startRaftCluster(t, 3, backends)
	leader := agents[0].leaderName(t)
	sendTraffic(t, agents[1], 30)

	var out, errb bytes.Buffer
	// Rates need two samples of the node's counters half a second apart.
	testutil.Eventually(t, 10*time.Second, "status to show traffic through "+agents[1].name, func() bool {
		out.Reset()
		if err := run(context.Background(), []string{"status", "-admin", agents[0].Admin}, &out, &errb); err != nil {
			t.Fatalf("status: %v %s", err, errb.String())
		}
		// Which backend the requests went to is the algorithm's business:
		// some row must show a rate and a p99, and none an error rate.
		for _, line := range strings.Split(out.String(), "\n") {
			f := strings.Fields(line)
			if len(f) < 9 || (f[0] != "a" && f[0] != "b") {
				continue
			}
			rate, p99, errs := f[len(f)-3], f[len(f)-1], f[len(f)-2]
			if rate != "0.0" && p99 != "-" && errs == "0.0" {
				return true
			}
		}
		return false
	})
	text := out.String()
	t.Logf("balancer status:\n%s", text)
	for _, want := range []string{
		"leader " + leader,
		"config index ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	for _, a := range agents {
		row := regexp.MustCompile(`(?m)^` + a.name + `\s+alive\s+(leader|follower)`)
		if !row.MatchString(text) {
			t.Errorf("no member row for %s (alive, with its raft role)", a.name)
		}
	}
	if !regexp.MustCompile(`(?m)^` + leader + `\s+alive\s+leader \*`).MatchString(text) {
		t.Errorf("the leader %s is not marked", leader)
	}
	for id, w := range map[string]string{"a": "3", "b": "1"} {
		if !regexp.MustCompile(`(?m)^` + id + `\s+127\.0\.0\.1:\d+\s+` + w + `\s+no\s+closed\s+\d+ \(`).MatchString(text) {
			t.Errorf("backend %s: want weight %s, not drained, closed everywhere, an in-flight total", id, w)
		}
	}

	// The cluster as Prometheus sees it: one leader, one term, everyone
	// alive, gossip flowing.
	leaders := 0.0
	terms := map[float64]bool{}
	for _, a := range agents {
		m := testutil.Scrape(t, "http://"+a.Admin+"/metrics")
		leader, _ := testutil.Sample(m, "balancer_raft_state", "state", "leader")
		leaders += leader
		term, _ := testutil.Sample(m, "balancer_raft_term")
		terms[term] = true
		if v, _ := testutil.Sample(m, "balancer_members", "state", "alive"); v != 3 {
			t.Errorf("%s: balancer_members{state=alive} = %v, want 3", a.name, v)
		}
		if v, _ := testutil.Sample(m, "balancer_gossip_bytes_total", "direction", "received"); v <= 0 {
			t.Errorf("%s: no gossip bytes received", a.name)
		}
		if v, _ := testutil.Sample(m, "balancer_raft_commit_index"); v < 1 {
			t.Errorf("%s: raft commit index %v", a.name, v)
		}
	}
	if leaders != 1 || len(terms) != 1 {
		t.Errorf("%v nodes report being leader, terms %v; want one leader and one term", leaders, terms)
	}

	// A drained backend shows as such, on any node.
	if _, err := agents[2].client().SetDrain(context.Background(), "b", true, admin.WaitApplied()); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"status", "-admin", agents[2].Admin}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^b\s+\S+\s+1\s+DRAINING`).MatchString(out.String()) {
		t.Errorf("drained b not shown:\n%s", out.String())
	}

	// An admin address nobody answers on is a clear error, not a hang.
	dead := testutil.FreeAddr(t)
	err := run(context.Background(), []string{"status", "-admin", dead}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), dead) {
		t.Errorf("status against %s: %v", dead, err)
	}
}

// TestProcStatusPageInBrowser loads the status page of a real 3-node
// cluster in headless Chromium and checks what an operator sees: the three
// members and the leader, the backends with their weights, a weight changed
// through the API appearing without a reload, and changes made from the
// page itself (refused without the token, applied with it).
func TestProcStatusPageInBrowser(t *testing.T) {
	bin := findChromium()
	if bin == "" {
		t.Skip("chromium is not installed (apt-get install chromium): skipping the status page browser test")
	}
	const token = "ops-token"
	backends := startDemoBackends(t, "a", "b")
	backends["a"] += "@3"
	agents := startRaftCluster(t, 3, backends, "-admin-token", token)
	leader := agents[0].leaderName(t)
	_, follower := followerOf(t, agents)
	sendTraffic(t, follower, 40)

	br := startBrowser(t, bin, 1280, 1000)
	br.navigate("http://" + follower.Admin + "/")

	type screen struct {
		Members  []string          `json:"members"`
		Leader   string            `json:"leader"`
		Weights  map[string]string `json:"weights"`
		Drain    map[string]string `json:"drain"`
		Rates    map[string]string `json:"rates"`
		Error    string            `json:"error"`
		Text     string            `json:"text"`
		Marker   bool              `json:"marker"`
		Updated  string            `json:"updated"`
		Breakers map[string]string `json:"breakers"`
	}
	// Everything read comes from what the page rendered (innerText), not
	// from its data.
	const read = `!document.getElementById('leader') ? JSON.stringify({text: document.body ? document.body.innerText : ''}) : JSON.stringify({
		members: [...document.querySelectorAll('#members tbody tr')].map(r => r.cells[0].innerText),
		leader: document.getElementById('leader').innerText,
		weights: Object.fromEntries([...document.querySelectorAll('#backends tbody tr')].map(r => [r.dataset.id, r.querySelector('.weight').innerText])),
		drain: Object.fromEntries([...document.querySelectorAll('#backends tbody tr')].map(r => [r.dataset.id, r.querySelector('.drain-state').innerText])),
		rates: Object.fromEntries([...document.querySelectorAll('#backends tbody tr')].map(r => [r.dataset.id, r.querySelector('.rate').innerText])),
		breakers: Object.fromEntries([...document.querySelectorAll('#backends tbody tr')].map(r => [r.dataset.id, r.cells[4].innerText])),
		error: document.getElementById('error').hidden ? '' : document.getElementById('error').innerText,
		text: document.body.innerText,
		marker: window.__notReloaded === true,
		updated: document.getElementById('updated').innerText,
	})`
	look := func() screen {
		var raw string
		if err := br.eval(read, &raw); err != nil {
			t.Fatal(err)
		}
		var s screen
		if err := json.Unmarshal([]byte(raw), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	var s screen
	waitFor := func(what string, within time.Duration, ok func(s screen) bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for s = look(); !ok(s); s = look() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for the page to show %s; it shows:\n%s\n(error box: %q)", within, what, s.Text, s.Error)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	waitFor("three members, the leader and both backends with their weights", 15*time.Second, func(s screen) bool {
		return len(s.Members) == 3 && s.Leader == leader && s.Weights["a"] == "3" && s.Weights["b"] == "1"
	})
	for _, a := range agents {
		found := false
		for _, m := range s.Members {
			found = found || strings.HasPrefix(m, a.name)
		}
		if !found {
			t.Errorf("member %s not on the page: %v", a.name, s.Members)
		}
	}
	if !strings.Contains(s.Text, leader+" ★ leader") {
		t.Errorf("the leader's row is not marked:\n%s", s.Text)
	}
	if s.Error != "" {
		t.Errorf("the page shows an error: %s", s.Error)
	}
	waitFor("a request rate, closed breakers on all three nodes", 10*time.Second, func(s screen) bool {
		return (s.Rates["a"] != "0.00" || s.Rates["b"] != "0.00") &&
			strings.Count(s.Breakers["a"], "closed") == 3 && strings.Count(s.Breakers["b"], "closed") == 3
	})
	br.screenshot(filepath.Join(artifactsDir(t), "status-page.png"))

	// A write through the API (another node, the CLI's client) shows up
	// without a reload: the marker set in this document survives.
	if err := br.eval(`window.__notReloaded = true`, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.NewClient(agents[2].Admin, token).SetWeight(context.Background(), "b", 7); err != nil {
		t.Fatal(err)
	}
	waitFor("b's new weight 7 without a reload", 10*time.Second, func(s screen) bool { return s.Weights["b"] == "7" })
	if !s.Marker {
		t.Fatal("the page was reloaded to show the change; it must update in place")
	}

	// Changes from the page: without the token the API's 401 is shown...
	const setA = `(() => { const f = document.querySelector('.weight-form[data-id="a"]');
		f.querySelector('input').value = '%s'; f.requestSubmit(); })()`
	if err := br.eval(fmt.Sprintf(setA, "5"), nil); err != nil {
		t.Fatal(err)
	}
	waitFor("the refused change's error", 10*time.Second, func(s screen) bool {
		return strings.Contains(s.Error, "401") && strings.Contains(s.Error, "token")
	})
	br.screenshot(filepath.Join(artifactsDir(t), "status-page-refused.png"))
	if w := follower.config(t).Backends; weightOf(w, "a") != 3 {
		t.Fatalf("a refused change moved a's weight to %d", weightOf(w, "a"))
	}
	// ...bad input is refused before it is sent...
	if err := br.eval(fmt.Sprintf(setA, "-2"), nil); err != nil {
		t.Fatal(err)
	}
	waitFor("the bad weight's error", 10*time.Second, func(s screen) bool { return strings.Contains(s.Error, "whole number") })
	// ...and with the token the change is made and shown.
	if err := br.eval(`document.getElementById('token').value = '`+token+`'; document.getElementById('token-form').requestSubmit()`, nil); err != nil {
		t.Fatal(err)
	}
	if err := br.eval(fmt.Sprintf(setA, "5"), nil); err != nil {
		t.Fatal(err)
	}
	waitFor("a's weight 5 set from the page", 10*time.Second, func(s screen) bool { return s.Weights["a"] == "5" && s.Error == "" })
	if !strings.Contains(s.Text, "a weight 5: committed at config index") {
		t.Errorf("no confirmation of the page's change:\n%s", s.Text)
	}
	if err := br.eval(`document.querySelector('tr[data-id="b"] .drain-toggle').click()`, nil); err != nil {
		t.Fatal(err)
	}
	waitFor("b draining after the page's Drain button", 10*time.Second, func(s screen) bool { return s.Drain["b"] == "draining" })
	for _, a := range agents {
		testutil.Eventually(t, 10*time.Second, a.name+" applying the page's changes", func() bool {
			bs := a.config(t).Backends
			return weightOf(bs, "a") == 5 && drainOf(bs, "b")
		})
	}
	if !s.Marker {
		t.Fatal("the page reloaded during the changes")
	}
	br.screenshot(filepath.Join(artifactsDir(t), "status-page-after-changes.png"))

	// A phone-sized screen: everything still there, one card per row.
	br.viewport(390, 1800, true)
	waitFor("the phone layout", 5*time.Second, func(s screen) bool { return len(s.Members) == 3 && s.Weights["a"] == "5" })
	br.screenshot(filepath.Join(artifactsDir(t), "status-page-phone.png"))
}

func weightOf(bs []admin.Backend, id string) int32 {
	for _, b := range bs {
		if b.ID == id {
			return b.Weight
		}
	}
	return -1
}

func drainOf(bs []admin.Backend, id string) bool {
	for _, b := range bs {
		if b.ID == id {
			return b.Drain
		}
	}
	return false
}
