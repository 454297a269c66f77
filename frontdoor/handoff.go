package frontdoor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
)

// The command line and a running "tlsalpn serve" talk through storage,
// not a socket: in cluster mode the storage is etcd and the serve that
// manages a certificate may run on another node, and the same keys work
// there. serve announces itself in a lease (LeasePrefix/<host>.json);
// "tlsalpn renew" of a certificate a live serve manages writes a request
// (RenewRequestPrefix/<id>.json), serve renews through the port it holds
// and writes the outcome into the request, and the command line prints it
// and deletes the request.
const (
	// LeasePrefix holds the serve leases; RenewRequestPrefix the renewal
	// requests.
	LeasePrefix        = "serve"
	RenewRequestPrefix = "requests/renew"
	// LeaseRefresh is how often serve rewrites its lease; a lease not
	// rewritten for LeaseStale belongs to a serve that is gone (or
	// stuck), even if its pid was reused.
	LeaseRefresh = 30 * time.Second
	LeaseStale   = 3 * LeaseRefresh
	// RequestMaxAge drops requests nobody answered (no serve read them)
	// or nobody collected (the command line was killed).
	RequestMaxAge = 5 * time.Minute
	// AcceptWithin is how long a live serve may take to notice a request
	// (it watches storage, polled every few seconds) before the command
	// line gives up on it, rather than wait for --timeout.
	AcceptWithin = 20 * time.Second
)

// CertIDOfKey returns the certificate name whose record a storage key is,
// for telling which certificate a storage change concerns: a certificate
// is named by its certificate name (manager.Spec.ID) in a serve lease, in
// a renewal request and in storage (lineages/<name>/meta.json).
func CertIDOfKey(key string) (string, bool) {
	return storage.LineageOfMetaKey(key)
}

// Lease is what a running serve says about itself.
type Lease struct {
	Host         string      `json:"host"`
	PID          int         `json:"pid"`
	Listen       string      `json:"listen"`
	Certificates []LeaseCert `json:"certificates"`
	Started      time.Time   `json:"started"`
	Refreshed    time.Time   `json:"refreshed"`
}

// LeaseCert is one certificate a lease says its serve keeps.
type LeaseCert struct {
	ID    string   `json:"id"`
	Names []string `json:"names"`
}

// Manages reports whether l keeps the certificate id.
func (l *Lease) Manages(id string) bool {
	for _, c := range l.Certificates {
		if c.ID == id {
			return true
		}
	}
	return false
}

// Live reports whether l's serve is running: refreshed lately and, on
// this host, with its process still there.
func (l *Lease) Live(now time.Time) bool {
	if now.Sub(l.Refreshed) > LeaseStale {
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

// LeaseKey is where the serve on host keeps its lease.
func LeaseKey(host string) string { return LeasePrefix + "/" + host + ".json" }

// LiveServes returns the leases of the serves running on store.
func LiveServes(ctx context.Context, store storage.Storage) ([]*Lease, error) {
	keys, err := store.List(ctx, LeasePrefix, false)
	if err != nil {
		return nil, fmt.Errorf("listing running serves: %w", err)
	}
	var out []*Lease
	now := time.Now()
	for _, k := range keys {
		data, err := store.Get(ctx, k)
		if errors.Is(err, storage.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading serve lease %s: %w", k, err)
		}
		l := &Lease{}
		if err := json.Unmarshal(data, l); err != nil {
			continue // a damaged lease announces nobody
		}
		if l.Live(now) {
			out = append(out, l)
		}
	}
	return out, nil
}

// RenewRequest asks the serve that manages a certificate to renew it.
type RenewRequest struct {
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
	// accepted within AcceptWithin means the serve is not listening.
	Accepted time.Time `json:"accepted,omitzero"`

	Result *RenewOutcome `json:"result,omitempty"`
}

// RenewOutcome is what serve did about a request.
type RenewOutcome struct {
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

// RequestKey is where the renewal request id is kept.
func RequestKey(id string) string { return RenewRequestPrefix + "/" + id + ".json" }

// NewRequestID names a new renewal request: random, so that requests
// from several command lines never collide.
func NewRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// PutRequest writes req where the serve it asks watches.
func PutRequest(ctx context.Context, store storage.Storage, req *RenewRequest) error {
	data, err := json.MarshalIndent(req, "", "  ")
	if err != nil {
		return err
	}
	if err := store.Put(ctx, RequestKey(req.ID), data, 0o600); err != nil {
		return fmt.Errorf("writing renewal request for %s: %w", req.Name, err)
	}
	return nil
}

// GetRequest reads the renewal request at key; a missing one is
// storage.ErrNotExist.
func GetRequest(ctx context.Context, store storage.Storage, key string) (*RenewRequest, error) {
	data, err := store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	req := &RenewRequest{}
	if err := json.Unmarshal(data, req); err != nil {
		return nil, fmt.Errorf("renewal request %s is damaged: %w", key, err)
	}
	return req, nil
}
