package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/thebalancer/balancer/consensus"
)

// Limits and timeouts of the write API and the config long-poll.
const (
	// maxBodyBytes bounds a write's request body.
	maxBodyBytes = 64 << 10
	// applyTimeout bounds how long a write waits for its commit. When it
	// passes, the answer is 503 and the outcome is unknown.
	applyTimeout = 10 * time.Second
	// defaultAppliedWait and maxAppliedWait bound ?wait=applied
	// (&timeout= picks another value up to the maximum).
	defaultAppliedWait = 10 * time.Second
	maxAppliedWait     = time.Minute
	// defaultPollWait and maxPollWait bound GET /v1/config?index=N
	// (&wait= picks a shorter one), as Consul's blocking queries do.
	defaultPollWait = 5 * time.Minute
	maxPollWait     = 5 * time.Minute
	// forwardSlack is added to a forwarded write's own bounds (applyTimeout
	// and the applied wait) to bound the forward to the leader.
	forwardSlack = 5 * time.Second
	// forwardDialTimeout bounds connecting to the leader's admin API.
	forwardDialTimeout = 2 * time.Second
	// maxForwardAnswer bounds the leader's answer a follower relays.
	maxForwardAnswer = 1 << 20

	// headerForwarded marks a write a follower forwarded to the leader; its
	// value is the follower's node name. A request that carries it is never
	// forwarded again.
	headerForwarded = "X-Balancer-Forwarded"
	// headerConfigIndex carries the config index of a config answer, a
	// write's answer, and a 409 or 404.
	headerConfigIndex = "X-Config-Index"
)

// api holds what the handlers share. It is immutable after NewHandler.
type api struct {
	s        Sources
	tokenSum [32]byte // sha256 of s.Token; unused when s.Token == ""
	fwd      *http.Client
	status   statusCache
	polls    chan struct{} // one slot per long poll waiting, maxLongPolls
}

// maxLongPolls bounds the long polls one node holds at once. Reads need no
// token, and each poll holds a connection for up to maxPollWait: without a
// bound of their own, polls alone could take every admin connection the
// listener allows, and forwarded writes, peers' status requests and
// readiness probes would queue behind them.
const maxLongPolls = 64

// newForwardClient returns the client a follower forwards writes with. It
// never follows redirects: the leader's answer is relayed as it is. Each
// forward is bounded by its request's context.
func newForwardClient(tlsCfg func() *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// The leader is a peer on the cluster's network: it accepts a
	// connection at once or it is gone. Without a bound, a leader killed
	// with its address left unanswered (no RST) held every forwarded write
	// for the whole forward bound (15 s) after a fail-over.
	dialer := &net.Dialer{Timeout: forwardDialTimeout, KeepAlive: 30 * time.Second}
	tr.DialContext = dialer.DialContext
	if tlsCfg != nil {
		// The config is asked for on every new connection, not fixed in
		// TLSClientConfig, so that certificates and CAs reloaded since
		// the last one apply; kept-alive connections stay as they are.
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialTLS(ctx, dialer, tr.TLSHandshakeTimeout, tlsCfg(), network, addr)
		}
	}
	tr.Proxy = nil // peers talk directly, whatever HTTP_PROXY says
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// dialTLS does what http.Transport does with TLSClientConfig: it verifies
// the dialled host unless cfg names a server, offers HTTP/2, and bounds
// the handshake by timeout.
func dialTLS(ctx context.Context, d *net.Dialer, timeout time.Duration, cfg *tls.Config, network, addr string) (net.Conn, error) {
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		cfg.ServerName = host
	}
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// adminBase turns an advertised admin address into a base URL: a bare
// HOST:PORT is plain HTTP, and an HTTPS node advertises https://HOST:PORT.
func adminBase(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/")
	}
	return "http://" + addr
}

// WriteResult is the answer of a successful write (PUT or DELETE under
// /v1/backends/).
type WriteResult struct {
	// Index is the config index after the write: the index that committed
	// it, or the unchanged current index when it changed nothing.
	Index uint64 `json:"index"`
	// Leader is the name of the node that committed the write.
	Leader string `json:"leader"`
	// Changed reports whether the write changed the config.
	Changed bool `json:"changed"`
	// AppliedEverywhere is set with ?wait=applied when every raft server
	// confirmed it applied Index before the wait ended; one that cannot be
	// heard from (suspect, dead) has not confirmed.
	AppliedEverywhere bool `json:"applied_everywhere"`
	// WaitError says why the applied wait ended without success.
	WaitError string `json:"wait_error,omitempty"`
}

