package consensus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// handshakeTimeout bounds a raft TLS handshake on either side, so a
	// peer that connects and says nothing holds no goroutine for long.
	handshakeTimeout = 10 * time.Second
	// maxHandshakes bounds the accepted connections in handshake at once:
	// a flood of connects queues in the kernel instead of growing goroutines.
	maxHandshakes = 64
)

// tlsStream is a raft.StreamLayer over mutual TLS 1.3: both sides present
// a certificate and verify the other's against the cluster's CA, so a node
// without a certificate from that CA can neither send raft RPCs to the
// cluster nor receive them. Both sides also demand a node certificate
// (server and client auth, see requireNodeCert): the operator's
// client-only certificate from the same CA cannot speak raft.
//
// Accepted connections finish their handshake here, in their own
// goroutines, before raft sees them: a slow or refused peer neither stalls
// raft's single accept loop nor shows up in raft's log as a garbled RPC;
// it is logged once, here, with the reason.
//
// The configs can be replaced while the stream runs (setConfig): each
// accepted connection and each dial uses the pair current at its start,
// and connections already established keep theirs.
type tlsStream struct {
	ln   net.Listener
	adv  net.Addr // nil: the bound address
	cfgs atomic.Pointer[streamConfigs]
	log  *slog.Logger

	conns  chan net.Conn // handshaken connections for Accept
	ctx    context.Context
	cancel context.CancelFunc // on Close: ends the accept loop and handshakes
	sem    chan struct{}      // one slot per handshake in progress
	wg     sync.WaitGroup     // the accept loop and the handshakes
}

var _ raft.StreamLayer = (*tlsStream)(nil)

// streamConfigs is the server and client side of one raft TLS setting,
// replaced together so that a handshake never pairs one setting's
// certificate with another's CA.
type streamConfigs struct {
	server *tls.Config
	client *tls.Config
}

// newStreamConfigs derives both sides from cfg, which is not modified.
// Every derived config gets the node-certificate check, so a replaced
// setting cannot drop it.
func newStreamConfigs(cfg *tls.Config) *streamConfigs {
	server := cfg.Clone()
	server.ClientAuth = tls.RequireAndVerifyClientCert
	server.MinVersion = tls.VersionTLS13
	server.VerifyConnection = requireNodeCert(cfg.VerifyConnection)
	// A resumed session skips certificate verification, so a ticket issued
	// before a CA change would let its holder in under the old CA. raft's
	// connections are few and long-lived: resumption saves nothing.
	server.SessionTicketsDisabled = true
	client := cfg.Clone()
	client.MinVersion = tls.VersionTLS13
	client.VerifyConnection = requireNodeCert(cfg.VerifyConnection)
	return &streamConfigs{server: server, client: client}
}

// newTLSStream takes over ln. cfg holds this node's certificate, the CA
// pool peers are verified against (RootCAs and ClientCAs alike) and is not
// modified.
func newTLSStream(ln net.Listener, adv net.Addr, cfg *tls.Config, log *slog.Logger) *tlsStream {
	ctx, cancel := context.WithCancel(context.Background())
	s := &tlsStream{ln: ln, adv: adv, log: log,
		conns: make(chan net.Conn), ctx: ctx, cancel: cancel, sem: make(chan struct{}, maxHandshakes)}
	s.cfgs.Store(newStreamConfigs(cfg))
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

func (s *tlsStream) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		c, err := s.ln.Accept()
		if err != nil {
			<-s.sem
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, say: back off as http.Server does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("raft tls accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			s.handshake(c)
		}()
	}
}

