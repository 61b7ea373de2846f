package admin

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Long polls need no token and each may hold a connection for minutes:
// past maxLongPolls a node answers 429 at once instead of letting them take
// every admin connection.
func TestLongPollsAreBounded(t *testing.T) {
	f := newFakeWriter(3)
	f.waiting = make(chan struct{}, maxLongPolls) // one signal per poll, none lost
	srv := startServer(t, "n1", f, "")
	done := make(chan answer, maxLongPolls)
	for range maxLongPolls {
		go func() { done <- callNoFatal(srv.URL + "/v1/config?index=3&wait=30s") }()
	}
	for i := range maxLongPolls {
		waitFor(t, f.waiting, 10*time.Second, fmt.Sprintf("poll %d to wait", i+1))
	}
	a := call(t, srv.URL, "GET", "/v1/config?index=3&wait=30s", "", nil)
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" || !strings.Contains(string(a.body), "long polls") {
		t.Fatalf("poll %d: %d %v %s, want 429 with Retry-After", maxLongPolls+1, a.status, a.header, a.body)
	}
	// A plain read still answers, and the held polls end as usual.
	if a := call(t, srv.URL, "GET", "/v1/config", "", nil); a.status != 200 {
		t.Fatalf("a plain read during the polls: %d %s", a.status, a.body)
	}
	f.setIndex(4)
	for range maxLongPolls {
		if a := waitFor(t, done, 10*time.Second, "a held poll to answer"); a.status != 200 {
			t.Fatalf("a held poll answered %d %s", a.status, a.body)
		}
	}
	if a := call(t, srv.URL, "GET", "/v1/config?index=4&wait=10ms", "", nil); a.status != 200 {
		t.Fatalf("a poll after the others ended: %d %s", a.status, a.body)
	}
}