// writeAnswer is WriteResult on the wire: applied_everywhere appears only
// when the write asked for ?wait=applied.
type writeAnswer struct {
	Index             uint64 `json:"index"`
	Leader            string `json:"leader"`
	Changed           bool   `json:"changed"`
	AppliedEverywhere *bool  `json:"applied_everywhere,omitempty"`
	WaitError         string `json:"wait_error,omitempty"`
}

// writeOpts are a write's query parameters.
type writeOpts struct {
	waitApplied bool          // ?wait=applied
	timeout     time.Duration // ?timeout=, bounds the applied wait
}

// buildFunc turns a write request's path id and body into a command. It
// checks the body's shape; consensus.Validate checks the rest.
type buildFunc func(id string, body []byte) (consensus.Command, error)

// getConfig serves GET /v1/config, and with ?index=N the long-poll: it
// answers once the config index is greater than N or when ?wait= (default
// and at most maxPollWait) has passed, whichever is first.
func (a *api) getConfig(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	wait, err := parseDuration("wait", q.Get("wait"), defaultPollWait, maxPollWait)
	if err != nil {
		writeErr(w, err, 0)
		return
	}
	if !q.Has("index") {
		writeConfig(w, a.s.Config.Config())
		return
	}
	after, err := strconv.ParseUint(q.Get("index"), 10, 64)
	if err != nil {
		writeErr(w, fmt.Errorf("%w: index %.32q: want a config index such as 42", errBadRequest, q.Get("index")), 0)
		return
	}
	if cfg := a.s.Config.Config(); cfg.Index > after || after == ^uint64(0) {
		writeConfig(w, cfg)
		return
	}
	select {
	case a.polls <- struct{}{}:
		defer func() { <-a.polls }()
	default:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%d long polls are already waiting on %s; retry in a second, or poll another node", maxLongPolls, a.s.Node))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	if err := a.waitIndex(ctx, after+1); err != nil && ctx.Err() == nil {
		// Not the wait ending: the store closed. An error makes a polling
		// client back off instead of spinning.
		writeErr(w, err, 0)
		return
	}
	writeConfig(w, a.s.Config.Config())
}

// waitIndex waits for a config index. A read-only node's config does not
// change through the API, so it waits out ctx.
func (a *api) waitIndex(ctx context.Context, idx uint64) error {
	if a.s.Writer == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	return a.s.Writer.WaitIndex(ctx, idx)
}

// write returns the handler of one write endpoint. Everything is checked
// (token, body, If-Match, query, command) before anything is proposed.
func (a *api) write(build buildFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := a.authorize(r); err != nil {
			writeErr(w, err, 0)
			return
		}
		if a.s.Writer == nil {
			writeErr(w, errReadOnly, 0)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if !errors.As(err, &tooLarge) {
				err = fmt.Errorf("%w: read the body: %v", errBadRequest, err)
			}
			writeErr(w, err, 0)
			return
		}
		ifIndex, err := parseIfMatch(r.Header)
		if err != nil {
			writeErr(w, err, 0)
			return
		}
		opts, err := parseWriteQuery(r.URL.Query())
		if err != nil {
			writeErr(w, err, 0)
			return
		}
		cmd, err := build(r.PathValue("id"), body)
		if err != nil {
			writeErr(w, err, 0)
			return
		}
		cmd = cmd.If(ifIndex)
		if err := consensus.Validate(cmd); err != nil {
			writeErr(w, err, 0)
			return
		}
		a.apply(w, r, cmd, body, opts)
	}
}

// apply proposes cmd, forwards the request when this node is a follower,
// and answers.
func (a *api) apply(w http.ResponseWriter, r *http.Request, cmd consensus.Command, body []byte, opts writeOpts) {
	ctx, cancel := context.WithTimeout(r.Context(), applyTimeout)
	res, err := a.s.Writer.Apply(ctx, cmd)
	cancel()
	if errors.Is(err, consensus.ErrNotLeader) {
		a.forward(w, r, body, opts, err)
		return
	}
	if err != nil {
		writeErr(w, err, res.Index)
		return
	}
	ans := writeAnswer{Index: res.Index, Leader: a.s.Node, Changed: res.Changed}
	if opts.waitApplied {
		ctx, cancel := context.WithTimeout(r.Context(), opts.timeout)
		err := a.s.Writer.WaitApplied(ctx, res.Index)
		cancel()
		everywhere := err == nil
		ans.AppliedEverywhere = &everywhere
		if err != nil {
			ans.WaitError = fmt.Sprintf("index %d is committed, but not every raft server confirmed applying it (waited up to %s): %v", res.Index, opts.timeout, err)
		}
	}
	w.Header().Set(headerConfigIndex, strconv.FormatUint(res.Index, 10))
	writeJSON(w, http.StatusOK, ans)
}

