package backend

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// StatsPath answers the Stats as JSON, without queueing, in HTTP mode.
const StatsPath = "/_stats"

// UpgradeProtocol is the Upgrade token that switches a connection to echo.
const UpgradeProtocol = "echo"

const (
	// copyBufSize is the size of echo copy buffers and of the ?size= fill
	// chunk.
	copyBufSize = 32 * 1024
	// maxPooledBody is the largest ?echo=1 body buffer kept for reuse.
	maxPooledBody = 1 << 20
)

// fill is the ?size= body, written chunk by chunk: byte i of any body is
// 'a' + i%26, so a test can check what arrived. Its length is a multiple of
// 26 so the pattern continues across chunks. Read-only after init.
var fill = func() []byte {
	b := make([]byte, copyBufSize/26*26)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

// FillByte returns byte i of a ?size= body.
func FillByte(i int) byte { return 'a' + byte(i%26) }

// params are the per-request overrides from the query string.
type params struct {
	sleep    time.Duration
	hasSleep bool
	size     int // -1: answer the name
	status   int // 0: normal (FailRate decides)
	echo     bool
}

// parseParams reads sleep, size, status and echo from a raw query without
// allocating for plain values. Unknown keys are ignored.
func parseParams(raw string) (params, error) {
	p := params{size: -1}
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(v, "%+") {
			u, err := url.QueryUnescape(v)
			if err != nil {
				return p, errors.New("bad query escape in " + k)
			}
			v = u
		}
		switch k {
		case "sleep":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return p, errors.New("sleep must be a duration >= 0, like 50ms")
			}
			p.sleep, p.hasSleep = d, true
		case "size":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return p, errors.New("size must be an integer >= 0")
			}
			p.size = n
		case "status":
			n, err := strconv.Atoi(v)
			if err != nil || n < 200 || n > 599 {
				return p, errors.New("status must be an integer between 200 and 599")
			}
			p.status = n
		case "echo":
			p.echo = v == "1" || v == "true"
		}
	}
	return p, nil
}

// serveHTTP is the handler for every path. It runs on net/http's
// per-connection goroutines.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		return
	}
	defer s.wg.Done()

	if _, ok := r.Header["Upgrade"]; ok && isEchoUpgrade(r) {
		s.serveUpgrade(w, r)
		return
	}
	if r.URL.Path == StatsPath {
		s.serveStats(w)
		return
	}
	p, err := parseParams(r.URL.RawQuery)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}

	// Read the body before queueing: net/http notices a client that goes
	// away (and cancels r.Context) only once the body has been consumed.
	var echo *bytes.Buffer
	if p.echo {
		echo = s.bodies.Get().(*bytes.Buffer)
		defer s.putBody(echo)
		if _, err := echo.ReadFrom(r.Body); err != nil {
			return // the client is gone or sent a broken body
		}
	} else if r.Body != nil && r.Body != http.NoBody {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
	}

	ctx := r.Context()
	if !s.acquire(ctx) {
		s.canceled.Add(1)
		return
	}
	d := p.sleep
	if !p.hasSleep {
		d = s.serviceTime()
	}
	if !s.sleep(ctx, d) {
		s.release()
		s.canceled.Add(1)
		return
	}

	status := p.status
	fail := false
	if status == 0 {
		status = http.StatusOK
		if s.shouldFail() {
			status, fail = http.StatusInternalServerError, true
		}
	}
	h := w.Header()
	h["X-Backend"] = s.hdrName
	h["Content-Type"] = s.hdrTextType
	noBody := status == http.StatusNoContent || status == http.StatusNotModified
	switch {
	case noBody:
		w.WriteHeader(status)
	case fail:
		h["Content-Length"] = s.hdrFailLen
		w.WriteHeader(status)
		_, _ = w.Write(s.failBody)
	case echo != nil:
		h["Content-Length"] = []string{strconv.Itoa(echo.Len())}
		w.WriteHeader(status)
		_, _ = w.Write(echo.Bytes())
	case p.size >= 0:
		h["Content-Length"] = []string{strconv.Itoa(p.size)}
		w.WriteHeader(status)
		for n := p.size; n > 0; {
			k, err := w.Write(fill[:min(n, len(fill))])
			if err != nil {
				break
			}
			n -= k
		}
	default:
		h["Content-Length"] = s.hdrNameLen
		w.WriteHeader(status)
		_, _ = w.Write(s.nameBody)
	}
	// The slot is held until the answer has been handed to net/http, so
	// InFlight covers writing a large body too.
	s.release()
	s.served.Add(1)
	if status >= 500 {
		s.failed.Add(1)
	}
}

func (s *Server) putBody(b *bytes.Buffer) {
	if b.Cap() > maxPooledBody {
		return
	}
	b.Reset()
	s.bodies.Put(b)
}

// serveStats answers GET /_stats.
func (s *Server) serveStats(w http.ResponseWriter) {
	b, err := json.Marshal(s.Stats())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h["X-Backend"] = s.hdrName
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}

// isEchoUpgrade reports whether r asks to switch to the echo protocol:
// "Connection: upgrade" (among other tokens) and "Upgrade: echo".
func isEchoUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header["Connection"], "upgrade") &&
		headerHasToken(r.Header["Upgrade"], UpgradeProtocol)
}

// headerHasToken reports whether a comma-separated header holds token,
// ignoring case.
func headerHasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// serveUpgrade answers 101 and echoes bytes on the hijacked connection until
// the client half-closes (then it closes its write side too) or goes away.
// Upgrades bypass the worker queue.
func (s *Server) serveUpgrade(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil && r.Body != http.NoBody {
		// Only a body-less request can switch protocols cleanly.
		http.Error(w, "an upgrade request must not have a body", http.StatusBadRequest)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "upgrade not supported on this connection", http.StatusHTTPVersionNotSupported)
		return
	}
	if !s.track(c) {
		return
	}
	defer s.untrack(c)
	// Clear the header-read deadline net/http may have left on c.
	_ = c.SetDeadline(time.Time{})
	s.upgrades.Add(1)

	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + UpgradeProtocol +
		"\r\nConnection: Upgrade\r\nX-Backend: ")
	_, _ = brw.WriteString(s.name)
	_, _ = brw.WriteString("\r\n\r\n")
	if err := brw.Flush(); err != nil {
		return
	}
	// Bytes the client sent right after the request may already sit in
	// brw.Reader; reading through it echoes those first.
	if err := s.echo(c, brw.Reader); err == nil {
		closeWrite(c)
	}
}

// echo copies everything read from r to c until EOF (nil) or an error.
func (s *Server) echo(c net.Conn, r io.Reader) error {
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// closeWrite half-closes c if it supports it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
