package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tlsalpn/tlsalpn/manager"
)

const listUsage = `
Usage: tlsalpn list [--json] [--storage DIR]

Shows every stored certificate: its names, issuer, expiry, days left, the
CA's renewal window (ARI) when known, and the profile. It reads storage only
and never contacts the CA; "tlsalpn renew" refreshes the renewal windows.

Examples:
  tlsalpn list
  tlsalpn list --storage /var/lib/tlsalpn
  tlsalpn list --json | jq -r '.[] | select(.days_left < 14) | .names[0]'   (what expires soon)
`

// listEntry is one row of "tlsalpn list --json"; its field names are a
// stable interface for scripts.
type listEntry struct {
	Names     []string   `json:"names"`
	CA        string     `json:"ca"`
	Issuer    string     `json:"issuer"`
	Serial    string     `json:"serial"`
	NotBefore time.Time  `json:"not_before"`
	NotAfter  time.Time  `json:"not_after"`
	DaysLeft  float64    `json:"days_left"`
	Profile   string     `json:"profile,omitempty"`
	KeyType   string     `json:"key_type"`
	RenewAt   time.Time  `json:"renew_at"`
	ARIStart  *time.Time `json:"ari_window_start,omitempty"`
	ARIEnd    *time.Time `json:"ari_window_end,omitempty"`
	Out       string     `json:"out,omitempty"`
	Revoked   bool       `json:"revoked"`
	// DeployError says why the last deployment of this certificate
	// failed; the server may still have the previous one until a renewal
	// run (tlsalpn renew, or serve's keeper) deploys it again.
	DeployError string `json:"deploy_error,omitempty"`
}

func runList(ctx context.Context, e *env, args []string) error {
	var cf caFlags
	var asJSON bool
	fs := newFlagSet(e, "list", listUsage)
	cf.register(fs, false)
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	if err := fs.parse(args, 0); err != nil {
		return err
	}
	store, err := openStorage(cf.storage)
	if err != nil {
		return err
	}
	m := manager.New(store, nil, cf.logger(e))
	all, err := m.List(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	entries := make([]listEntry, 0, len(all))
	for _, s := range all {
		le := listEntry{
			Names: s.Names, CA: s.CA, Issuer: s.Issuer, Serial: s.Serial, NotBefore: s.NotBefore, NotAfter: s.NotAfter,
			DaysLeft: float64(int(s.Remaining(now).Hours()/24*10)) / 10, Profile: s.Profile, KeyType: string(s.KeyType),
			RenewAt: manager.FallbackRenewAt(s.NotBefore, s.NotAfter), Out: s.Out, Revoked: !s.Revoked.IsZero(),
		}
		if d := s.Deployed; d != nil && d.Error != "" {
			le.DeployError = d.Error
		}
		if a := s.ARI; a != nil && !a.Unavailable && a.CertSerial == s.Serial && !a.Start.IsZero() {
			start, end := a.Start, a.End
			le.ARIStart, le.ARIEnd, le.RenewAt = &start, &end, a.Selected
		}
		entries = append(entries, le)
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	if len(entries) == 0 {
		fmt.Fprintf(e.stdout, "no certificates in %s\n", store.Root())
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMES\tISSUER\tEXPIRES\tDAYS LEFT\tRENEWAL WINDOW (ARI)\tPROFILE")
	for _, le := range entries {
		window := "- (renews " + le.RenewAt.Local().Format("2006-01-02") + ")"
		if le.ARIStart != nil {
			window = le.ARIStart.Local().Format("2006-01-02 15:04") + " – " + le.ARIEnd.Local().Format("2006-01-02 15:04")
		}
		days := fmt.Sprintf("%.1f", le.DaysLeft)
		if le.Revoked {
			days = "REVOKED"
		} else if le.DaysLeft < 0 {
			days = "EXPIRED"
		}
		profile := le.Profile
		if profile == "" {
			profile = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", strings.Join(le.Names, ","), le.Issuer,
			le.NotAfter.Local().Format("2006-01-02 15:04"), days, window, profile)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, le := range entries {
		if le.DeployError != "" {
			fmt.Fprintf(e.stdout, "%s: serial %s is stored but its deployment failed (tlsalpn renew retries it): %s\n",
				strings.Join(le.Names, ","), le.Serial, le.DeployError)
		}
	}
	return nil
}
