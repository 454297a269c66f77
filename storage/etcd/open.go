package etcd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Open connects to etcd (within DialTimeout, or ctx's deadline if sooner) and, with an
// encryption key, checks it against the data under the prefix: if the data was sealed with
// another key, Open fails with ErrWrongKey and has written nothing. The first Open with a key
// under a prefix records a check value (created with a compare-and-swap, so two first nodes
// agree on one key). Without a key, Open only reads, to fail now if etcd refuses us.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dialTimeout := cfg.DialTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < dialTimeout {
		dialTimeout = max(time.Until(d), time.Millisecond)
	}
	ccfg := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: dialTimeout,
		// Above etcd's --grpc-keepalive-min-time (5 s by default): a ping
		// every 5 s is sometimes early by a hair, and etcd then closes the
		// connection (GOAWAY "too_many_pings") and every call on it fails.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		PermitWithoutStream:  true,
		MaxCallSendMsgSize:   maxSendMsgSize,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Logger:               zap.NewNop(),
		// Block in Open until a member is connected, and say why none could be: "x509:
		// certificate signed by unknown authority" tells an operator what to fix, "context
		// deadline exceeded" does not.
		DialOptions: []grpc.DialOption{
			grpc.WithBlock(), grpc.WithReturnConnectionError(), //nolint:staticcheck // supported throughout grpc 1.x
			// grpc's default reconnection backoff grows to two minutes: after a long outage,
			// a node would go on failing that long once etcd is back. Trying every second
			// at most costs a connection attempt per member per second while etcd is down.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMax},
				MinConnectTimeout: 5 * time.Second,
			}),
		},
	}
	if cfg.CAFile != "" || cfg.CertFile != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		ccfg.TLS = tc
	}
	s := &Store{cfg: cfg, root: cfg.Prefix + "/", log: cfg.Logger}
	if cfg.EncryptionKey != nil {
		var err error
		if s.sealer, err = newSealer(cfg.EncryptionKey); err != nil {
			return nil, err
		}
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		if kind(err) == nil {
			// Nothing answered as an etcd that takes our connection: down, or TLS settings
			// that do not match the cluster's.
			err = fmt.Errorf("%w (no connection within %v; check the endpoints and the TLS settings): %w", ErrUnavailable, dialTimeout, err)
		}
		return nil, fmt.Errorf("storage/etcd: connect to %s: %w", strings.Join(cfg.Endpoints, ","), withKind(err))
	}
	s.cli = cli
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.eph.done = make(chan struct{})
	s.lockSessions = make(map[*concurrency.Session]struct{})
	if s.sealer != nil {
		if err := s.checkKey(ctx); err != nil {
			s.Close()
			return nil, err
		}
	} else if err := s.ping(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// withKind wraps err with its kind, if it has one.
func withKind(err error) error {
	if k := kind(err); k != nil && !errors.Is(err, k) {
		return fmt.Errorf("%w: %w", k, err)
	}
	return err
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("storage/etcd: etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("storage/etcd: etcd CA %s: no PEM certificate in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("storage/etcd: etcd client certificate %s, key %s: %w", cfg.CertFile, cfg.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// ping reads one key, so that Open fails on the spot when etcd refuses us or is not there.
func (s *Store) ping(ctx context.Context) error {
	return s.do(ctx, func(ctx context.Context) error {
		_, err := s.cli.Get(ctx, s.root+checkKey)
		return err
	}, func(err error) error { return fmt.Errorf("storage/etcd: open %s: %w", s.describe(), err) })
}

func (s *Store) describe() string {
	return "etcd://" + strings.Join(s.cfg.Endpoints, ",") + "/" + s.cfg.Prefix
}

// checkKey compares the encryption key with the check value under the prefix, creating it if
// there is none.
func (s *Store) checkKey(ctx context.Context) error {
	k := s.root + checkKey
	mine, err := s.sealer.seal(checkKey, []byte(checkPlain), time.Now(), 0o600)
	if err != nil {
		return err
	}
	var stored []byte
	err = s.do(ctx, func(ctx context.Context) error {
		r, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, string(mine))).
			Else(clientv3.OpGet(k)).Commit()
		if err != nil {
			return err
		}
		stored = nil
		if !r.Succeeded {
			if kvs := r.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
				stored = kvs[0].Value
			}
		}
		return nil
	}, func(err error) error {
		return fmt.Errorf("storage/etcd: open %s: check the encryption key: %w", s.describe(), err)
	})
	if err != nil {
		return err
	}
	if stored == nil || bytes.Equal(stored, mine) {
		s.log.Info("storage/etcd: encryption key recorded", "prefix", s.cfg.Prefix, "key_id", KeyID(s.cfg.EncryptionKey))
		return nil
	}
	d, err := decode(stored)
	if err == nil && d.sealed {
		if _, err := s.sealer.open(checkKey, d); err == nil {
			return nil
		}
		return fmt.Errorf("storage/etcd: open %s: %w: the data is sealed with key id %x, this key's id is %s (nothing was written)",
			s.describe(), ErrWrongKey, d.keyID, KeyID(s.cfg.EncryptionKey))
	}
	return fmt.Errorf("storage/etcd: open %s: %w: the check value %q is damaged (nothing was written)", s.describe(), ErrWrongKey, s.root+checkKey)
}

// Close ends the sessions (revoking their leases: ephemeral keys and held locks go at once),
// stops the watches and closes the connection. Calls after the first do nothing.
func (s *Store) Close() error {
	if s.closing.Swap(true) {
		return nil
	}
	// Sessions first: revoking needs the Store's context, which cancel ends.
	s.eph.close()
	s.lockMu.Lock()
	held := s.lockSessions
	s.lockSessions = nil
	s.lockMu.Unlock()
	for sess := range held {
		sess.Close()
	}
	s.cancel()
	s.wg.Wait()
	return s.cli.Close()
}
