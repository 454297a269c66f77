package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
       tlsalpn list --expiring-within DURATION [--json] [--storage DIR]

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

Monitoring (--expiring-within, e.g. from cron or as a Nagios check): instead
of the table, one line per certificate that expires within DURATION (30d or
720h) or has expired, whose last deployment failed (the server has an older
one), or that is damaged; exit 1 when there is any such line, else one "OK:"
line. Revoked and retired certificates are not renewed by
design and are left out. This is "check --expiring-within" for what is
stored here, without a connection.

Examples:
  tlsalpn list
  tlsalpn list --storage /var/lib/tlsalpn
  tlsalpn list --json | jq -r '.[] | select(.days_left < 20) | .cert_name'
  tlsalpn list --expiring-within 14d || mail -s "certificates expiring" root

Exit codes: 0 listed (even if some are damaged: the table says so; with
--expiring-within, nothing to report), 1 storage unreadable, or with
--expiring-within some certificate to report, 2 usage error.
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
	var expiringWithin string
	fs := newFlagSet(e, "list", listUsage)
	cf.register(fs, false)
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	fs.StringVar(&expiringWithin, "expiring-within", "", "print only the certificates that expire within this `DURATION` (e.g. 14d or 336h), have expired, failed to deploy or are damaged, and exit 1 if there is any: for cron and Nagios")
	if err := fs.parse(args, 0); err != nil {
		return err
	}
	var within time.Duration
	if expiringWithin != "" {
		var err error
		if within, err = parseDays(expiringWithin); err != nil {
			return usagef("--expiring-within: %v", err)
		}
	}
	st, err := openStorage(ctx, e, &cf.storageFlags, mustExist, cf.logger(e))
	if err != nil {
		return err
	}
	defer st.Close()
	store := st.store
	entries, inCluster, err := listEntries(ctx, store, cf.logger(e))
	if err != nil {
		return err
	}
	now := time.Now()
	if expiringWithin != "" {
		return listExpiring(e, entries, now, within, expiringWithin, asJSON)
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
	if err := printListTable(e, entries, inCluster); err != nil {
		return err
	}
	// In a cluster, the nodes that serve and renew these certificates.
	return printNodes(ctx, e.stdout, store)
}

// listEntries reads every stored certificate (and the damaged ones) as
// list shows them. On a cluster's storage it also says which node renews
// each, decided from one reading of the node list so that every row
// agrees, and reports that the storage is a cluster's.
func listEntries(ctx context.Context, store storage.Storage, logger *slog.Logger) ([]listEntry, bool, error) {
	m := manager.New(store, nil, logger)
	all, bad, err := m.List(ctx)
	if err != nil {
		return nil, false, err
	}
	_, inCluster := store.(storage.Ephemeral)
	var nodes []cluster.Info
	if inCluster {
		if nodes, err = cluster.Nodes(ctx, store); err != nil {
			return nil, false, err
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
	return entries, inCluster, nil
}

// printListTable prints the entries for people: a table (with a RENEWED
// BY column in a cluster), then a line for each that needs someone.
func printListTable(e *env, entries []listEntry, inCluster bool) error {
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
	return nil
}

// listExpiring prints, one line each, the entries that need someone: a
// certificate that expires within the threshold (or has expired) and is
// still meant to be renewed, or one that is damaged and cannot be renewed
// until repaired. Any such entry makes the command exit 1, as check
// --expiring-within does, so that cron mails it and Nagios warns.
func listExpiring(e *env, entries []listEntry, now time.Time, within time.Duration, spelled string, asJSON bool) error {
	var flagged []listEntry
	var expiring, damaged, undeployed int
	for _, le := range entries {
		switch {
		case le.Damaged != "":
			damaged++
		case le.Revoked || le.RetiredBy != "":
			// Neither is renewed, on purpose: revoke and a new
			// certificate over the same output say so.
			continue
		case le.NotAfter.Sub(now) < within:
			expiring++
		case le.DeployError != "":
			// The stored certificate is fresh, but the server still has
			// an older one, which this cannot see expire.
			undeployed++
		default:
			continue
		}
		flagged = append(flagged, le)
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(flagged); err != nil {
			return err
		}
	} else {
		for _, le := range flagged {
			switch {
			case le.Damaged != "":
				fmt.Fprintf(e.stdout, "%s: DAMAGED: %s\n", le.CertName, le.Damaged)
			case le.State == "EXPIRED":
				fmt.Fprintf(e.stdout, "%s: EXPIRED %s (%s ago), names %s\n", le.CertName,
					le.NotAfter.UTC().Format("2006-01-02 15:04 UTC"), roughAgo(now.Sub(le.NotAfter)), strings.Join(le.Names, ","))
			case le.NotAfter.Sub(now) < within:
				fmt.Fprintf(e.stdout, "%s: expires %s (in %s), names %s\n", le.CertName,
					le.NotAfter.UTC().Format("2006-01-02 15:04 UTC"), roughAgo(le.NotAfter.Sub(now)), strings.Join(le.Names, ","))
			default:
				fmt.Fprintf(e.stdout, "%s: DEPLOY FAILED: serial %s is stored but not deployed, the server has an older certificate: %s\n",
					le.CertName, le.Serial, le.DeployError)
			}
		}
		if len(flagged) == 0 {
			fmt.Fprintf(e.stdout, "OK: none of %d certificates expires within %s\n", len(entries), spelled)
		}
	}
	var parts []string
	if expiring > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d certificates expire within %s", expiring, len(entries), spelled))
	}
	if undeployed > 0 {
		parts = append(parts, fmt.Sprintf("%d are not deployed", undeployed))
	}
	if damaged > 0 {
		parts = append(parts, fmt.Sprintf("%d are damaged", damaged))
	}
	if len(parts) > 0 {
		return &exitError{code: exitFailure, err: errors.New(strings.Join(parts, "; "))}
	}
	return nil
}

// roughAgo spells a duration as people read an expiry: days and hours.
func roughAgo(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	days, hours := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
	if days == 0 {
		return fmt.Sprintf("%dh", hours)
	}
	return fmt.Sprintf("%dd %dh", days, hours)
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
