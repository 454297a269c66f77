package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tlsalpn/tlsalpn/cluster"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/storage"
)

const listUsage = `
Usage: tlsalpn list [--json] [--storage DIR]

Shows every stored certificate by its certificate name: the names it
covers, the CA it comes from, its expiry and days left, when it renews (the
CA's ARI window when known), where it is deployed, and its state:
  ok             renewed on schedule by "tlsalpn renew" or serve
  REVOKED        revoked: renew leaves it; issue again for a new one
  EXPIRED        past its end; the next renew run renews it
  DEPLOY FAILED  stored, but the last deployment failed (renew retries it)
  retired        another certificate took over its output directory; kept,
                 not renewed (tlsalpn delete NAME removes it)
  DAMAGED        its stored files are unreadable or do not match: renew
                 fails on it until it is repaired, re-issued or deleted
On a cluster's storage (etcd) a last column, RENEWED BY, names the live
node that renews each certificate (of the nodes that keep it, the one the
renewals are spread to), or "any node" when no live node keeps it; the
live nodes follow the table.
It reads storage only and never contacts the CA.

Examples:
  tlsalpn list
  tlsalpn list --storage /var/lib/tlsalpn
  tlsalpn list --json | jq -r '.[] | select(.days_left < 20) | .cert_name'

Exit codes: 0 listed (even if some are damaged: the table says so),
1 storage unreadable, 2 usage error.
`

// listEntry is one row of "tlsalpn list --json"; its field names are a
// stable interface for scripts.
type listEntry struct {
	CertName  string     `json:"cert_name"`
	State     string     `json:"state"`
	Names     []string   `json:"names"`
	CA        string     `json:"ca"`
	Issuer    string     `json:"issuer"`
	Serial    string     `json:"serial"`
	NotBefore time.Time  `json:"not_before"`
	NotAfter  time.Time  `json:"not_after"`
	DaysLeft  float64    `json:"days_left"`
	Profile   string     `json:"profile,omitempty"`
	KeyType   string     `json:"key_type"`
	RenewAt   *time.Time `json:"renew_at,omitempty"`
	ARIStart  *time.Time `json:"ari_window_start,omitempty"`
	ARIEnd    *time.Time `json:"ari_window_end,omitempty"`
	Out       string     `json:"out,omitempty"`
	Revoked   bool       `json:"revoked"`
	// RetiredBy names the certificate that took over Out.
	RetiredBy string `json:"retired_by,omitempty"`
	// DeployError says why the last deployment of this certificate
	// failed; the server may still have the previous one until a renewal
	// run (tlsalpn renew, or serve's keeper) deploys it again.
	DeployError string `json:"deploy_error,omitempty"`
	// Damaged says what is wrong with a stored certificate that cannot
	// be read; the other fields are then empty.
	Damaged string `json:"damaged,omitempty"`
	// RenewedBy, on a cluster's storage only, is the id of the live node
	// that renews this certificate (of those that keep it, the one
	// cluster.Owner picks), or "any node" when no live node is registered
	// as keeping it: then whichever node has it configured orders it,
	// one at a time under its lock.
	RenewedBy string `json:"renewed_by,omitempty"`
}

// anyNode is RenewedBy when no live node keeps the certificate.
const anyNode = "any node"

