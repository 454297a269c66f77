package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/plan"
)

const planUsage = `
Usage: tlsalpn plan -d NAME [-d NAME…] [--json] [--listen-test]

Decides which ACME challenge to automate on this host, by probing instead of
asking, and prints the decision table filled with what was found, then one
recommendation with the exact command and configuration:

  wildcard requested?        only DNS-01 can validate *.example.com (RFC 8737 §3)
  names resolve here?        each A and AAAA record against this host's addresses;
                             a stale AAAA fails the CA, which tries IPv6 first
  port 443 / 80 held here?   which process holds them (from /proc)
  port 443 reachable?        what answers at the names' addresses
  acme-tls/1 passes?         does the front door negotiate it
  behind a proxy or CDN?     the certificate seen from outside is not this host's
  HTTP-01 reachable?         a token on port 80 fetched through the public address

With --listen-test, free ports are bound for a moment (root, or
CAP_NET_BIND_SERVICE): a throwaway acme-tls/1 challenge is answered on 443 and
checked through the names' public addresses as the CA would (only for names
that resolve to this host), and an HTTP-01 token is served on 80 and fetched
through them. Nothing is sent to any CA.

Examples:
  tlsalpn plan -d example.com -d www.example.com
  sudo tlsalpn plan -d example.com --listen-test --email ops@example.com
  tlsalpn plan -d '*.example.com' -d example.com --json

Exit codes: 0 a plan was made (it is advice, whatever it says), 1 probing
failed (e.g. /proc unreadable), 2 usage error.
`

type planFlags struct {
	names      listFlag
	json       bool
	listenTest bool
	email      string
	timeout    time.Duration
	verbose    bool
}

func runPlan(ctx context.Context, e *env, args []string) error {
	return planWith(ctx, e, args, &plan.Planner{})
}

// planWith runs the command with base's probing hooks (resolver, interfaces,
// /proc, ports, listen, dial filter); tests inject them there.
func planWith(ctx context.Context, e *env, args []string, base *plan.Planner) error {
	var f planFlags
	fs := newFlagSet(e, "plan", planUsage)
	fs.Var(&f.names, "d", "a `NAME` to plan for (DNS name, IP address or wildcard); repeat for more, or comma-separate")
	fs.BoolVar(&f.json, "json", false, "print JSON for scripts")
	fs.BoolVar(&f.listenTest, "listen-test", false, "bind free ports 443 and 80 briefly and test acme-tls/1 and HTTP-01 through the public address (needs root or CAP_NET_BIND_SERVICE)")
	fs.StringVar(&f.email, "email", "", "contact `ADDRESS` to put in the recommended commands")
	fs.DurationVar(&f.timeout, "timeout", check.DialTimeout, "connect and handshake `DURATION` for each connection (the CA's is 10s)")
	fs.BoolVar(&f.verbose, "v", false, "log each handshake")
	if err := fs.parse(args, 0); err != nil {
		return err
	}
	if len(f.names) == 0 {
		return usagef("no names: give at least one -d NAME (see tlsalpn plan --help)")
	}
	for _, n := range f.names {
		if _, _, err := plan.ParsePlanName(n); err != nil {
			return usagef("-d %q: %v", n, strings.TrimPrefix(err.Error(), "check: "))
		}
	}
	if f.timeout <= 0 {
		return usagef("--timeout %s: give a positive duration", f.timeout)
	}
	p := *base
	p.ListenTest = f.listenTest
	p.Timeout = f.timeout
	if f.verbose {
		p.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	result, err := p.Plan(ctx, f.names)
	if err != nil {
		return fmt.Errorf("probing: %w", err)
	}
	adv := advise(result, f.email)
	if f.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		// The plan's findings and decision, and the decision in words.
		return enc.Encode(struct {
			*plan.Plan
			Advice planAdvice `json:"advice"`
		}{result, adv})
	}
	printPlan(e.stdout, result, adv)
	return nil
}

// printPlan prints the decision table (question | answer | evidence, one
// evidence per line) and the recommendation in words.
func printPlan(w io.Writer, p *plan.Plan, rec planAdvice) {
	names := make([]string, len(p.Names))
	for i, f := range p.Names {
		names[i] = f.Name
	}
	fmt.Fprintf(w, "plan for %s\n\n", strings.Join(names, ", "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "QUESTION\tANSWER\tEVIDENCE")
	for _, r := range p.Table {
		ev := r.Evidence
		if len(ev) == 0 {
			ev = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Question, r.Answer, ev[0])
		for _, more := range ev[1:] {
			fmt.Fprintf(tw, "\t\t%s\n", more)
		}
	}
	tw.Flush()

	fmt.Fprintf(w, "\nRecommendation: %s\n", rec.Summary)
	list := func(title string, items []string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(w, "  %s:\n", title)
		for _, it := range items {
			fmt.Fprintf(w, "    - %s\n", it)
		}
	}
	list("why", rec.Why)
	list("fix first", rec.Before)
	fmt.Fprintln(w, "  run:")
	for _, c := range rec.Commands {
		fmt.Fprintf(w, "    %s\n", c)
	}
	for _, c := range rec.Config {
		fmt.Fprintf(w, "  config %s:\n", c.Path)
		for _, line := range strings.Split(strings.TrimRight(c.Text, "\n"), "\n") {
			fmt.Fprintf(w, "    %s\n", line)
		}
	}
	list("notes", rec.Notes)
}
