package gossip

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchConfig is the production default (LAN profile, 50ms SendInterval,
// 3s ReportTTL) on loopback, with logs discarded.
func benchConfig(name string) Config {
	c := DefaultConfig()
	c.Name = name
	c.Bind = "127.0.0.1:0"
	c.Logger = slog.New(slog.DiscardHandler)
	return c
}

// benchCluster starts n nodes with benchConfig.
func benchCluster(b *testing.B, n int) []*node {
	b.Helper()
	return startCluster(b, n, func(c *Config) {
		join := c.Join
		*c = benchConfig(c.Name)
		c.Join = join
	})
}

// BenchmarkPropagation measures how long a count change published on one
// node takes to be visible in Peers() on every other node.
//
//   - idle: the change comes after a quiet period (longer than
//     SendInterval), so it is sent at once: the delay is the packet flight
//     plus decode and apply on every peer.
//   - continuous: another backend's count also changes every millisecond,
//     so the sender is always inside its coalescing window and the change
//     waits for the next round: up to SendInterval (50ms) more, about half
//     of it on average.
//
// ns/op is the loop's pace, not the delay. Run with enough samples for a
// p99, e.g. -benchtime 300x.
func BenchmarkPropagation(b *testing.B) {
	for _, n := range []int{3, 10} {
		for _, mode := range []string{"idle", "continuous"} {
			b.Run(fmt.Sprintf("nodes=%d/%s", n, mode), func(b *testing.B) {
				nodes := benchCluster(b, n)
				src, peers := nodes[0], nodes[1:]
				var want atomic.Int64
				// One watcher per peer: woken by Subscribe, it records when
				// the peer first sees the wanted value.
				seen := make(chan time.Time, len(peers))
				stop := make(chan struct{})
				var wg sync.WaitGroup
				for _, p := range peers {
					sub := p.Subscribe()
					wg.Go(func() {
						last := int64(-1)
						for {
							select {
							case <-stop:
								return
							case <-sub:
							}
							w := want.Load()
							if w == last {
								continue
							}
							if r, ok := report(p, src.name); ok && len(r.Backends) > 0 && r.Backends[0].InFlight == w {
								last = w
								seen <- time.Now()
							}
						}
					})
				}
				var noise atomic.Int64
				publish := func() {
					src.Publish([]BackendState{{ID: "b1", InFlight: want.Load()}, {ID: "noise", InFlight: noise.Load()}})
				}
				if mode == "continuous" {
					wg.Go(func() {
						t := time.NewTicker(time.Millisecond)
						defer t.Stop()
						for {
							select {
							case <-stop:
								return
							case <-t.C:
								noise.Add(1)
								publish()
							}
						}
					})
				}
				defer func() { close(stop); wg.Wait() }()

				var delays []time.Duration
				v := int64(0)
				for b.Loop() {
					// Idle: a quiet period is the point of the mode. Continuous:
					// a random phase, or every change would land just after
					// the round that carried the previous one.
					pause := src.cfg.SendInterval + 5*time.Millisecond
					if mode == "continuous" {
						pause = rand.N(src.cfg.SendInterval)
					}
					b.StopTimer()
					time.Sleep(pause)
					b.StartTimer()
					v++
					want.Store(v)
					began := time.Now()
					publish()
					var worst time.Duration
					timeout := time.After(10 * time.Second)
					for range peers {
						select {
						case at := <-seen:
							worst = max(worst, at.Sub(began))
						case <-timeout:
							b.Fatalf("change %d not visible on every peer within 10s", v)
						}
					}
					delays = append(delays, worst)
				}
				slices.Sort(delays)
				b.ReportMetric(ms(pct(delays, 50)), "p50-ms")
				b.ReportMetric(ms(pct(delays, 99)), "p99-ms")
				b.ReportMetric(ms(delays[len(delays)-1]), "max-ms")
			})
		}
	}
}

func pct(d []time.Duration, p int) time.Duration {
	i := (len(d)*p + 99) / 100
	return d[min(max(i-1, 0), len(d)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkGossipBytes measures the report traffic each node sends while
// every node's counts change continuously (a publish every millisecond),
// with the default 50ms SendInterval. Bytes are payload (memberlist adds
// 1-6 bytes, UDP/IP 28, AES-GCM 29 when encrypted, per message; it also
// compresses when that helps). memberlist's own probes and gossip are not
// included.
func BenchmarkGossipBytes(b *testing.B) {
	for _, n := range []int{3, 10} {
		for _, nb := range []int{10, 200} {
			b.Run(fmt.Sprintf("nodes=%d/backends=%d", n, nb), func(b *testing.B) {
				nodes := benchCluster(b, n)
				stop := make(chan struct{})
				var wg sync.WaitGroup
				for i, nd := range nodes {
					states := backends(nb, "backend-%03d")
					wg.Go(func() {
						t := time.NewTicker(time.Millisecond)
						defer t.Stop()
						for k := 0; ; k++ {
							select {
							case <-stop:
								return
							case <-t.C:
							}
							j := (k + i) % nb
							states[j].InFlight = (states[j].InFlight + 1) % 50
							nd.Publish(states)
						}
					})
				}
				defer func() { close(stop); wg.Wait() }()
				before := make([]Stats, n)
				for i, nd := range nodes {
					before[i] = nd.Stats()
				}
				began := time.Now()
				for b.Loop() {
					time.Sleep(10 * time.Millisecond) // the measurement is wall-clock traffic
				}
				secs := time.Since(began).Seconds()
				var bytes, msgs, rounds uint64
				for i, nd := range nodes {
					st := nd.Stats()
					bytes += st.BytesSent - before[i].BytesSent
					msgs += st.MessagesSent - before[i].MessagesSent
					rounds += st.Rounds - before[i].Rounds
				}
				perNode := float64(bytes) / float64(n) / secs
				b.ReportMetric(perNode, "B/s/node")
				b.ReportMetric(perNode/float64(n-1), "B/s/link")
				b.ReportMetric(float64(msgs)/float64(n)/secs, "msgs/s/node")
				b.ReportMetric(float64(rounds)/float64(n)/secs, "rounds/s/node")
			})
		}
	}
}

// BenchmarkDecodeChunk decodes one full chunk (about 80 entries).
func BenchmarkDecodeChunk(b *testing.B) {
	chunks, _ := encodeReport("node-1", 1, backends(200, "backend-%03d"), MaxMessageSize)
	c := chunks[0]
	b.SetBytes(int64(len(c)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeMessage(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReceiveReport200 is the receive path of a 200-backend report:
// NotifyMsg (decode, assemble, apply) for each of its chunks.
func BenchmarkReceiveReport200(b *testing.B) {
	g, d := bare("me")
	d.NotifyJoin(mlNode("p", 1))
	chunks, _ := encodeReport("p", 1, backends(200, "backend-%03d"), MaxMessageSize)
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range chunks {
			d.NotifyMsg(c)
		}
		g.mu.Lock()
		g.nodes["p"].seq = 0 // so the same chunks count as new next time
		g.mu.Unlock()
	}
	if st := g.Stats(); st.DecodeErrors != 0 || st.StaleIgnored != 0 || st.Duplicates != 0 {
		b.Fatalf("stats %+v", st)
	}
}

// BenchmarkEncodeReport200 is the sender's encode of 200 backends.
func BenchmarkEncodeReport200(b *testing.B) {
	states := backends(200, "backend-%03d")
	b.ReportAllocs()
	for b.Loop() {
		encodeReport("node-1", 1, states, MaxMessageSize)
	}
}

// BenchmarkPublish200 is the node-side cost of Publish with 200 backends:
// unchanged (compare only) and changed (copy and wake).
func BenchmarkPublish200(b *testing.B) {
	g, _ := bare("me")
	states := backends(200, "backend-%03d")
	b.Run("unchanged", func(b *testing.B) {
		g.Publish(states)
		b.ReportAllocs()
		for b.Loop() {
			g.Publish(states)
		}
	})
	b.Run("changed", func(b *testing.B) {
		b.ReportAllocs()
		i := int64(0)
		for b.Loop() {
			i++
			states[0].InFlight = i
			g.Publish(states)
		}
	})
}
