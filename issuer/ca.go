package issuer

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/mholt/acmez/v3/acme"
)

// knownCAs maps the short names --ca accepts to ACME directory URLs. It is
// never modified.
var knownCAs = map[string]string{
	"letsencrypt":         "https://acme-v02.api.letsencrypt.org/directory",
	"letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
	"zerossl":             "https://acme.zerossl.com/v2/DV90",
	"google":              "https://dv.acme-v02.api.pki.goog/directory",
	"google-staging":      "https://dv.acme-v02.test-api.pki.goog/directory",
}

// stagingOf maps a production directory URL to its CA's staging directory,
// where a rehearsal (renew --dry-run) costs no rate limit and issues nothing
// trusted. Only CAs whose staging needs no credentials of its own are
// listed: Google's staging wants its own EAB key. It is never modified.
var stagingOf = map[string]string{
	knownCAs["letsencrypt"]: knownCAs["letsencrypt-staging"],
}

// StagingFor returns the staging directory of the CA at directory, and
// whether one is known; for anything else, the directory itself.
func StagingFor(directory string) (string, bool) {
	if s, ok := stagingOf[directory]; ok {
		return s, true
	}
	return directory, false
}

// CANames lists the short CA names, sorted.
func CANames() []string {
	names := make([]string, 0, len(knownCAs))
	for n := range knownCAs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ResolveCA turns a --ca value into a directory URL: one of CANames, or an
// https URL (http is refused: ACME requires TLS, RFC 8555 §6.1).
//
// An empty value is an error, not a default: it is what an unset shell
// variable (--ca "$CA") gives, and quietly ordering from production Let's
// Encrypt instead of the CA that was meant would spend real rate limits
// and issue real certificates.
func ResolveCA(s string) (string, error) {
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("no CA given (empty value; an unset variable?): use a directory URL (https://…/directory) or one of %s", strings.Join(CANames(), ", "))
	}
	if u, ok := knownCAs[strings.ToLower(s)]; ok {
		return u, nil
	}
	if !strings.Contains(s, "://") {
		return "", fmt.Errorf("unknown CA %q: use a directory URL (https://…/directory) or one of %s", s, strings.Join(CANames(), ", "))
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("CA directory URL %q: %w", s, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("CA directory URL %q: must be https://host/… (ACME runs over TLS)", s)
	}
	return u.String(), nil
}

// FetchDirectory reads a CA's directory without an account or storage, so a
// command can find out that the CA is unreachable, or wants EAB, before it
// writes anything.
func FetchDirectory(ctx context.Context, directory string, hc *http.Client) (acme.Directory, error) {
	c := &acme.Client{Directory: directory, HTTPClient: hc, UserAgent: "tlsalpn"}
	d, err := c.GetDirectory(ctx)
	if err != nil {
		return d, fmt.Errorf("%w at %s: %w", ErrDirectory, directory, err)
	}
	return d, nil
}
