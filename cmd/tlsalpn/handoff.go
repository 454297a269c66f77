package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/tlsalpn/tlsalpn/frontdoor"
	"github.com/tlsalpn/tlsalpn/storage"
)

// The lease and request format that the command line shares with a
// running serve lives in frontdoor; these names keep the command's code
// reading as before.
type (
	serveLease   = frontdoor.Lease
	leaseCert    = frontdoor.LeaseCert
	renewRequest = frontdoor.RenewRequest
	renewOutcome = frontdoor.RenewOutcome
)

const (
	leaseStale   = frontdoor.LeaseStale
	acceptWithin = frontdoor.AcceptWithin
)

// requestRenewal hands the renewal of the certificate id (first name
// ctx ends, for its outcome. The request is deleted whatever happens.
func requestRenewal(ctx context.Context, store storage.Storage, lease *serveLease, id, name, serial string, force bool, reason string) (*renewOutcome, error) {
	host, _ := os.Hostname()
	req := &renewRequest{ID: frontdoor.NewRequestID(), Cert: id, Name: name, Serial: serial, Force: force, Reason: reason,
		Requested: time.Now().UTC(), By: fmt.Sprintf("%s pid %d", host, os.Getpid()), To: lease.Host}
	if d, ok := ctx.Deadline(); ok {
		req.Deadline = d.UTC()
	}
	if err := frontdoor.PutRequest(ctx, store, req); err != nil {
		return nil, err
	}
	// A request is small and lives seconds: deleting it with a context of
	// its own keeps an interrupted renew from leaving it behind.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		store.Delete(dctx, frontdoor.RequestKey(req.ID))
	}()
	// Polled rather than watched: one small key, and a poll needs nothing
	// more of the storage than Get.
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	unaccepted := time.After(acceptWithin)
	accepted := false
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s to renew %s: %w", serveName(lease), name, context.Cause(ctx))
		case <-unaccepted:
			if !accepted {
				return nil, fmt.Errorf("%s did not take the request to renew %s within %s, although its lease says it runs: is it stuck? (see its log)", serveName(lease), name, acceptWithin)
			}
			continue
		case <-t.C:
		}
		cur, err := frontdoor.GetRequest(ctx, store, frontdoor.RequestKey(req.ID))
		switch {
		case errors.Is(err, storage.ErrNotExist):
			return nil, fmt.Errorf("%s dropped the request to renew %s without an answer", serveName(lease), name)
		case err != nil:
			return nil, fmt.Errorf("waiting for %s to renew %s: %w", serveName(lease), name, err)
		case cur.Result != nil:
			return cur.Result, nil
		case !cur.Accepted.IsZero():
			accepted = true
		}
	}
}

// servePortError explains err, a failure to bind listen to answer the CA
// for the certificate id (first name name), when the port is held by a
// running tlsalpn serve: the way out is to add the name to that serve, or,
// when it manages the certificate already, to have it renew it. Otherwise
// err is returned as it is.
func servePortError(ctx context.Context, store storage.Storage, err error, id, name, listen string) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	serves, lerr := frontdoor.LiveServes(ctx, store)
	if lerr != nil {
		return err
	}
	for _, l := range serves {
		if samePort(l.Listen, listen) {
			return &heldByServeError{port: portOf(listen), serve: l, name: name, manages: l.Manages(id), err: err}
		}
	}
	return err
}

// heldByServeError is a port that a validation needs held by a tlsalpn
// serve that does not manage the name. Its message replaces the generic
// "another server owns this port" advice, which would say to run the
// serve that is already running.
type heldByServeError struct {
	port    string
	serve   *serveLease
	name    string
	manages bool
	err     error
}

// serveName names a running serve for people by its lease: its pid, and
// its host when that is another.
func serveName(l *serveLease) string {
	host, _ := os.Hostname()
	if l.Host == host {
		return fmt.Sprintf("tlsalpn serve (pid %d)", l.PID)
	}
	return fmt.Sprintf("tlsalpn serve (pid %d on %s)", l.PID, l.Host)
}

func (e *heldByServeError) Error() string {
	if e.manages {
		return fmt.Sprintf("port %s is held by %s, which manages %s already: it renews it on its own, and tlsalpn renew --force has it renew now",
			e.port, serveName(e.serve), e.name)
	}
	return fmt.Sprintf("port %s is held by %s, which does not manage %s: add it to that serve's certificates "+
		"(its config file, then SIGHUP or systemctl reload) and serve obtains it through the port it holds, or stop that serve while issuing",
		e.port, serveName(e.serve), e.name)
}

func (e *heldByServeError) Unwrap() error { return e.err }

func portOf(addr string) string {
	if addr == "" {
		return "443"
	}
	if _, p, err := net.SplitHostPort(addr); err == nil {
		return p
	}
	return addr
}

// samePort reports whether two listen addresses compete for one port: the
// same port, on the same host address or where either is a wildcard.
func samePort(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(defaultListen(a))
	hb, pb, err2 := net.SplitHostPort(defaultListen(b))
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}

func defaultListen(a string) string {
	if a == "" {
		return ":443"
	}
	return a
}

// keptByServe refuses a change that a running serve would undo: it keeps
// the certificate named id as its config file says, so a record deleted or
// reconfigured under it is obtained or deployed again its own way within
// seconds. what names the change, for the message.
func keptByServe(ctx context.Context, store storage.Storage, id, what string) error {
	serves, err := frontdoor.LiveServes(ctx, store)
	if err != nil {
		return nil
	}
	for _, l := range serves {
		if l.Manages(id) {
			return usagef("%s keeps %s as its config file says, and would undo this %s within seconds: "+
				"change its certificates in the config file, then reload it (SIGHUP, or systemctl reload)", serveName(l), id, what)
		}
	}
	return nil
}
