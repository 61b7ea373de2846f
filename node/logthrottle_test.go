package node

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/thebalancer/balancer/internal/testutil"
)

// A stranger sending garbage to the gossip or raft port makes the libraries
// log one ERROR per packet; the log must not grow with the garbage.
func TestThrottleHoldsBackRepeatedErrors(t *testing.T) {
	buf := &testutil.SyncBuffer{}
	h := newThrottle(slog.NewTextHandler(buf, nil), time.Minute, 5)
	now := time.Unix(1000, 0)
	h.st.now = func() time.Time { return now }
	log := slog.New(h).With("part", "gossip")
	for i := range 100 {
		log.Error(fmt.Sprintf("msg type (%d) not supported from=127.0.0.1:%d", i%250, 40000+i))
		log.Info(fmt.Sprintf("joined %d", i)) // below WARN: never held back
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	errs, infos := 0, 0
	for _, l := range lines {
		switch {
		case strings.Contains(l, "level=ERROR"):
			errs++
		case strings.Contains(l, "level=INFO"):
			infos++
		}
	}
	if errs != 5 || infos != 100 {
		t.Fatalf("%d ERROR and %d INFO lines, want 5 and 100:\n%s", errs, infos, buf.String())
	}
	if !strings.Contains(buf.String(), "more lines like this are held back for 1m0s") {
		t.Errorf("the fifth line does not say more are held back:\n%s", buf.String())
	}
	log.Warn("a different complaint") // another shape passes
	now = now.Add(time.Minute)
	log.Error("msg type (7) not supported from=10.0.0.1:7946")
	out := buf.String()
	if !strings.Contains(out, "a different complaint") {
		t.Error("a line of another shape was held back")
	}
	if !strings.Contains(out, `msg="similar log lines were held back" part=gossip like="msg type (#) not supported from=#.#.#.#:#" count=95`) ||
		!strings.Contains(out, "from=10.0.0.1:7946") {
		t.Errorf("after the window: want a count of the 95 held back and the new line:\n%s", out)
	}
}
