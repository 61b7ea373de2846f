package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// rawExchange sends request bytes to the proxy and reads one answer.
func rawExchange(t *testing.T, url, request string) (*http.Response, error) {
	t.Helper()
	c, err := net.Dial("tcp", hostPort(url))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
	}
	return resp, err
}

// An answer without a body (204, HEAD, 304) that comes after an exchange
// longer than the client idle timeout must still reach the client: its
// headers go out when the handler returns, not through Write.
func TestBodylessAnswerAfterALongExchange(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(600 * time.Millisecond) // longer than the client idle timeout
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(be.Close)
	cfg := DefaultConfig()
	cfg.ClientIdleTimeout = 300 * time.Millisecond
	_, url := startHTTP(t, cfg, []Route{route("a", hostPort(be.URL))}, nil)
	for _, method := range []string{"GET", "HEAD"} {
		resp, err := rawExchange(t, url, method+" / HTTP/1.1\r\nHost: x\r\n\r\n")
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Errorf("%s: %v %v, want the backend's 204", method, resp, err)
		}
	}
}

// A backend that stops sending in the middle of a body must not hold the
// client, its connection and the in-flight slot for ever.
func TestBackendStalledMidBodyIsCutOff(t *testing.T) {
	addr := rawBackend(t, func(_ int, _ *http.Request, w io.Writer) bool {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		time.Sleep(10 * time.Second)
		return false
	})
	cfg := DefaultConfig()
	cfg.IdleTimeout = 400 * time.Millisecond
	p, url := startHTTP(t, cfg, []Route{route("a", addr)}, nil)
	began := time.Now()
	resp, err := http.Get(url)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a body cut short read as complete")
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the client waited %v for a stalled backend; the idle bound is %v", took, cfg.IdleTimeout)
	}
	if n := totalInFlight(p); n != 0 {
		t.Errorf("in flight %d after the stalled body was cut", n)
	}
}

// The backend sees the query the client sent, byte for byte; the client
// gets no Content-Type the backend did not send; CONNECT is not proxied.
func TestProxyForwardsWhatItGetsAndNothingMore(t *testing.T) {
	seen := make(chan string, 8)
	addr := rawBackend(t, func(_ int, req *http.Request, w io.Writer) bool {
		seen <- req.RequestURI
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n<html><b>x</b></html>")
		return true
	})
	_, url := startHTTP(t, DefaultConfig(), []Route{route("a", addr)}, nil)

	for _, uri := range []string{"/a?b=2&a=1&bad=%zz", "/a?a=1;b=2", "/a?sig=ab%2bcd&x=%G1", "/a%2Fb//c"} {
		resp, err := rawExchange(t, url, "GET "+uri+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", uri, resp, err)
		}
		if got := <-seen; got != uri {
			t.Errorf("client sent %s, backend saw %s", uri, got)
		}
		if ct, ok := resp.Header["Content-Type"]; ok {
			t.Errorf("%s: the proxy invented Content-Type %q", uri, ct)
		}
	}

	resp, err := rawExchange(t, url, "CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n")
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("CONNECT: %v %v, want 405", resp, err)
	}
	select {
	case uri := <-seen:
		t.Errorf("CONNECT reached the backend as %s", uri)
	default:
	}
}

// Bytes a client sends right behind its upgrade request, before the 101,
// sit in the server's buffer; they must still reach the backend.
func TestBytesBehindAnUpgradeRequestReachTheBackend(t *testing.T) {
	be := upgradeBackend(t, "echo", func(conn net.Conn, brw *bufio.ReadWriter) { io.Copy(conn, brw) })
	_, url := startHTTP(t, DefaultConfig(), []Route{route("a", hostPort(be.URL))}, nil)
	c, err := net.Dial("tcp", hostPort(url))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly")
	br := bufio.NewReader(c)
	if up, err := http.ReadResponse(br, nil); err != nil || up.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", up, err)
	}
	echo := make([]byte, len("early"))
	if _, err := io.ReadFull(br, echo); err != nil || string(echo) != "early" {
		t.Errorf("bytes sent behind the upgrade request: echoed %q, %v", echo, err)
	}
}
