package proxy

import "testing"

// The node rebuilds the table every few milliseconds and offers a probe in
// one of them per sleep window. With sparse traffic no request may arrive
// while that table is current, so the offer must outlive it: otherwise a
// recovered backend waits for a request to land in a 20 ms slot.
func TestProbeOfferOutlivesItsTable(t *testing.T) {
	down, up := namedBackend(t, "down"), namedBackend(t, "up")
	p, url := startHTTP(t, DefaultConfig(), nil, nil)
	downRoute := func(probe bool) []Route {
		return []Route{
			{Backend: Backend{ID: "down", Address: hostPort(down.URL), Weight: 1}, Down: true, Probe: probe},
			route("up", hostPort(up.URL)),
		}
	}
	count := func(n int) map[string]int {
		seen := map[string]int{}
		for range n {
			_, body, _ := get(t, url)
			seen[body]++
		}
		return seen
	}

	p.SetRoutes(downRoute(true))
	for range 5 { // tables go by with no request
		p.SetRoutes(downRoute(false))
	}
	if seen := count(10); seen["down"] != 1 || seen["up"] != 9 {
		t.Fatalf("the offer made five tables ago: %v, want one probe then normal traffic", seen)
	}

	// Offering again while one stands does not add a second.
	p.SetRoutes(downRoute(true))
	p.SetRoutes(downRoute(true))
	if seen := count(10); seen["down"] != 1 {
		t.Fatalf("two offers while one stood: %v, want one probe", seen)
	}

	// A backend that is no longer down withdraws the offer: a later Down
	// (a new open) starts without one.
	p.SetRoutes(downRoute(true))
	p.SetRoutes([]Route{route("down", hostPort(down.URL)), route("up", hostPort(up.URL))})
	p.SetRoutes(downRoute(false))
	if seen := count(10); seen["down"] != 0 {
		t.Fatalf("an offer survived the backend coming back: %v", seen)
	}
}
