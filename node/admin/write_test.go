package admin

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thebalancer/balancer/consensus"
	"github.com/thebalancer/balancer/internal/testutil"
)

// checkErrorAnswer asserts a JSON {"error": "..."} answer with status want.
func checkErrorAnswer(t *testing.T, a answer, want int) errorBody {
	t.Helper()
	if a.status != want {
		t.Fatalf("status %d, want %d; body %s", a.status, want, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var eb errorBody
	dec := json.NewDecoder(strings.NewReader(string(a.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Error == "" {
		t.Fatalf("error body %s: want {\"error\": \"...\"} (%v)", a.body, err)
	}
	return eb
}

func TestWriteBadInput(t *testing.T) {
	long := strings.Repeat("a", 65)
	big := `{"address": "h:1", "pad": "` + strings.Repeat("x", maxBodyBytes) + `"}`
	type tc struct {
		name     string
		method   string
		path     string
		body     string
		hdr      map[string]string // nil: the right token
		applyErr error             // the fake's answer, for the cases that reach Apply
		want     int
		contains string // in the error message
	}
	cases := []tc{
		// PUT /v1/backends/{id}
		{name: "upsert malformed JSON", method: "PUT", path: "/v1/backends/web1", body: `{"address":`, want: 400},
		{name: "upsert unknown field", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1","wieght":3}`, want: 400, contains: "wieght"},
		{name: "upsert two values", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"} {"address":"h:2"}`, want: 400, contains: "single"},
		{name: "upsert trailing garbage", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"} x`, want: 400},
		{name: "upsert empty body", method: "PUT", path: "/v1/backends/web1", body: ``, want: 400, contains: "empty"},
		{name: "upsert array", method: "PUT", path: "/v1/backends/web1", body: `[{"address":"h:1"}]`, want: 400},
		{name: "upsert null", method: "PUT", path: "/v1/backends/web1", body: `null`, want: 400},
		{name: "upsert weight -1", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1","weight":-1}`, want: 400, contains: "0..10000"},
		{name: "upsert weight 1e9", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1","weight":1e9}`, want: 400, contains: "0..10000"},
		{name: "upsert weight 1000000000", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1","weight":1000000000}`, want: 400},
		{name: "upsert weight 10001", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1","weight":10001}`, want: 400},
		{name: "upsert weight 1.5", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1","weight":1.5}`, want: 400},
		{name: "upsert weight abc", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1","weight":"abc"}`, want: 400},
		{name: "upsert weight string number", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1","weight":"5"}`, want: 400},
		{name: "upsert weight object", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1","weight":{}}`, want: 400},
		{name: "upsert drain string", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1","drain":"yes"}`, want: 400},
		{name: "upsert missing address", method: "PUT", path: "/v1/backends/web1", body: `{"weight":1}`, want: 400, contains: "address"},
		{name: "upsert address without port", method: "PUT", path: "/v1/backends/web1", body: `{"address":"nohost"}`, want: 400, contains: "HOST:PORT"},
		{name: "upsert address without host", method: "PUT", path: "/v1/backends/web1", body: `{"address":":80"}`, want: 400},
		{name: "upsert address port 0", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:0"}`, want: 400},
		{name: "upsert address port 99999", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:99999"}`, want: 400},
		{name: "upsert address bad host", method: "PUT", path: "/v1/backends/web1", body: `{"address":"a b:80"}`, want: 400},
		{name: "upsert bad id", method: "PUT", path: "/v1/backends/-web", body: `{"address":"h:1"}`, want: 400, contains: "id"},
		{name: "upsert bad id char", method: "PUT", path: "/v1/backends/a%20b", body: `{"address":"h:1"}`, want: 400},
		{name: "upsert id with slash", method: "PUT", path: "/v1/backends/a%2Fb", body: `{"address":"h:1"}`, want: 400},
		{name: "upsert id too long", method: "PUT", path: "/v1/backends/" + long, body: `{"address":"h:1"}`, want: 400},
		{name: "upsert body too large", method: "PUT", path: "/v1/backends/web1", body: big, want: 413},
		{name: "upsert missing token", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"}`, hdr: map[string]string{}, want: 401},
		{name: "upsert wrong token", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"}`, hdr: map[string]string{"Authorization": "Bearer nope"}, want: 401},
		{name: "upsert wrong scheme", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"}`, hdr: map[string]string{"Authorization": "Basic " + testToken}, want: 401},
		{name: "upsert token prefix", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"}`, hdr: map[string]string{"Authorization": "Bearer " + testToken[:4]}, want: 401},
		{name: "upsert If-Match garbage", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"}`, hdr: auth("If-Match", "abc"), want: 400, contains: "If-Match"},
		{name: "upsert If-Match weak etag", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"}`, hdr: auth("If-Match", `W/"3"`), want: 400},
		{name: "upsert If-Match star", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"}`, hdr: auth("If-Match", `*`), want: 400},
		{name: "upsert If-Match negative", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"}`, hdr: auth("If-Match", `-3`), want: 400},
		{name: "upsert If-Match zero", method: "PUT", path: "/v1/backends/web1", body: `{"address":"h:1"}`, hdr: auth("If-Match", `0`), want: 400},
		{name: "upsert wait bogus", method: "PUT", path: "/v1/backends/web1?wait=10s", body: `{"address":"h:1"}`, want: 400, contains: "wait"},
		{name: "upsert timeout without wait", method: "PUT", path: "/v1/backends/web1?timeout=1s", body: `{"address":"h:1"}`, want: 400},
		{name: "upsert negative timeout", method: "PUT", path: "/v1/backends/web1?wait=applied&timeout=-1s", body: `{"address":"h:1"}`, want: 400},

		// PUT /v1/backends/{id}/weight
		{name: "weight malformed JSON", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":}`, want: 400},
		{name: "weight unknown field", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":3,"x":1}`, want: 400},
		{name: "weight two values", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":3}{"weight":4}`, want: 400},
		{name: "weight -1", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":-1}`, want: 400},
		{name: "weight 1e9", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":1e9}`, want: 400},
		{name: "weight 1.5", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":1.5}`, want: 400},
		{name: "weight abc", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":"abc"}`, want: 400},
		{name: "weight overflow int32", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":4294967297}`, want: 400},
		{name: "weight missing", method: "PUT", path: "/v1/backends/web1/weight", body: `{}`, want: 400, contains: "missing"},
		{name: "weight null", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":null}`, want: 400},
		{name: "weight empty body", method: "PUT", path: "/v1/backends/web1/weight", body: ``, want: 400},
		{name: "weight bad id", method: "PUT", path: "/v1/backends/_x/weight", body: `{"weight":3}`, want: 400},
		{name: "weight unknown id", method: "PUT", path: "/v1/backends/ghost/weight", body: `{"weight":3}`, applyErr: fmt.Errorf("%w: %q", consensus.ErrUnknownBackend, "ghost"), want: 404, contains: "ghost"},
		{name: "weight missing token", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":3}`, hdr: map[string]string{}, want: 401},
		{name: "weight wrong token", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":3}`, hdr: map[string]string{"Authorization": "Bearer " + testToken + "x"}, want: 401},
		{name: "weight If-Match garbage", method: "PUT", path: "/v1/backends/web1/weight", body: `{"weight":3}`, hdr: auth("If-Match", `"12`), want: 400},

		// DELETE /v1/backends/{id}/weight
		{name: "clear pin body", method: "DELETE", path: "/v1/backends/web1/weight", body: `{"weight":3}`, want: 400},
		{name: "clear pin garbage body", method: "DELETE", path: "/v1/backends/web1/weight", body: `x`, want: 400},
		{name: "clear pin bad id", method: "DELETE", path: "/v1/backends/a$b/weight", want: 400},
		{name: "clear pin unknown id", method: "DELETE", path: "/v1/backends/ghost/weight", applyErr: consensus.ErrUnknownBackend, want: 404},
		{name: "clear pin missing token", method: "DELETE", path: "/v1/backends/web1/weight", hdr: map[string]string{}, want: 401},
		{name: "clear pin If-Match garbage", method: "DELETE", path: "/v1/backends/web1/weight", hdr: auth("If-Match", "1.5"), want: 400},

		// PUT /v1/backends/{id}/drain
		{name: "drain malformed JSON", method: "PUT", path: "/v1/backends/web1/drain", body: `{drain: true}`, want: 400},
		{name: "drain unknown field", method: "PUT", path: "/v1/backends/web1/drain", body: `{"drain":true,"weight":1}`, want: 400},
		{name: "drain two values", method: "PUT", path: "/v1/backends/web1/drain", body: `{"drain":true}{"drain":false}`, want: 400},
		{name: "drain missing", method: "PUT", path: "/v1/backends/web1/drain", body: `{}`, want: 400, contains: "drain"},
		{name: "drain string", method: "PUT", path: "/v1/backends/web1/drain", body: `{"drain":"true"}`, want: 400},
		{name: "drain number", method: "PUT", path: "/v1/backends/web1/drain", body: `{"drain":1}`, want: 400},
		{name: "drain bad id", method: "PUT", path: "/v1/backends/.x/drain", body: `{"drain":true}`, want: 400},
		{name: "drain unknown id", method: "PUT", path: "/v1/backends/ghost/drain", body: `{"drain":true}`, applyErr: consensus.ErrUnknownBackend, want: 404},
		{name: "drain missing token", method: "PUT", path: "/v1/backends/web1/drain", body: `{"drain":true}`, hdr: map[string]string{}, want: 401},
		{name: "drain If-Match garbage", method: "PUT", path: "/v1/backends/web1/drain", body: `{"drain":true}`, hdr: auth("If-Match", "0x10"), want: 400},

		// DELETE /v1/backends/{id}
		{name: "delete body", method: "DELETE", path: "/v1/backends/web1", body: `{"id":"web1"}`, want: 400},
		{name: "delete bad id", method: "DELETE", path: "/v1/backends/" + long, want: 400},
		{name: "delete unknown id", method: "DELETE", path: "/v1/backends/ghost", applyErr: consensus.ErrUnknownBackend, want: 404},
		{name: "delete missing token", method: "DELETE", path: "/v1/backends/web1", hdr: map[string]string{}, want: 401},
		{name: "delete wrong token", method: "DELETE", path: "/v1/backends/web1", hdr: map[string]string{"Authorization": "Bearer"}, want: 401},
		{name: "delete If-Match garbage", method: "DELETE", path: "/v1/backends/web1", hdr: auth("If-Match", "1 2"), want: 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeWriter(7)
			f.set(func(f *fakeWriter) { f.applyErr = c.applyErr })
			srv := startServer(t, "n1", f, testToken)
			hdr := c.hdr
			if hdr == nil {
				hdr = auth()
			}
			a := call(t, srv.URL, c.method, c.path, c.body, hdr)
			eb := checkErrorAnswer(t, a, c.want)
			if c.contains != "" && !strings.Contains(eb.Error, c.contains) {
				t.Errorf("error %q does not mention %q", eb.Error, c.contains)
			}
			if c.want == http.StatusUnauthorized && !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer (got %q)", a.header.Get("WWW-Authenticate"))
			}
			if strings.Contains(eb.Error, testToken) {
				t.Errorf("error %q reveals the token", eb.Error)
			}
			cmds := f.commands()
			if c.applyErr == nil && len(cmds) != 0 {
				t.Errorf("the writer received %v; want no command", cmds)
			}
			if got := f.currentIndex(); got != 7 {
				t.Errorf("index %d after a refused write, want 7", got)
			}
			// The config a client reads is unchanged too.
			var cfg Config
			if err := json.Unmarshal(call(t, srv.URL, "GET", "/v1/config", "", nil).body, &cfg); err != nil || cfg.Index != 7 {
				t.Errorf("GET /v1/config: index %d (%v), want 7", cfg.Index, err)
			}
		})
	}
}

func TestWriteHappyPaths(t *testing.T) {
	w5 := int32(5)
	cases := []struct {
		name   string
		method string
		path   string
		body   string
		hdr    map[string]string
		want   consensus.Command
	}{
		{"upsert", "PUT", "/v1/backends/web1", `{"address":"10.0.0.1:8080"}`, nil, consensus.Upsert("web1", "10.0.0.1:8080", nil, false)},
		{"upsert weight and drain", "PUT", "/v1/backends/web-1.a_b", `{"address":"app.example:80","weight":5,"drain":true}`, nil, consensus.Upsert("web-1.a_b", "app.example:80", &w5, true)},
		{"upsert weight null", "PUT", "/v1/backends/web1", ` {"address":"[::1]:80","weight":null} `, nil, consensus.Upsert("web1", "[::1]:80", nil, false)},
		{"upsert weight 0", "PUT", "/v1/backends/web1", `{"address":"h:1","weight":0}`, nil, consensus.Upsert("web1", "h:1", new(int32), false)},
		{"set weight", "PUT", "/v1/backends/web1/weight", `{"weight":10000}`, nil, consensus.SetWeight("web1", 10000)},
		{"set weight bare If-Match", "PUT", "/v1/backends/web1/weight", `{"weight":5}`, auth("If-Match", "7"), consensus.SetWeight("web1", 5).If(7)},
		{"set weight quoted If-Match", "PUT", "/v1/backends/web1/weight", `{"weight":5}`, auth("If-Match", `"7"`), consensus.SetWeight("web1", 5).If(7)},
		{"clear pin", "DELETE", "/v1/backends/web1/weight", ``, nil, consensus.ClearPin("web1")},
		{"clear pin empty object", "DELETE", "/v1/backends/web1/weight", `{}`, nil, consensus.ClearPin("web1")},
		{"drain", "PUT", "/v1/backends/web1/drain", `{"drain":true}`, nil, consensus.SetDrain("web1", true)},
		{"undrain", "PUT", "/v1/backends/web1/drain", `{"drain":false}`, nil, consensus.SetDrain("web1", false)},
		{"delete", "DELETE", "/v1/backends/web1", ``, nil, consensus.Delete("web1")},
		{"lower-case bearer", "DELETE", "/v1/backends/web1", ``, map[string]string{"Authorization": "bearer " + testToken}, consensus.Delete("web1")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeWriter(7)
			srv := startServer(t, "n1", f, testToken)
			hdr := c.hdr
			if hdr == nil {
				hdr = auth()
			}
			a := call(t, srv.URL, c.method, c.path, c.body, hdr)
			if a.status != http.StatusOK {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			var raw map[string]any
			if err := json.Unmarshal(a.body, &raw); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"index": float64(8), "leader": "n1", "changed": true}
			if !reflect.DeepEqual(raw, want) {
				t.Errorf("answer %v, want %v", raw, want)
			}
			if got := a.header.Get(headerConfigIndex); got != "8" {
				t.Errorf("X-Config-Index %q, want 8", got)
			}
			if cmds := f.commands(); len(cmds) != 1 || !reflect.DeepEqual(cmds[0], c.want) {
				t.Errorf("commands %+v, want [%+v]", cmds, c.want)
			}
		})
	}
}

func TestWriteNoTokenConfigured(t *testing.T) {
	f := newFakeWriter(1)
	srv := startServer(t, "n1", f, "")
	a := call(t, srv.URL, "PUT", "/v1/backends/web1/weight", `{"weight":3}`, nil)
	if a.status != http.StatusOK {
		t.Fatalf("status %d: %s", a.status, a.body)
	}
}

func TestReadsStayOpenWithToken(t *testing.T) {
	srv := startServer(t, "n1", newFakeWriter(1), testToken)
	for _, p := range []string{"/v1/config", "/v1/members", "/v1/load", "/healthz"} {
		if a := call(t, srv.URL, "GET", p, "", nil); a.status != http.StatusOK {
			t.Errorf("GET %s without a token: %d %s", p, a.status, a.body)
		}
	}
}

func TestAuthorizeComparesDigests(t *testing.T) {
	a := &api{s: Sources{Token: testToken}, tokenSum: sha256.Sum256([]byte(testToken))}
	for _, tc := range []struct {
		header string
		ok     bool
	}{
		{"Bearer " + testToken, true},
		{"BEARER  " + testToken + " ", true},
		{"Bearer " + testToken + testToken, false}, // longer
		{"Bearer s", false},                        // shorter
		{"Bearer ", false},
		{"Bearer", false},
		{testToken, false},
		{"", false},
	} {
		r := httptest.NewRequest("PUT", "/v1/backends/x", nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		err := a.authorize(r)
		if (err == nil) != tc.ok {
			t.Errorf("Authorization %q: err %v, want ok=%v", tc.header, err, tc.ok)
		}
		if err != nil {
			if status, _ := httpError(err); status != http.StatusUnauthorized {
				t.Errorf("Authorization %q: status %d, want 401", tc.header, status)
			}
		}
	}
}

func TestIfMatchConflict(t *testing.T) {
	f := newFakeWriter(5)
	srv := startServer(t, "n1", f, "")
	a := call(t, srv.URL, "PUT", "/v1/backends/web1/weight", `{"weight":3}`, map[string]string{"If-Match": "4"})
	eb := checkErrorAnswer(t, a, http.StatusConflict)
	if eb.Index != 5 || a.header.Get(headerConfigIndex) != "5" {
		t.Errorf("409 answer index %d, header %q: want the current index 5", eb.Index, a.header.Get(headerConfigIndex))
	}
	if f.currentIndex() != 5 {
		t.Errorf("index moved to %d", f.currentIndex())
	}
	// The index the 409 reported makes the retry succeed.
	a = call(t, srv.URL, "PUT", "/v1/backends/web1/weight", `{"weight":3}`, map[string]string{"If-Match": `"5"`})
	if a.status != http.StatusOK {
		t.Fatalf("retry: %d %s", a.status, a.body)
	}
}

func TestApplyErrorsMapped(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		want     int
		contains string
		outcome  string
	}{
		{"invalid", fmt.Errorf("%w: weight", consensus.ErrInvalid), 400, "weight", ""},
		{"unknown", consensus.ErrUnknownBackend, 404, "", ""},
		{"conflict", consensus.ErrConflict, 409, "", ""},
		{"no leader", consensus.ErrNoLeader, 503, "no raft leader", OutcomeNotApplied},
		{"closed before proposing", fmt.Errorf("%w: %w", consensus.ErrNoLeader, consensus.ErrClosed), 503, "closed", OutcomeNotApplied},
		{"leadership lost", fmt.Errorf("%w: leadership lost before the change committed (%w)", consensus.ErrNoLeader, consensus.ErrOutcomeUnknown), 503, "leadership lost", OutcomeUnknown},
		{"store deadline", fmt.Errorf("%w: not committed before the deadline; it may still be applied: %w (%w)", consensus.ErrNoLeader, context.DeadlineExceeded, consensus.ErrOutcomeUnknown), 503, "may still be applied", OutcomeUnknown},
		{"raw deadline", context.DeadlineExceeded, 503, "outcome is unknown", OutcomeUnknown},
		{"other", errBoom, 500, "boom", OutcomeUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeWriter(3)
			f.set(func(f *fakeWriter) { f.applyErr = c.err })
			srv := startServer(t, "n1", f, "")
			eb := checkErrorAnswer(t, call(t, srv.URL, "DELETE", "/v1/backends/web1", "", nil), c.want)
			if !strings.Contains(eb.Error, c.contains) {
				t.Errorf("error %q does not mention %q", eb.Error, c.contains)
			}
			if eb.Outcome != c.outcome {
				t.Errorf("outcome %q, want %q: a client must know whether a retry is safe", eb.Outcome, c.outcome)
			}
		})
	}
}

func TestHTTPError(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{errUnauthorized, 401},
		{&http.MaxBytesError{Limit: 10}, 413},
		{fmt.Errorf("read: %w", &http.MaxBytesError{Limit: 10}), 413},
		{fmt.Errorf("%w: x", errBadRequest), 400},
		{fmt.Errorf("%w: x", consensus.ErrInvalid), 400},
		{fmt.Errorf("%w: x", consensus.ErrUnknownBackend), 404},
		{fmt.Errorf("%w: x", consensus.ErrConflict), 409},
		{consensus.ErrNoLeader, 503},
		{consensus.ErrNotLeader, 503},
		{consensus.ErrClosed, 503},
		{errReadOnly, 503},
		{errForwardLoop, 503},
		{errForward, 503},
		{context.DeadlineExceeded, 503},
		{context.Canceled, 503},
		{errBoom, 500},
	}
	for _, c := range cases {
		if got, msg := httpError(c.err); got != c.want || msg == "" {
			t.Errorf("httpError(%v) = %d %q, want %d", c.err, got, msg, c.want)
		}
	}
}

func TestReadOnlyNode(t *testing.T) {
	srv := startServer(t, "n1", nil, "")
	eb := checkErrorAnswer(t, call(t, srv.URL, "PUT", "/v1/backends/web1/weight", `{"weight":3}`, nil), http.StatusServiceUnavailable)
	if eb.Error != "this node has no replicated config" {
		t.Errorf("error %q", eb.Error)
	}
	// Its long-poll waits out ?wait= (its config cannot change through the API).
	start := time.Now()
	a := call(t, srv.URL, "GET", "/v1/config?index=0&wait=50ms", "", nil)
	if a.status != 200 || time.Since(start) < 50*time.Millisecond {
		t.Errorf("long-poll on a read-only node: %d after %s", a.status, time.Since(start))
	}
}

func TestWaitApplied(t *testing.T) {
	t.Run("everywhere", func(t *testing.T) {
		f := newFakeWriter(1)
		var got []uint64
		var mu sync.Mutex
		f.applied = func(ctx context.Context, idx uint64) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, idx)
			return nil
		}
		srv := startServer(t, "n1", f, "")
		a := call(t, srv.URL, "PUT", "/v1/backends/web1/weight?wait=applied", `{"weight":3}`, nil)
		var raw map[string]any
		if err := json.Unmarshal(a.body, &raw); err != nil || a.status != 200 {
			t.Fatalf("%d %s", a.status, a.body)
		}
		if raw["applied_everywhere"] != true || raw["index"] != float64(2) {
			t.Errorf("answer %v", raw)
		}
		mu.Lock()
		defer mu.Unlock()
		if !reflect.DeepEqual(got, []uint64{2}) {
			t.Errorf("WaitApplied called with %v, want [2]", got)
		}
	})
	t.Run("not everywhere in time", func(t *testing.T) {
		f := newFakeWriter(1)
		f.applied = func(ctx context.Context, idx uint64) error {
			<-ctx.Done() // a member never catches up
			return fmt.Errorf("member n3 applied 1: %w", ctx.Err())
		}
		srv := startServer(t, "n1", f, "")
		start := time.Now()
		a := call(t, srv.URL, "PUT", "/v1/backends/web1/weight?wait=applied&timeout=50ms", `{"weight":3}`, nil)
		var raw map[string]any
		if err := json.Unmarshal(a.body, &raw); err != nil || a.status != 200 {
			t.Fatalf("%d %s", a.status, a.body)
		}
		if raw["applied_everywhere"] != false || !strings.Contains(fmt.Sprint(raw["wait_error"]), "n3") {
			t.Errorf("answer %v", raw)
		}
		if d := time.Since(start); d < 50*time.Millisecond || d > 10*time.Second {
			t.Errorf("answered after %s; want the 50ms bound", d)
		}
	})
	t.Run("absent without wait", func(t *testing.T) {
		srv := startServer(t, "n1", newFakeWriter(1), "")
		a := call(t, srv.URL, "PUT", "/v1/backends/web1/weight", `{"weight":3}`, nil)
		if strings.Contains(string(a.body), "applied_everywhere") {
			t.Errorf("answer %s mentions applied_everywhere without ?wait=applied", a.body)
		}
	})
}

// recorder wraps a handler and keeps the last request's headers.
type recorder struct {
	h    http.Handler
	mu   sync.Mutex
	last http.Header // guarded by mu
	n    int         // guarded by mu
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.last, r.n = req.Header.Clone(), r.n+1
	r.mu.Unlock()
	r.h.ServeHTTP(w, req)
}

func (r *recorder) seen() (http.Header, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.n
}

// cluster starts a leader and a follower whose writer says ErrNotLeader and
// points at the leader.
func cluster(t *testing.T, leaderToken, followerToken string) (leader, follower *fakeWriter, leaderRec *recorder, followerURL string) {
	t.Helper()
	leader = newFakeWriter(10)
	leaderRec = &recorder{h: NewHandler(sources("lead", leader, leaderToken))}
	ls := httptest.NewServer(leaderRec)
	t.Cleanup(ls.Close)
	follower = newFakeWriter(10)
	follower.set(func(f *fakeWriter) {
		f.applyErr = fmt.Errorf("%w: the leader is lead at 127.0.0.1:1", consensus.ErrNotLeader)
		f.leaderName, f.leaderAddr = "lead", ls.Listener.Addr().String()
	})
	fs := startServer(t, "foll", follower, followerToken)
	return leader, follower, leaderRec, fs.URL
}

func TestForwardToLeader(t *testing.T) {
	leader, follower, rec, furl := cluster(t, testToken, testToken)
	a := call(t, furl, "PUT", "/v1/backends/web1/weight?wait=applied", `{"weight":42}`,
		auth("If-Match", `"10"`, "Content-Type", "application/json"))
	if a.status != http.StatusOK {
		t.Fatalf("status %d: %s", a.status, a.body)
	}
	var res WriteResult
	if err := json.Unmarshal(a.body, &res); err != nil {
		t.Fatal(err)
	}
	if res != (WriteResult{Index: 11, Leader: "lead", Changed: true, AppliedEverywhere: true}) {
		t.Errorf("answer %+v", res)
	}
	if a.header.Get(headerConfigIndex) != "11" || a.header.Get("Content-Type") != "application/json" {
		t.Errorf("relayed headers %v", a.header)
	}
	if cmds := leader.commands(); len(cmds) != 1 || !reflect.DeepEqual(cmds[0], consensus.SetWeight("web1", 42).If(10)) {
		t.Errorf("leader commands %+v", cmds)
	}
	if follower.currentIndex() != 10 {
		t.Errorf("the follower's own index moved")
	}
	h, n := rec.seen()
	if n != 1 || h.Get(headerForwarded) != "foll" || h.Get("Authorization") != "Bearer "+testToken ||
		h.Get("If-Match") != `"10"` || h.Get("Content-Type") != "application/json" {
		t.Errorf("the leader saw %d requests, last headers %v", n, h)
	}

	// The leader's errors come back as they are.
	a = call(t, furl, "PUT", "/v1/backends/web1/weight", `{"weight":42}`, auth("If-Match", "3"))
	if eb := checkErrorAnswer(t, a, http.StatusConflict); eb.Index != 11 {
		t.Errorf("relayed 409 %+v", eb)
	}
}

func TestForwardRelaysLeaderAuth(t *testing.T) {
	// A follower without a token forwards; the leader refuses.
	_, _, _, furl := cluster(t, testToken, "")
	a := call(t, furl, "DELETE", "/v1/backends/web1", "", nil)
	checkErrorAnswer(t, a, http.StatusUnauthorized)
	if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("relayed 401 without WWW-Authenticate")
	}
	// A follower with a token refuses before forwarding.
	leader, _, rec, furl := cluster(t, testToken, testToken)
	checkErrorAnswer(t, call(t, furl, "DELETE", "/v1/backends/web1", "", nil), http.StatusUnauthorized)
	if _, n := rec.seen(); n != 0 || len(leader.commands()) != 0 {
		t.Errorf("an unauthorized write reached the leader")
	}
}

func TestForwardLoopProtection(t *testing.T) {
	// Two followers that each believe the other is the leader.
	a, b := newFakeWriter(1), newFakeWriter(1)
	notLeader := fmt.Errorf("%w: stale view", consensus.ErrNotLeader)
	as, bs := startServer(t, "a", a, ""), startServer(t, "b", b, "")
	a.set(func(f *fakeWriter) {
		f.applyErr, f.leaderName, f.leaderAddr = notLeader, "b", bs.Listener.Addr().String()
	})
	b.set(func(f *fakeWriter) {
		f.applyErr, f.leaderName, f.leaderAddr = notLeader, "a", as.Listener.Addr().String()
	})

	eb := checkErrorAnswer(t, call(t, as.URL, "PUT", "/v1/backends/web1/weight", `{"weight":1}`, nil), http.StatusServiceUnavailable)
	if !strings.Contains(eb.Error, "not the leader either") || !strings.Contains(eb.Error, "a forwarded") {
		t.Errorf("error %q", eb.Error)
	}
	if na, nb := len(a.commands()), len(b.commands()); na != 1 || nb != 1 {
		t.Errorf("apply attempts a=%d b=%d, want one each (no ping-pong)", na, nb)
	}
	// A request that already carries the header is not forwarded.
	eb = checkErrorAnswer(t, call(t, bs.URL, "DELETE", "/v1/backends/web1", "", map[string]string{headerForwarded: "x"}), http.StatusServiceUnavailable)
	if !strings.Contains(eb.Error, "x forwarded") {
		t.Errorf("error %q", eb.Error)
	}
}

func TestForwardLeaderUnknownOrDown(t *testing.T) {
	f := newFakeWriter(1)
	f.set(func(f *fakeWriter) { f.applyErr = consensus.ErrNotLeader })
	srv := startServer(t, "n1", f, "")
	eb := checkErrorAnswer(t, call(t, srv.URL, "DELETE", "/v1/backends/web1", "", nil), http.StatusServiceUnavailable)
	if !strings.HasPrefix(eb.Error, "no leader: ") {
		t.Errorf("error %q", eb.Error)
	}

	// A leader whose admin port refuses connections: nothing was sent, so
	// the answer says the write was not applied.
	dead := testutil.FreeAddr(t)
	f.set(func(f *fakeWriter) { f.leaderName, f.leaderAddr = "gone", dead })
	eb = checkErrorAnswer(t, call(t, srv.URL, "DELETE", "/v1/backends/web1", "", nil), http.StatusServiceUnavailable)
	if !strings.HasPrefix(eb.Error, "no leader: ") || !strings.Contains(eb.Error, "gone") || !strings.Contains(eb.Error, "not applied") || eb.Outcome != OutcomeNotApplied {
		t.Errorf("error %q, outcome %q", eb.Error, eb.Outcome)
	}
}

func TestConfigLongPoll(t *testing.T) {
	t.Run("returns when the index moves", func(t *testing.T) {
		f := newFakeWriter(3)
		srv := startServer(t, "n1", f, "")
		done := make(chan answer, 1)
		start := time.Now()
		go func() {
			done <- callNoFatal(srv.URL + "/v1/config?index=3&wait=30s")
		}()
		waitFor(t, f.waiting, 10*time.Second, "the poll to wait")
		f.setIndex(4)
		a := waitFor(t, done, 10*time.Second, "the poll to answer")
		if a.status != 200 || a.header.Get(headerConfigIndex) != "4" {
			t.Fatalf("%d %v %s", a.status, a.header, a.body)
		}
		var cfg Config
		if err := json.Unmarshal(a.body, &cfg); err != nil || cfg.Index != 4 {
			t.Errorf("config %+v (%v)", cfg, err)
		}
		if d := time.Since(start); d >= 30*time.Second {
			t.Errorf("answered after %s, the full wait", d)
		}
	})
	t.Run("returns after the wait", func(t *testing.T) {
		f := newFakeWriter(3)
		srv := startServer(t, "n1", f, "")
		start := time.Now()
		a := call(t, srv.URL, "GET", "/v1/config?index=3&wait=80ms", "", nil)
		if a.status != 200 || a.header.Get(headerConfigIndex) != "3" {
			t.Fatalf("%d %v %s", a.status, a.header, a.body)
		}
		if d := time.Since(start); d < 80*time.Millisecond {
			t.Errorf("answered after %s, before the wait", d)
		}
	})
	t.Run("already newer", func(t *testing.T) {
		f := newFakeWriter(3)
		f.set(func(f *fakeWriter) { f.waitErr = errBoom }) // must not be called
		srv := startServer(t, "n1", f, "")
		for _, p := range []string{"/v1/config?index=2&wait=5m", "/v1/config", "/v1/config?wait=1s", "/v1/config?index=18446744073709551615"} {
			a := call(t, srv.URL, "GET", p, "", nil)
			if a.status != 200 || a.header.Get(headerConfigIndex) != "3" {
				t.Errorf("GET %s: %d %v %s", p, a.status, a.header, a.body)
			}
		}
	})
	t.Run("store closed", func(t *testing.T) {
		f := newFakeWriter(3)
		f.set(func(f *fakeWriter) { f.waitErr = fmt.Errorf("wait: %w", consensus.ErrClosed) })
		srv := startServer(t, "n1", f, "")
		checkErrorAnswer(t, call(t, srv.URL, "GET", "/v1/config?index=3&wait=10s", "", nil), http.StatusServiceUnavailable)
	})
	t.Run("bad values", func(t *testing.T) {
		srv := startServer(t, "n1", newFakeWriter(3), "")
		for _, q := range []string{"index=abc", "index=-1", "index=", "index=1.5", "index=3&wait=abc", "index=3&wait=-1s", "index=3&wait=0", "index=3&wait=10"} {
			checkErrorAnswer(t, call(t, srv.URL, "GET", "/v1/config?"+q, "", nil), http.StatusBadRequest)
		}
	})
}

func TestParseDurationCaps(t *testing.T) {
	d, err := parseDuration("wait", "1h", defaultPollWait, maxPollWait)
	if err != nil || d != maxPollWait {
		t.Errorf("1h: %s %v, want the %s cap", d, err, maxPollWait)
	}
	if d, err := parseDuration("wait", "", defaultPollWait, maxPollWait); err != nil || d != defaultPollWait {
		t.Errorf("default: %s %v", d, err)
	}
}

func TestConfigOf(t *testing.T) {
	c := ConfigOf(consensus.Config{Index: 9, Backends: []consensus.Backend{
		{ID: "a", Address: "h:1", Weight: 7, Drain: true, Source: consensus.SourceConsul, SourceWeight: 3, Pinned: true},
	}})
	want := Config{Index: 9, Backends: []Backend{{ID: "a", Address: "h:1", Weight: 7, Drain: true, Source: "consul", SourceWeight: 3, Pinned: true}}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("%+v", c)
	}
	b, _ := json.Marshal(ConfigOf(consensus.Config{}))
	if string(b) != `{"index":0,"backends":[]}` {
		t.Errorf("empty config encodes as %s", b)
	}
	b, _ = json.Marshal(want.Backends[0])
	if string(b) != `{"id":"a","address":"h:1","weight":7,"drain":true,"source":"consul","source_weight":3,"pinned":true}` {
		t.Errorf("backend encodes as %s", b)
	}
}

// callNoFatal is call for goroutines other than the test's.
func callNoFatal(url string) answer {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return answer{status: -1, body: []byte(err.Error())}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{status: -1, body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{status: -1, body: []byte(err.Error())}
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

func TestStatusPageAndUnknownEndpoint(t *testing.T) {
	srv := startServer(t, "n1", newFakeWriter(2), "")
	if a := call(t, srv.URL, "GET", "/", "", nil); a.status != 200 || !strings.Contains(string(a.body), `<script src="/ui/app.js">`) {
		t.Errorf("status page: %d %s", a.status, a.body)
	}
	// The page shows what peers gossip and holds the token: it may run
	// only its own script and talk only to its own node.
	for _, path := range []string{"/", "/ui/app.js"} {
		csp := call(t, srv.URL, "GET", path, "", nil).header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
	}
	if a := call(t, srv.URL, "GET", "/v1/status", "", nil); a.status != 200 || !strings.Contains(string(a.body), `"config_index": 2`) {
		t.Errorf("status: %d %s", a.status, a.body)
	}
	checkErrorAnswer(t, call(t, srv.URL, "POST", "/v1/backends/web1", `{}`, nil), http.StatusMethodNotAllowed)
	checkErrorAnswer(t, call(t, srv.URL, "POST", "/v1/nothing", `{}`, nil), http.StatusNotFound)
}
