package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// clientTimeout bounds one call of the Client, on top of the time the call
// asks the server to wait (ConfigAfter's wait, WaitApplied's timeout). It
// exceeds what a forwarded write may take (applyTimeout + forwardSlack).
const clientTimeout = 30 * time.Second

// Client talks to a node's admin API; the CLI's members and weights
// commands use it. Writes may go to any node: a follower forwards them to
// the leader. Its methods are safe for concurrent use; each blocks until the
// answer arrives, ctx ends or the call's own bound passes.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// ClientOption changes how a Client connects.
type ClientOption func(*clientOptions)

type clientOptions struct{ tls *tls.Config }

// WithTLS makes the client speak HTTPS with cfg: its RootCAs (nil: the
// system's) verify the node, and its Certificates are shown to a node that
// requires client certificates (-tls-ca). A HOST:PORT address then means
// https://HOST:PORT.
func WithTLS(cfg *tls.Config) ClientOption { return func(o *clientOptions) { o.tls = cfg } }

// NewClient returns a client for the admin API at addr (HOST:PORT or a URL).
// token, when not empty, is sent as "Authorization: Bearer TOKEN".
func NewClient(addr, token string, opts ...ClientOption) *Client {
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	base := addr
	if !strings.Contains(base, "://") {
		if o.tls != nil {
			base = "https://" + base
		} else {
			base = "http://" + base
		}
	}
	hc := &http.Client{}
	if o.tls != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = o.tls
		hc.Transport = tr
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: hc}
}

// Error is an answer other than 200 from the admin API. Match it with
// errors.As to read the status (400 bad input, 401 token, 404 unknown
// backend, 409 If-Match lost, 503 no leader or outcome unknown).
type Error struct {
	Method  string
	Path    string
	Status  int
	Message string // the answer's "error", or the status text
	// Index is the config index the answer carried (409 and 404 from the
	// leader), or 0.
	Index uint64
	// Outcome, on a 5xx answer to a write, is OutcomeNotApplied (safe to
	// retry) or OutcomeUnknown (it may still commit).
	Outcome string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %s (%d)", e.Method, e.Path, e.Message, e.Status)
}

// WriteOption changes how a write is made.
type WriteOption func(*writeOptions)

type writeOptions struct {
	ifIndex     uint64
	waitApplied bool
	timeout     time.Duration
}

// IfIndex makes the write conditional (If-Match): it is applied only if the
// config index is still index, else the call fails with a 409 *Error. Take
// index from Config or a previous WriteResult. IfIndex(0) is unconditional.
func IfIndex(index uint64) WriteOption { return func(o *writeOptions) { o.ifIndex = index } }

// WaitApplied makes the write answer only once every raft server confirmed
// applying it, or the server's default bound (10s) passed: see
// WriteResult.AppliedEverywhere.
func WaitApplied() WriteOption { return func(o *writeOptions) { o.waitApplied = true } }

// WaitAppliedFor is WaitApplied with another bound (at most one minute).
func WaitAppliedFor(d time.Duration) WriteOption {
	return func(o *writeOptions) { o.waitApplied, o.timeout = true, d }
}

// Members fetches GET /v1/members.
func (c *Client) Members(ctx context.Context) (Members, error) {
	var m Members
	return m, c.do(ctx, http.MethodGet, "/v1/members", nil, nil, 0, &m)
}

// Config fetches GET /v1/config.
func (c *Client) Config(ctx context.Context) (Config, error) {
	var cfg Config
	return cfg, c.do(ctx, http.MethodGet, "/v1/config", nil, nil, 0, &cfg)
}

// ConfigAfter long-polls GET /v1/config?index=N&wait=D: it returns once the
// node's config index is greater than index, or when wait has passed (then
// with the unchanged config; compare its Index). wait 0 is the server's
// default (five minutes, also the most it allows).
func (c *Client) ConfigAfter(ctx context.Context, index uint64, wait time.Duration) (Config, error) {
	q := url.Values{"index": {strconv.FormatUint(index, 10)}}
	extra := defaultPollWait
	if wait > 0 {
		q.Set("wait", wait.String())
		extra = min(wait, maxPollWait)
	}
	var cfg Config
	return cfg, c.do(ctx, http.MethodGet, "/v1/config?"+q.Encode(), nil, nil, extra, &cfg)
}

// Load fetches GET /v1/load.
func (c *Client) Load(ctx context.Context) (Load, error) {
	var l Load
	return l, c.do(ctx, http.MethodGet, "/v1/load", nil, nil, 0, &l)
}

