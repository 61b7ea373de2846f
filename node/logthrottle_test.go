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
	h := newThrottle(slog.NewTextHandler(buf, nil), time.Minute, 5, 100)
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
	if !strings.Contains(out, `msg="similar log lines were held back" part=gossip like="msg type (#) not" count=95`) ||
		!strings.Contains(out, "from=10.0.0.1:7946") {
		t.Errorf("after the window: want a count of the 95 held back and the new line:\n%s", out)
	}
}

// What memberlist prints after its fixed words can be anything a sender
// chose: hex checksums, node names, IPv6 addresses. None of it may open a
// new shape, and a flood of distinct shapes is bounded by the total.
func TestThrottleHoldsBackSenderChosenText(t *testing.T) {
	buf := &testutil.SyncBuffer{}
	h := newThrottle(slog.NewTextHandler(buf, nil), time.Minute, 5, 100)
	log := slog.New(h)
	for i := range 2000 {
		log.Error(fmt.Sprintf("Got invalid checksum for UDP packet: %x, %x", i*7919, i))
		log.Error(fmt.Sprintf("Got ping for unexpected node '%x' from=[2001:db8::%x]:7946", i, i))
	}
	if n := strings.Count(buf.String(), "level=ERROR"); n != 10 {
		t.Errorf("%d ERROR lines from 4000 garbage packets of two kinds, want 5 each:\n%s", n, buf.String())
	}
	buf2 := &testutil.SyncBuffer{}
	log = slog.New(newThrottle(slog.NewTextHandler(buf2, nil), time.Minute, 5, 100))
	for i := range 5000 {
		log.Error(fmt.Sprintf("w%c%c%c x y z", 'a'+i%26, 'a'+i/26%26, 'a'+i/676%26))
	}
	if n := strings.Count(buf2.String(), "level=ERROR"); n > 100 {
		t.Errorf("%d ERROR lines from 5000 distinct shapes; the total allows 100", n)
	}
}