func runList(ctx context.Context, e *env, args []string) error {
	var cf caFlags
	var asJSON bool
	fs := newFlagSet(e, "list", listUsage)
	cf.register(fs, false)
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	if err := fs.parse(args, 0); err != nil {
		return err
	}
	st, err := openStorage(ctx, e, &cf.storageFlags, mustExist, cf.logger(e))
	if err != nil {
		return err
	}
	defer st.Close()
	store := st.store
	m := manager.New(store, nil, cf.logger(e))
	all, bad, err := m.List(ctx)
	if err != nil {
		return err
	}
	// In a cluster, which node renews each certificate: read once, so
	// that every row is decided from the same list of nodes.
	_, inCluster := store.(storage.Ephemeral)
	var nodes []cluster.Info
	if inCluster {
		if nodes, err = cluster.Nodes(ctx, store); err != nil {
			return err
		}
	}
	now := time.Now()
	entries := make([]listEntry, 0, len(all)+len(bad))
	for _, s := range all {
		le := entryFor(s, now)
		if inCluster {
			le.RenewedBy = cmp.Or(cluster.Renewer(le.CertName, nodes), anyNode)
		}
		entries = append(entries, le)
	}
	for _, d := range bad {
		entries = append(entries, listEntry{CertName: d.Name, State: "DAMAGED", Damaged: d.Error()})
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	if len(entries) == 0 {
		fmt.Fprintf(e.stdout, "no certificates in %s\n", st.where())
		return printNodes(ctx, e.stdout, store)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	renewedBy := func(le listEntry) string { return "" }
	if inCluster {
		fmt.Fprintln(tw, "CERTIFICATE\tNAMES\tCA\tEXPIRES\tDAYS LEFT\tRENEWS\tOUT\tSTATE\tRENEWED BY")
		renewedBy = func(le listEntry) string { return "\t" + cmp.Or(le.RenewedBy, "-") }
	} else {
		fmt.Fprintln(tw, "CERTIFICATE\tNAMES\tCA\tEXPIRES\tDAYS LEFT\tRENEWS\tOUT\tSTATE")
	}
	for _, le := range entries {
		if le.Damaged != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t%s%s\n", le.CertName, le.State, renewedBy(le))
			continue
		}
		renews := "-"
		switch {
		case le.ARIStart != nil:
			renews = le.ARIStart.Local().Format("2006-01-02 15:04") + " – " + le.ARIEnd.Local().Format("2006-01-02 15:04") + " (ARI)"
		case le.RenewAt != nil:
			renews = le.RenewAt.Local().Format("2006-01-02")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s%s\n", le.CertName, strings.Join(le.Names, ","), caHost(le.CA),
			le.NotAfter.Local().Format("2006-01-02 15:04"), le.DaysLeft, renews, orDash(le.Out), le.State, renewedBy(le))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, le := range entries {
		switch {
		case le.Damaged != "":
			fmt.Fprintf(e.stdout, "%s: %s; renew fails until it is re-issued (tlsalpn issue --force --cert-name %s …) or deleted (tlsalpn delete %s)\n",
				le.CertName, le.Damaged, le.CertName, le.CertName)
		case le.DeployError != "":
			fmt.Fprintf(e.stdout, "%s: serial %s is stored but its deployment failed (tlsalpn renew retries it): %s\n",
				le.CertName, le.Serial, le.DeployError)
		case le.RetiredBy != "":
			fmt.Fprintf(e.stdout, "%s: retired, %s took over %s; it is kept but not renewed (tlsalpn delete %s removes it)\n",
				le.CertName, le.RetiredBy, le.Out, le.CertName)
		}
	}
	// In a cluster, the nodes that serve and renew these certificates.
	return printNodes(ctx, e.stdout, store)
}

func entryFor(s *manager.Stored, now time.Time) listEntry {
	le := listEntry{
		CertName: s.Name(), State: "ok",
		Names: s.Names, CA: s.CA, Issuer: s.Issuer, Serial: s.Serial, NotBefore: s.NotBefore, NotAfter: s.NotAfter,
		DaysLeft: float64(int(s.Remaining(now).Hours()/24*10)) / 10, Profile: s.Profile, KeyType: string(s.KeyType),
		Out: s.Out, Revoked: !s.Revoked.IsZero(),
	}
	if at := s.RenewsAround(); !at.IsZero() {
		le.RenewAt = &at
	}
	if a := s.ARI; a != nil && !a.Unavailable && a.CertSerial == s.Serial && !a.Start.IsZero() && le.RenewAt != nil {
		start, end := a.Start, a.End
		le.ARIStart, le.ARIEnd = &start, &end
	}
	if d := s.Deployed; d != nil && d.Error != "" {
		le.DeployError = d.Error
	}
	switch {
	case s.Retired != nil:
		le.State, le.RetiredBy, le.Out = "retired", s.Retired.By, s.Retired.Out
	case le.Revoked:
		le.State = "REVOKED"
	case le.DaysLeft < 0:
		le.State = "EXPIRED"
	case le.DeployError != "":
		le.State = "DEPLOY FAILED"
	}
	return le
}

// caHost is the CA as people name it: the host of its directory URL.
func caHost(directory string) string {
	if u, err := url.Parse(directory); err == nil && u.Host != "" {
		return u.Host
	}
	return directory
}