// handshake completes the server side of one connection and hands it to
// Accept, or closes it.
func (s *tlsStream) handshake(c net.Conn) {
	tc := tls.Server(c, s.cfgs.Load().server)
	ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		tc.Close()
		if s.ctx.Err() == nil {
			s.log.Warn("raft: refused a peer without a valid certificate", "remote", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	select {
	case s.conns <- tc:
	case <-s.ctx.Done():
		tc.Close()
	}
}

// Accept returns the next connection whose handshake succeeded. raft calls
// it from its one listening goroutine.
func (s *tlsStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting and waits for handshakes in progress to end. raft
// calls it once when the transport shuts down.
func (s *tlsStream) Close() error {
	s.cancel()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// Addr is the address peers dial: the advertise address when one is set.
func (s *tlsStream) Addr() net.Addr {
	if s.adv != nil {
		return s.adv
	}
	return s.ln.Addr()
}

// Dial connects to a peer and completes the handshake within timeout,
// verifying the peer's certificate against the CA and the dialled host.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	cfg, err := s.dialConfig(string(address))
	if err != nil {
		return nil, fmt.Errorf("raft tls dial %s: %w", address, err)
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft tls dial %s: %w", address, err)
	}
	return c, nil
}

// requireNodeCert returns a tls.Config.VerifyConnection that runs after
// the chain is verified against the CA and refuses a peer whose certificate
// is not a node certificate: raft needs both server and client auth usage.
// Chain verification alone checks only the usage of the side's role, and
// the operator's client certificate (client auth only) from `balancer
// certs` chains to the same CA when -tls-ca and -raft-tls-ca are one file;
// without this check it could send raft RPCs (AppendEntries with a higher
// term, a vote) and bypass the admin API's token. next, if not nil, is the
// caller's own check, run afterwards.
func requireNodeCert(next func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("raft peer presented no certificate")
		}
		if err := nodeUsage(cs.PeerCertificates[0].ExtKeyUsage); err != nil {
			return fmt.Errorf("raft peer certificate %q is not a node certificate: %w", cs.PeerCertificates[0].Subject.CommonName, err)
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
}

// nodeUsage reports what a raft peer's certificate lacks, or nil. An
// explicit "any" usage covers both; a certificate without the extended key
// usage extension is refused, since nothing in it says it is a node's.
func nodeUsage(usages []x509.ExtKeyUsage) error {
	var server, client bool
	for _, u := range usages {
		switch u {
		case x509.ExtKeyUsageAny:
			server, client = true, true
		case x509.ExtKeyUsageServerAuth:
			server = true
		case x509.ExtKeyUsageClientAuth:
			client = true
		}
	}
	switch {
	case !server:
		return errors.New("it lacks server auth usage; the operator's client certificate cannot speak raft")
	case !client:
		return errors.New("it lacks client auth usage, which raft needs to dial its peers")
	}
	return nil
}

// dialConfig is the client config for address: it verifies the dialled
// host unless the caller's config names a server.
func (s *tlsStream) dialConfig(address string) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	cfg := s.cfgs.Load().client
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	return cfg, nil
}

// probe dials address, completes the client handshake, waits for the
// peer's verdict on this node's certificate (awaitRefusal) and hangs up.
//
// Only failures of TLS itself wrap ErrPeerTLS: the peer's certificate, a
// handshake the peer breaks off (a plain-TCP raft hangs up on the
// ClientHello) and the peer's refusal of ours. A peer that cannot be
// reached (refused, unreachable, DNS) or does not answer in time is
// returned as is: it may well have a valid certificate and be retried.
func (s *tlsStream) probe(ctx context.Context, address string, timeout time.Duration) error {
	cfg, err := s.dialConfig(address)
	if err != nil {
		return fmt.Errorf("raft tls dial %s: %w", address, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", address)
	if err != nil {
		return fmt.Errorf("raft tls dial %s: %w", address, err)
	}
	c := tls.Client(raw, cfg)
	defer c.Close()
	if err := c.HandshakeContext(ctx); err != nil {
		var ne net.Error
		if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("raft tls handshake with %s: no answer in time: %w", address, err)
		}
		return fmt.Errorf("%w with %s: %w", ErrPeerTLS, address, err)
	}
	wait := refusalWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	if err := awaitRefusal(c, wait); err != nil {
		return fmt.Errorf("%w with %s: %w", ErrPeerTLS, address, err)
	}
	return nil
}

// refusalWait is how long probe listens after its handshake for the
// peer's verdict on this node's certificate. It must exceed a round trip
// between voters; a peer that accepts sends nothing, so every successful
// check waits this long.
const refusalWait = 500 * time.Millisecond

// awaitRefusal reads from a raft connection whose client handshake just
// completed, for at most wait, and reports whether the peer refused it.
//
// In TLS 1.3 the client's handshake ends before the server has verified
// the client's certificate: a peer that will refuse ours (it trusts another
// CA, or finds ours is no node certificate) still lets the handshake
// succeed here, and sends its alert afterwards. A raft server that accepts
// sends nothing, since it waits for the client's RPC type byte, so a read
// timeout is success; an alert, EOF or reset is a refusal.
func awaitRefusal(c net.Conn, wait time.Duration) error {
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		return nil // data would be odd from a raft server, but it accepted us
	}
	return fmt.Errorf("the peer refused this node's certificate after the handshake (does it trust the same raft CA?): %w", err)
}

// setConfig makes cfg (as for newTLSStream) this node's raft TLS setting
// for the handshakes that start from now on; established connections keep
// the setting they were made with. It refuses, keeping the current
// setting, a cfg that checkTLS refuses or whose certificate is no node
// certificate: peers would refuse every new connection from this node.
func (s *tlsStream) setConfig(cfg *tls.Config) error {
	if err := checkNodeTLS(cfg); err != nil {
		return err
	}
	s.cfgs.Store(newStreamConfigs(cfg))
	return nil
}

// checkNodeTLS is checkTLS plus the certificate's usages: a certificate
// without both server and client auth is one every peer would refuse.
func checkNodeTLS(cfg *tls.Config) error {
	if err := checkTLS(cfg); err != nil {
		return err
	}
	for _, c := range cfg.Certificates {
		leaf := c.Leaf
		if leaf == nil && len(c.Certificate) > 0 {
			var err error
			if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				return fmt.Errorf("-raft-tls-cert: %w", err)
			}
		}
		if leaf == nil {
			return errors.New("-raft-tls-cert: the certificate is empty")
		}
		if err := nodeUsage(leaf.ExtKeyUsage); err != nil {
			return fmt.Errorf("-raft-tls-cert: certificate %q is not a node certificate: %w", leaf.Subject.CommonName, err)
		}
	}
	return nil
}

// checkTLS reports why cfg cannot secure raft, or nil.
func checkTLS(cfg *tls.Config) error {
	switch {
	case len(cfg.Certificates) == 0 && cfg.GetCertificate == nil:
		return errors.New("-raft-tls-cert: raft TLS needs this node's certificate and key")
	case cfg.RootCAs == nil || cfg.ClientCAs == nil:
		return errors.New("-raft-tls-ca: raft TLS needs the CA that signs every node's certificate")
	}
	return nil
}
