package consensus

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// raft logs its configuration through hclog.Fmt; the operator must see the
// formatted servers, not Go's rendering of the argument slice.
func TestHCLogFormatArgumentsAreRendered(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLogger(slog.New(slog.NewTextHandler(&buf, nil)), "raft", hclog.Info)
	l.Info("initial configuration", "index", 1, "servers", hclog.Fmt("%+v", []string{"n1", "n2"}))
	out := buf.String()
	if !strings.Contains(out, `servers="[n1 n2]"`) || !strings.Contains(out, "index=1") {
		t.Errorf("log line %q: want servers=\"[n1 n2]\" and index=1", out)
	}
}
