package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/cluster"
	"github.com/tlsalpn/tlsalpn/importer"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
)

// advice is what to do about err in this program's flags, appended to the
// message by oneLine. The libraries return typed errors that say what is
// wrong in their own terms; only this command knows which flag fixes it.
// It returns "" for an error without advice.
func advice(err error) string {
	var pe *issuer.PreflightError
	var de *manager.DamagedError
	var be *responder.BindError
	var hs *heldByServeError
	var op *check.OtherPortError
	var uca *importer.UnknownCAError
	var ach *importer.AccountChoiceError
	switch {
	case errors.Is(err, cluster.ErrNoNodes):
		return " (is any tlsalpn serve running on this storage?)"
	case errors.As(err, &uca):
		return fmt.Sprintf(": give it with --ca https://%s/…", uca.Host)
	case errors.As(err, &ach):
		return ": choose one with --email"
	case errors.As(err, &hs):
		return "" // says what to do itself, knowing which serve holds the port
	case errors.Is(err, issuer.ErrEABRequired):
		return ": pass --eab-kid and --eab-hmac-key (ZeroSSL: from the dashboard's Developer page; Google: gcloud publicca external-account-keys create)"
	case errors.Is(err, issuer.ErrTOSRequired):
		return ": read them, then pass --agree-tos"
	case errors.Is(err, issuer.ErrNoProfiles):
		return ": drop --profile"
	case errors.Is(err, issuer.ErrDirectory):
		return " (check --ca, --ca-root and the network)"
	case errors.As(err, &op):
		preflight := ""
		if errors.As(err, &pe) {
			preflight = " (--no-preflight skips this check)"
		}
		return fmt.Sprintf("; tlsalpn answers on --listen %s, not on the CA's port %d: listen on :%d, or forward port %d to %d "+
			"(a firewall redirect of incoming connections does not apply to this host's own: if one is in place, --no-preflight)",
			op.Listen, op.CAPort, op.CAPort, op.CAPort, op.ListenPort) + preflight
	case errors.As(err, &pe):
		return " (--no-preflight skips this check)"
	case errors.As(err, &de):
		return fmt.Sprintf("; repair it, or remove it with tlsalpn delete %s", de.Name)
	case errors.As(err, &be) && be.InUse():
		return " (another server owns this port: run `tlsalpn serve` in front of it in proxy mode, or stop it while issuing)"
	case errors.As(err, &be) && be.Permission():
		return " (ports below 1024 need root or CAP_NET_BIND_SERVICE: `setcap cap_net_bind_service=+ep $(command -v tlsalpn)`)"
	}
	return ""
}

// decisionText is a renewal decision's reason for people, with what to do
// about a revoked certificate.
func decisionText(d manager.Decision) string {
	if d.Revoked {
		return d.Reason + "; issue a new certificate with tlsalpn issue"
	}
	return d.Reason
}

// adviseErrors is a slog ReplaceAttr that adds this command's advice to the
// errors the libraries log (a daemon's failed preflight, say), so that the
// log says what to do as the command line does.
func adviseErrors(_ []string, a slog.Attr) slog.Attr {
	if err, ok := a.Value.Any().(error); ok {
		if adv := advice(err); adv != "" {
			return slog.String(a.Key, err.Error()+adv)
		}
	}
	return a
}
