package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
)

// The command line and a running "tlsalpn serve" talk through storage,
// not a socket: in cluster mode the storage is etcd and the serve that
// manages a certificate may run on another node, and the same keys work
// there. serve announces itself in a lease (serveLeasePrefix/<host>.json);
// "tlsalpn renew" of a certificate a live serve manages writes a request
// (renewRequestPrefix/<id>.json), serve renews through the port it holds
// and writes the outcome into the request, and the command line prints it
// and deletes the request.
const (
	serveLeasePrefix   = "serve"
	renewRequestPrefix = "requests/renew"
	// leaseRefresh is how often serve rewrites its lease; a lease not
	// rewritten for leaseStale belongs to a serve that is gone (or
	// stuck), even if its pid was reused.
	leaseRefresh = 30 * time.Second
	leaseStale   = 3 * leaseRefresh
	// requestMaxAge drops requests nobody answered (no serve read them)
	// or nobody collected (the command line was killed).
	requestMaxAge = 5 * time.Minute
	// acceptWithin is how long a live serve may take to notice a request
	// (it watches storage, polled every few seconds) before the command
	// line gives up on it, rather than wait for --timeout.
	acceptWithin = 20 * time.Second
)

// certIDOfKey returns the certificate name whose record a storage key is,
// for telling which certificate a storage change concerns: a certificate
// is named by its certificate name (manager.Spec.ID) in a serve lease, in
// a renewal request and in storage (lineages/<name>/meta.json).
func certIDOfKey(key string) (string, bool) {
	parts := strings.Split(key, "/")
	if len(parts) != 3 || parts[0] != storage.LineagesPrefix || parts[2] != "meta.json" {
		return "", false
	}
	return parts[1], true
}

// serveLease is what a running serve says about itself.
type serveLease struct {
	Host         string      `json:"host"`
	PID          int         `json:"pid"`
	Listen       string      `json:"listen"`
	Certificates []leaseCert `json:"certificates"`
	Started      time.Time   `json:"started"`
	Refreshed    time.Time   `json:"refreshed"`
}

type leaseCert struct {
	ID    string   `json:"id"`
	Names []string `json:"names"`
}

func (l *serveLease) String() string {
	host, _ := os.Hostname()
	if l.Host == host {
		return fmt.Sprintf("tlsalpn serve (pid %d)", l.PID)
	}
	return fmt.Sprintf("tlsalpn serve (pid %d on %s)", l.PID, l.Host)
}

// manages reports whether l keeps the certificate id.
func (l *serveLease) manages(id string) bool {
	for _, c := range l.Certificates {
		if c.ID == id {
			return true
		}
	}
	return false
}

// live reports whether l's serve is running: refreshed lately and, on
// this host, with its process still there.
func (l *serveLease) live(now time.Time) bool {
	if now.Sub(l.Refreshed) > leaseStale {
		return false
	}
	host, _ := os.Hostname()
	if l.Host != host {
		return true
	}
	if l.PID <= 0 {
		return false
	}
	return processAlive(l.PID)
}

func leaseKey(host string) string { return serveLeasePrefix + "/" + host + ".json" }

// liveServes returns the leases of the serves running on store.
func liveServes(ctx context.Context, store storage.Storage) ([]*serveLease, error) {
	keys, err := store.List(ctx, serveLeasePrefix, false)
	if err != nil {
		return nil, fmt.Errorf("listing running serves: %w", err)
	}
	var out []*serveLease
	now := time.Now()
	for _, k := range keys {
		data, err := store.Get(ctx, k)
		if errors.Is(err, storage.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading serve lease %s: %w", k, err)
		}
		l := &serveLease{}
		if err := json.Unmarshal(data, l); err != nil {
			continue // a damaged lease announces nobody
		}
		if l.live(now) {
			out = append(out, l)
		}
	}
	return out, nil
}

// renewRequest asks the serve that manages a certificate to renew it.
type renewRequest struct {
	ID     string `json:"id"`
	Cert   string `json:"cert"` // certID
	Name   string `json:"name"`
	Serial string `json:"serial"` // the stored certificate the requester saw
	Force  bool   `json:"force"`
	Reason string `json:"reason"`
	// Deadline is when the requester stops waiting; serve does not work
	// past it.
	Deadline  time.Time `json:"deadline"`
	Requested time.Time `json:"requested"`
	By        string    `json:"by"` // host and pid, for the log
	// To is the host of the serve asked, so that of several serves
	// keeping the certificate (a cluster) one does the work.
	To string `json:"to"`
	// Accepted is when serve began to carry it out: a request not
	// accepted within acceptWithin means the serve is not listening.
	Accepted time.Time `json:"accepted,omitzero"`

	Result *renewOutcome `json:"result,omitempty"`
}