// Status fetches GET /v1/status: the cluster as the node at the client's
// address sees it, with its peers' own raft state and traffic.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.do(ctx, http.MethodGet, "/v1/status", nil, nil, 0, &st)
}

// Upsert creates or replaces a backend (PUT /v1/backends/{id}). A nil weight
// keeps an existing backend's weight (a new one gets the default); a
// non-nil one sets and pins it.
func (c *Client) Upsert(ctx context.Context, id, address string, weight *int32, drain bool, opts ...WriteOption) (WriteResult, error) {
	body := struct {
		Address string `json:"address"`
		Weight  *int32 `json:"weight,omitempty"`
		Drain   bool   `json:"drain"`
	}{address, weight, drain}
	return c.write(ctx, http.MethodPut, id, "", body, opts)
}

// SetWeight sets and pins a backend's weight (PUT /v1/backends/{id}/weight):
// Consul syncs keep it until ClearWeight.
func (c *Client) SetWeight(ctx context.Context, id string, w int32, opts ...WriteOption) (WriteResult, error) {
	return c.write(ctx, http.MethodPut, id, "/weight", struct {
		Weight int32 `json:"weight"`
	}{w}, opts)
}

// ClearWeight clears an operator's weight pin (DELETE
// /v1/backends/{id}/weight): the weight returns to the source's.
func (c *Client) ClearWeight(ctx context.Context, id string, opts ...WriteOption) (WriteResult, error) {
	return c.write(ctx, http.MethodDelete, id, "/weight", nil, opts)
}

// SetDrain sets or clears a backend's drain flag (PUT /v1/backends/{id}/drain).
func (c *Client) SetDrain(ctx context.Context, id string, drain bool, opts ...WriteOption) (WriteResult, error) {
	return c.write(ctx, http.MethodPut, id, "/drain", struct {
		Drain bool `json:"drain"`
	}{drain}, opts)
}

// Delete removes a backend (DELETE /v1/backends/{id}).
func (c *Client) Delete(ctx context.Context, id string, opts ...WriteOption) (WriteResult, error) {
	return c.write(ctx, http.MethodDelete, id, "", nil, opts)
}

func (c *Client) write(ctx context.Context, method, id, suffix string, body any, opts []WriteOption) (WriteResult, error) {
	if id == "" {
		return WriteResult{}, errors.New("admin client: empty backend id")
	}
	var o writeOptions
	for _, opt := range opts {
		opt(&o)
	}
	path := "/v1/backends/" + url.PathEscape(id) + suffix
	var extra time.Duration
	if o.waitApplied {
		q := url.Values{"wait": {"applied"}}
		extra = defaultAppliedWait
		if o.timeout > 0 {
			q.Set("timeout", o.timeout.String())
			extra = min(o.timeout, maxAppliedWait)
		}
		path += "?" + q.Encode()
	}
	hdr := http.Header{}
	if o.ifIndex != 0 {
		hdr.Set("If-Match", strconv.FormatUint(o.ifIndex, 10))
	}
	var res WriteResult
	return res, c.do(ctx, method, path, body, hdr, extra, &res)
}

// do makes one call bounded by ctx and clientTimeout+extra, and decodes a
// 200 answer into out; any other status is an *Error.
func (c *Client) do(ctx context.Context, method, path string, body any, hdr http.Header, extra time.Duration, out any) error {
	ctx, cancel := context.WithTimeout(ctx, clientTimeout+extra)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: encode body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Method: method, Path: path, Status: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}
		var eb errorBody
		if json.Unmarshal(ans, &eb) == nil && eb.Error != "" {
			e.Message, e.Index, e.Outcome = eb.Error, eb.Index, eb.Outcome
		} else if txt := strings.TrimSpace(string(ans)); txt != "" && len(txt) <= 200 && utf8.ValidString(txt) && !strings.ContainsAny(txt, "<>") {
			// Not our JSON: a short plain-text answer (net/http's "Client
			// sent an HTTP request to an HTTPS server", a proxy's note)
			// says more than the status text.
			e.Message = txt
		}
		return e
	}
	if err := json.Unmarshal(ans, out); err != nil {
		// Most often the address is a traffic listener or another
		// service: say that, rather than quote the JSON parser.
		start := string(ans[:min(len(ans), 60)])
		return fmt.Errorf("%s %s: the answer is not a balancer admin API's (HTTP %d, Content-Type %q, begins %q): is %s the node's -admin address? (%v)",
			method, path, resp.StatusCode, resp.Header.Get("Content-Type"), start, c.base, err)
	}
	return nil
}
