package responder

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// ualpnMaxLine bounds one command: an identifier (253 bytes at most) and a
// 43-character digest fit many times over.
const ualpnMaxLine = 1024

// ualpnIdle closes a socket client that sends nothing for this long.
const ualpnIdle = 30 * time.Second

// ualpnAuthTTL withdraws a challenge published on the socket that was
// never unauthed (a hook that died between "begin" and "done"): a CA
// validates within minutes, and a challenge left pending would keep
// steering off for good.
const ualpnAuthTTL = 30 * time.Minute

// ServeUALPN speaks ualpn's socket protocol on ln until ctx ends, so that
// an ACME client's hook written for ualpn (uacme's ualpn.sh, which runs
// "echo 'auth NAME DIGEST' | ualpn") drives this responder instead. The
// protocol is ualpn's (see ualpn(1), CLIENT MODE): ASCII lines,
//
//	auth IDENTIFIER DIGEST   publish a challenge for IDENTIFIER (a name or
//	                         an IP address); DIGEST is base64url SHA-256 of
//	                         the key authorization, as uacme passes it
//	unauth IDENTIFIER        withdraw it
//
// each answered by one line, "OK" or "ERR " and the reason. An auth for an
// identifier that this socket already published replaces it; an auth for
// a name whose challenge another source (tlsalpn's own renewal) holds is
// refused. Challenges are published as Offer does: steering has turned to
// relay before "OK" is sent, so the hook's client may tell the CA at once.
// Challenges still published when ServeUALPN returns are withdrawn.
func (r *Responder) ServeUALPN(ctx context.Context, ln net.Listener) error {
	s := &ualpnServer{r: r, held: map[string]*ualpnAuth{}}
	defer s.withdrawAll()
	var wg sync.WaitGroup
	defer wg.Wait()
	return acceptEach(ctx, ln, "ualpn connections", func(conn net.Conn) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(ctx, conn)
		}()
	})
}

type ualpnServer struct {
	r    *Responder
	mu   sync.Mutex
	held map[string]*ualpnAuth // by normalised server name
}

// ualpnAuth is one challenge published on the socket.
type ualpnAuth struct {
	withdraw func()
	expire   *time.Timer
}

func (a *ualpnAuth) release() {
	if a.expire != nil {
		a.expire.Stop()
	}
	a.withdraw()
}

func (s *ualpnServer) withdrawAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.held {
		s.withdrawLocked(name)
	}
}

// withdrawLocked withdraws the challenge published on the socket for
// name, if there is one, and reports whether there was; s.mu is held. Its
// expiry goes with it, so that it cannot withdraw a later auth's.
func (s *ualpnServer) withdrawLocked(name string) bool {
	a := s.held[name]
	if a == nil {
		return false
	}
	a.release()
	delete(s.held, name)
	return true
}

func (s *ualpnServer) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 256), ualpnMaxLine)
	for {
		conn.SetDeadline(time.Now().Add(ualpnIdle))
		if !sc.Scan() {
			if err := sc.Err(); err != nil {
				fmt.Fprintf(conn, "ERR %v\n", err)
			}
			return
		}
		reply := "OK"
		if err := s.command(ctx, strings.TrimSuffix(sc.Text(), "\r")); err != nil {
			s.r.logger.Warn("ualpn socket: command refused", "error", err)
			reply = "ERR " + err.Error()
		}
		if _, err := fmt.Fprintf(conn, "%s\n", reply); err != nil {
			return
		}
	}
}

// command carries out one line of the protocol.
func (s *ualpnServer) command(ctx context.Context, line string) error {
	f := strings.Fields(line)
	switch {
	case len(f) == 3 && f[0] == "auth":
		id, err := challenge.ParseIdentifier(f[1])
		if err != nil {
			return fmt.Errorf("auth %s: %w", f[1], err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(f[2], "="))
		if err != nil || len(raw) != 32 {
			return fmt.Errorf("auth %s: the authorization must be the base64url SHA-256 digest of the key authorization (43 characters), got %q", f[1], f[2])
		}
		cert, err := challenge.BuildFromHash(id, [32]byte(raw))
		if err != nil {
			return fmt.Errorf("auth %s: %w", f[1], err)
		}
		name := challenge.ServerName(id)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.withdrawLocked(name)
		w, err := s.r.Offer(ctx, name, cert)
		if err != nil {
			return fmt.Errorf("auth %s: %w", f[1], err)
		}
		a := &ualpnAuth{withdraw: w}
		s.held[name] = a
		a.expire = time.AfterFunc(s.r.ualpnTTL, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.held[name] == a && s.withdrawLocked(name) {
				s.r.logger.Warn("ualpn socket: challenge withdrawn: no unauth came for it", "identifier", id.Value, "after", s.r.ualpnTTL)
			}
		})
		s.r.logger.Info("ualpn socket: challenge published", "identifier", id.Value)
		return nil
	case len(f) == 2 && f[0] == "unauth":
		id, err := challenge.ParseIdentifier(f[1])
		if err != nil {
			return fmt.Errorf("unauth %s: %w", f[1], err)
		}
		name := challenge.ServerName(id)
		s.mu.Lock()
		defer s.mu.Unlock()
		// Withdrawing what is not published is done, as Unpublish
		// has it: uacme runs "unauth" after a failed "auth" too.
		if s.withdrawLocked(name) {
			s.r.logger.Info("ualpn socket: challenge withdrawn", "identifier", id.Value)
		}
		return nil
	}
	return fmt.Errorf("unknown command %q: want \"auth IDENTIFIER DIGEST\" or \"unauth IDENTIFIER\"", line)
}
