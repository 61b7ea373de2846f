package bench

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sampleInterval is how often backends' outstanding requests are sampled.
const sampleInterval = 50 * time.Millisecond

// stalenessInterval is how often each node's /metrics is read.
const stalenessInterval = 250 * time.Millisecond

// sampleBackends records each backend's in-flight plus queued requests (the
// backends' own counters: ground truth) every sampleInterval until ctx ends.
func sampleBackends(ctx context.Context, bs []*backendProc) [][]int64 {
	var out [][]int64
	tick := time.NewTicker(sampleInterval)
	defer tick.Stop()
	for {
		row := make([]int64, len(bs))
		for i, b := range bs {
			st := b.stats()
			row[i] = st.InFlight + st.Queued
		}
		out = append(out, row)
		select {
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
	}
}

// Staleness summarizes the age of the oldest live peer report in the
// nodes' gossip views, in milliseconds, sampled from their /metrics.
type Staleness struct {
	Samples int     `json:"samples"`
	Mean    float64 `json:"mean_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
}

const peerAgeMetric = `balancer_gossip_peer_report_age_seconds{which="oldest"}`

// parsePeerAge finds the oldest-peer-report age in a Prometheus text answer.
func parsePeerAge(text string) (time.Duration, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, peerAgeMetric)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return 0, false
		}
		return time.Duration(f * float64(time.Second)), true
	}
	return 0, false
}

// sampleStaleness reads every admin's /metrics each stalenessInterval
// until ctx ends and summarizes the oldest peer report ages seen.
func sampleStaleness(ctx context.Context, admins []string) *Staleness {
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	var mu sync.Mutex
	var ages []time.Duration // guarded by mu
	tick := time.NewTicker(stalenessInterval)
	defer tick.Stop()
	for {
		var wg sync.WaitGroup
		for _, a := range admins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a+"/metrics", nil)
				if err != nil {
					return
				}
				resp, err := hc.Do(req)
				if err != nil {
					return
				}
				defer resp.Body.Close()
				var b strings.Builder
				if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
					return
				}
				if d, ok := parsePeerAge(b.String()); ok {
					mu.Lock()
					ages = append(ages, d)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			if len(ages) == 0 {
				return nil
			}
			l := Summarize(ages)
			return &Staleness{Samples: l.Count, Mean: l.Mean, P99: l.P99, Max: l.Max}
		case <-tick.C:
		}
	}
}