// forward relays a write this follower cannot apply to the leader's admin
// API and copies the leader's answer back. cause is Apply's ErrNotLeader.
func (a *api) forward(w http.ResponseWriter, r *http.Request, body []byte, opts writeOpts, cause error) {
	if by := r.Header.Get(headerForwarded); by != "" {
		writeErr(w, fmt.Errorf("%w: %.64s forwarded this write to %s, which is not the leader either (leadership is moving); retry shortly", errForwardLoop, by, a.s.Node), 0)
		return
	}
	name, addr := a.s.Writer.Leader()
	if name == "" || addr == "" || name == a.s.Node {
		writeErr(w, fmt.Errorf("no leader: %s is a follower and knows no leader's admin address (%v); retry shortly: %w", a.s.Node, cause, consensus.ErrNoLeader), 0)
		return
	}
	timeout := applyTimeout + forwardSlack
	if opts.waitApplied {
		timeout += opts.timeout
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, adminBase(addr)+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		writeErr(w, fmt.Errorf("no leader: the leader %s has a bad admin address %q: %v: %w", name, addr, err, consensus.ErrNoLeader), 0)
		return
	}
	for _, h := range []string{"Authorization", "If-Match", "Content-Type"} {
		for _, v := range r.Header.Values(h) {
			req.Header.Add(h, v)
		}
	}
	req.Header.Set(headerForwarded, a.s.Node)
	resp, err := a.fwd.Do(req)
	var dialErr *net.OpError
	if errors.As(err, &dialErr) && dialErr.Op == "dial" {
		// Nothing was sent, so the write did not happen: a definite answer
		// the client can retry, not an unknown outcome.
		writeErr(w, fmt.Errorf("no leader: %s could not connect to the leader %s at %s, so the write was not applied; retry shortly: %v: %w", a.s.Node, name, addr, err, consensus.ErrNoLeader), 0)
		return
	}
	if err != nil {
		writeErr(w, fmt.Errorf("%w: %s forwarded this write to the leader %s at %s and got no answer, so its outcome is unknown: %v", errForward, a.s.Node, name, addr, err), 0)
		return
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardAnswer))
	if err != nil {
		writeErr(w, fmt.Errorf("%w: %s forwarded this write to the leader %s at %s and could not read its answer, so its outcome is unknown: %v", errForward, a.s.Node, name, addr, err), 0)
		return
	}
	for _, h := range []string{"Content-Type", headerConfigIndex, "WWW-Authenticate"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(ans)
}

// authorize checks a write's bearer token. It compares SHA-256 digests of
// the sent and the configured token in constant time, so neither the
// token's content nor its length leaks through timing.
func (a *api) authorize(r *http.Request) error {
	if a.s.Token == "" {
		return nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return fmt.Errorf("%w: writes on this node need Authorization: Bearer TOKEN", errUnauthorized)
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return fmt.Errorf("%w: want Authorization: Bearer TOKEN", errUnauthorized)
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	if subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) != 1 {
		return fmt.Errorf("%w: invalid token", errUnauthorized)
	}
	return nil
}

// upsertCommand builds PUT /v1/backends/{id}:
// {"address": "HOST:PORT", "weight": N (optional), "drain": bool (optional)}.
func upsertCommand(id string, body []byte) (consensus.Command, error) {
	var b struct {
		Address string          `json:"address"`
		Weight  json.RawMessage `json:"weight"`
		Drain   bool            `json:"drain"`
	}
	if err := decodeBody(body, &b); err != nil {
		return consensus.Command{}, err
	}
	if b.Address == "" {
		return consensus.Command{}, fmt.Errorf("%w: address is missing: want HOST:PORT", errBadRequest)
	}
	weight, err := parseWeight(b.Weight)
	if err != nil {
		return consensus.Command{}, err
	}
	return consensus.Upsert(id, b.Address, weight, b.Drain), nil
}