// renewOutcome is what serve did about a request.
type renewOutcome struct {
	// Serial and NotAfter describe the stored certificate after: the new
	// one, or the one another process had stored already (ByOther).
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	ByOther  bool      `json:"by_other,omitempty"`
	// Error says why nothing was renewed; DeployError why the renewed
	// certificate was stored but not deployed.
	Error       string    `json:"error,omitempty"`
	DeployError string    `json:"deploy_error,omitempty"`
	Server      string    `json:"server"`
	Done        time.Time `json:"done"`
}

func requestKey(id string) string { return renewRequestPrefix + "/" + id + ".json" }

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func putRequest(ctx context.Context, store storage.Storage, req *renewRequest) error {
	data, err := json.MarshalIndent(req, "", "  ")
	if err != nil {
		return err
	}
	if err := store.Put(ctx, requestKey(req.ID), data, 0o600); err != nil {
		return fmt.Errorf("writing renewal request for %s: %w", req.Name, err)
	}
	return nil
}

func getRequest(ctx context.Context, store storage.Storage, key string) (*renewRequest, error) {
	data, err := store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	req := &renewRequest{}
	if err := json.Unmarshal(data, req); err != nil {
		return nil, fmt.Errorf("renewal request %s is damaged: %w", key, err)
	}
	return req, nil
}

// requestRenewal hands the renewal of the certificate id (first name
// name, stored serial) to the serve that holds lease, and waits, until
// ctx ends, for its outcome. The request is deleted whatever happens.
func requestRenewal(ctx context.Context, store storage.Storage, lease *serveLease, id, name, serial string, force bool, reason string) (*renewOutcome, error) {
	host, _ := os.Hostname()
	req := &renewRequest{ID: newRequestID(), Cert: id, Name: name, Serial: serial, Force: force, Reason: reason,
		Requested: time.Now().UTC(), By: fmt.Sprintf("%s pid %d", host, os.Getpid()), To: lease.Host}
	if d, ok := ctx.Deadline(); ok {
		req.Deadline = d.UTC()
	}
	if err := putRequest(ctx, store, req); err != nil {
		return nil, err
	}
	// A request is small and lives seconds: deleting it with a context of
	// its own keeps an interrupted renew from leaving it behind.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		store.Delete(dctx, requestKey(req.ID))
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
			return nil, fmt.Errorf("waiting for %s to renew %s: %w", lease, name, context.Cause(ctx))
		case <-unaccepted:
			if !accepted {
				return nil, fmt.Errorf("%s did not take the request to renew %s within %s, although its lease says it runs: is it stuck? (see its log)", lease, name, acceptWithin)
			}
			continue
		case <-t.C:
		}
		cur, err := getRequest(ctx, store, requestKey(req.ID))
		switch {
		case errors.Is(err, storage.ErrNotExist):
			return nil, fmt.Errorf("%s dropped the request to renew %s without an answer", lease, name)
		case err != nil:
			return nil, fmt.Errorf("waiting for %s to renew %s: %w", lease, name, err)
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
	serves, lerr := liveServes(ctx, store)
	if lerr != nil {
		return err
	}
	for _, l := range serves {
		if samePort(l.Listen, listen) {
			return &heldByServeError{port: portOf(listen), serve: l, name: name, manages: l.manages(id), err: err}
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

func (e *heldByServeError) Error() string {
	if e.manages {
		return fmt.Sprintf("port %s is held by %s, which manages %s already: it renews it on its own, and tlsalpn renew --force has it renew now",
			e.port, e.serve, e.name)
	}
	return fmt.Sprintf("port %s is held by %s, which does not manage %s: add it to that serve's certificates "+
		"(its config file, then SIGHUP or systemctl reload) and serve obtains it through the port it holds, or stop that serve while issuing",
		e.port, e.serve, e.name)
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
	serves, err := liveServes(ctx, store)
	if err != nil {
		return nil
	}
	for _, l := range serves {
		if l.manages(id) {
			return usagef("%s keeps %s as its config file says, and would undo this %s within seconds: "+
				"change its certificates in the config file, then reload it (SIGHUP, or systemctl reload)", l, id, what)
		}
	}
	return nil
}