// setWeightCommand builds PUT /v1/backends/{id}/weight: {"weight": N}.
func setWeightCommand(id string, body []byte) (consensus.Command, error) {
	var b struct {
		Weight json.RawMessage `json:"weight"`
	}
	if err := decodeBody(body, &b); err != nil {
		return consensus.Command{}, err
	}
	weight, err := parseWeight(b.Weight)
	if err != nil {
		return consensus.Command{}, err
	}
	if weight == nil {
		return consensus.Command{}, fmt.Errorf("%w: weight is missing: want a whole number 0..%d (0 = no new traffic)", errBadRequest, consensus.MaxWeight)
	}
	return consensus.SetWeight(id, *weight), nil
}

// setDrainCommand builds PUT /v1/backends/{id}/drain: {"drain": bool}.
func setDrainCommand(id string, body []byte) (consensus.Command, error) {
	var b struct {
		Drain *bool `json:"drain"`
	}
	if err := decodeBody(body, &b); err != nil {
		return consensus.Command{}, err
	}
	if b.Drain == nil {
		return consensus.Command{}, fmt.Errorf("%w: drain is missing: want true or false", errBadRequest)
	}
	return consensus.SetDrain(id, *b.Drain), nil
}

// clearPinCommand builds DELETE /v1/backends/{id}/weight.
func clearPinCommand(id string, body []byte) (consensus.Command, error) {
	if err := noBody(body); err != nil {
		return consensus.Command{}, err
	}
	return consensus.ClearPin(id), nil
}

// deleteCommand builds DELETE /v1/backends/{id}.
func deleteCommand(id string, body []byte) (consensus.Command, error) {
	if err := noBody(body); err != nil {
		return consensus.Command{}, err
	}
	return consensus.Delete(id), nil
}

// decodeBody decodes exactly one JSON object into v and rejects unknown
// fields.
func decodeBody(body []byte, v any) error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return fmt.Errorf("%w: the body is empty: want a JSON object", errBadRequest)
	}
	if trimmed[0] != '{' {
		return fmt.Errorf("%w: the body is not a JSON object", errBadRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body: %v", errBadRequest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: body: want a single JSON object, found more after it", errBadRequest)
	}
	return nil
}

// noBody accepts an empty body or an empty JSON object (DELETE).
func noBody(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return decodeBody(body, &struct{}{})
}

// parseWeight reads an optional weight: absent or null is nil; anything
// but a JSON whole number 0..MaxWeight written without fraction or
// exponent is an error.
func parseWeight(raw json.RawMessage) (*int32, error) {
	if raw == nil || string(raw) == "null" {
		return nil, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 32)
	if err != nil || n < 0 || n > consensus.MaxWeight {
		return nil, invalidf("weight %.32s: want a whole number 0..%d (0 = no new traffic)", raw, consensus.MaxWeight)
	}
	w := int32(n)
	return &w, nil
}

// parseIfMatch reads If-Match: a config index, bare or quoted like an ETag
// (42 or "42"). Absent is 0 (unconditional).
func parseIfMatch(h http.Header) (uint64, error) {
	vs := h.Values("If-Match")
	if len(vs) == 0 {
		return 0, nil
	}
	const want = `want one config index such as 42 or "42"`
	if len(vs) > 1 {
		return 0, fmt.Errorf("%w: %d If-Match headers: %s", errBadRequest, len(vs), want)
	}
	v := strings.TrimSpace(vs[0])
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: If-Match %.32q: %s", errBadRequest, vs[0], want)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: If-Match 0: config indexes start at 1; send the index of GET /v1/config", errBadRequest)
	}
	return n, nil
}

// parseWriteQuery reads a write's ?wait=applied and &timeout=.
func parseWriteQuery(q url.Values) (writeOpts, error) {
	var o writeOpts
	switch w := q.Get("wait"); w {
	case "":
	case "applied":
		o.waitApplied = true
	default:
		return o, fmt.Errorf("%w: wait %.32q: writes take wait=applied only", errBadRequest, w)
	}
	t := q.Get("timeout")
	if t != "" && !o.waitApplied {
		return o, fmt.Errorf("%w: timeout is only used with wait=applied", errBadRequest)
	}
	var err error
	o.timeout, err = parseDuration("timeout", t, defaultAppliedWait, maxAppliedWait)
	return o, err
}

// parseDuration reads a positive duration such as 10s; empty is def, and
// more than most is most.
func parseDuration(name, v string, def, most time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: %s %.32q: want a positive duration such as 10s (at most %s)", errBadRequest, name, v, most)
	}
	return min(d, most), nil
}
