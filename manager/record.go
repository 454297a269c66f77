package manager

import (
	"crypto/x509"
	"maps"
	"slices"
	"time"

	"github.com/tlsalpn/tlsalpn/issuer"
)

// Spec is what the user asked for when a certificate was first issued. It is
// stored with the certificate so that "tlsalpn renew" needs no flags: the
// same CA, account, profile, key type, output directory and hook.
type Spec struct {
	// CertName is the certificate's identity (its lineage): the name
	// the user manages it by, which stays the same across renewals, a
	// change of CA or of names. Empty means the first name, as in records
	// written before it existed.
	CertName       string         `json:"cert_name,omitempty"`
	Names          []string       `json:"names"`
	CA             string         `json:"ca"`                // directory URL
	CARoot         string         `json:"ca_root,omitempty"` // PEM file trusted for the CA's own HTTPS
	Email          string         `json:"email,omitempty"`
	KeyType        issuer.KeyType `json:"key_type"`
	Profile        string         `json:"profile,omitempty"`
	PreferredChain string         `json:"preferred_chain,omitempty"`
	Out            string         `json:"out,omitempty"`
	DeployHook     string         `json:"deploy_hook,omitempty"`
	Listen         string         `json:"listen,omitempty"` // where to answer the CA on renewal
	// ValidationPort is the port the CA connects to, which the preflight
	// checks, when it is not 443 (a test CA); 0 means 443.
	ValidationPort int `json:"validation_port,omitempty"`
	// PreHook and PostHook are shell commands run around the standalone
	// validation listener on renewal as at issue (certbot's --pre-hook and
	// --post-hook): stop the server that holds :443, start it again. The
	// manager only keeps them; the command that binds the listener runs
	// them.
	PreHook  string `json:"pre_hook,omitempty"`
	PostHook string `json:"post_hook,omitempty"`
	// HookTimeout bounds DeployHook; 0 means the deploy package's default.
	HookTimeout time.Duration `json:"hook_timeout,omitempty"`
	// HAProxySocket and HAProxyCert, when set, put each new certificate
	// live in a running HAProxy through its runtime API, with no reload:
	// the admin socket (unix path or host:port) and the crt path HAProxy
	// loaded, which is rewritten too so a restart keeps the new one.
	HAProxySocket string `json:"haproxy_socket,omitempty"`
	HAProxyCert   string `json:"haproxy_cert,omitempty"`
}

// Record is the stored state of one managed certificate.
type Record struct {
	Spec
	// Version names the storage directory that holds this record's
	// certificate and key. The record is the switch: a new version is
	// written in full beside the old one, and only then does the record
	// point at it, so a crash or a failed write never pairs a new key
	// with an old certificate.
	Version    string    `json:"version,omitempty"`
	Serial     string    `json:"serial"`
	Issuer     string    `json:"issuer"`
	NotBefore  time.Time `json:"not_before"`
	NotAfter   time.Time `json:"not_after"`
	URL        string    `json:"url,omitempty"`
	Account    string    `json:"account,omitempty"`
	ObtainedAt time.Time `json:"obtained_at"`
	// Replaced is the ARI certificate ID of the certificate this one
	// renewed, if any.
	Replaced string    `json:"replaced,omitempty"`
	ARI      *ARIState `json:"ari,omitempty"`
	Revoked  time.Time `json:"revoked,omitzero"`
	// Deployed is what became of deploying this certificate. Records
	// written before it existed have none; see deployedTo.
	Deployed *DeployState `json:"deployed,omitempty"`
	// DeployedOn is Deployed for each cluster node, by node id (see
	// WithNode): in a cluster every node deploys the certificate to
	// outputs of its own (its files, its hook, its HAProxy), so one
	// node's success says nothing of another's.
	DeployedOn map[string]*DeployState `json:"deployed_on,omitempty"`
	// Retired is set when another certificate took over this one's
	// output directory: it is kept (nothing is lost) but no longer
	// renewed or deployed.
	Retired *Retirement `json:"retired,omitempty"`

	// ver is the storage version the record was read at (see
	// saveRecord): 0 for a record not read from storage.
	ver int64
}

// Retirement says when and why a certificate stopped being renewed.
type Retirement struct {
	At time.Time `json:"at"`
	// By is the certificate name that took over Out.
	By  string `json:"by"`
	Out string `json:"out,omitempty"`
}

// DeployState is what was last deployed to a certificate's outputs, so
// that a deployment that failed is tried again with the stored
// certificate, not left until the next renewal weeks later.
type DeployState struct {
	// Serial is the certificate last deployed successfully, At when, and
	// the other fields where: the outputs it went to.
	Serial        string    `json:"serial,omitempty"`
	At            time.Time `json:"at,omitzero"`
	Out           string    `json:"out,omitempty"`
	DeployHook    string    `json:"deploy_hook,omitempty"`
	HAProxySocket string    `json:"haproxy_socket,omitempty"`
	HAProxyCert   string    `json:"haproxy_cert,omitempty"`
	// Error says why the last attempt to deploy the record's certificate
	// failed, at ErrorAt; a successful deployment clears it.
	Error   string    `json:"error,omitempty"`
	ErrorAt time.Time `json:"error_at,omitzero"`
}

// hasOutputs reports whether s deploys its certificate anywhere.
func (s *Spec) hasOutputs() bool {
	return s.Out != "" || s.DeployHook != "" || s.HAProxyCert != ""
}

// setOutputs makes to deploy where from does.
func (s *Spec) setOutputs(from Spec) {
	s.Out, s.DeployHook, s.HookTimeout = from.Out, from.DeployHook, from.HookTimeout
	s.HAProxySocket, s.HAProxyCert = from.HAProxySocket, from.HAProxyCert
}

// deployedTo reports whether r's certificate is deployed to spec's
// outputs: spec has none, or the last successful deployment was of this
// certificate to them (the hook's timeout aside).
//
// A record written before deployments were recorded says nothing: its
// certificate is deployed once more, since a failure then went unnoticed.
// Writing the same files again is harmless; the hook reloads the server
// once for nothing.
func (r *Record) deployedTo(spec Spec) bool {
	return r.deployedOn("", spec)
}

// deployedOn is deployedTo for the cluster node node: what its entry in
// DeployedOn says ("" is the record's own Deployed, as on one host).
func (r *Record) deployedOn(node string, spec Spec) bool {
	if !spec.hasOutputs() {
		return true
	}
	d := r.deployState(node)
	return d != nil && d.Serial != "" && d.Serial == r.Serial && d.Out == spec.Out && d.DeployHook == spec.DeployHook &&
		d.HAProxySocket == spec.HAProxySocket && d.HAProxyCert == spec.HAProxyCert
}

// deployState is what the record says of the last deployment on node
// ("" for one host): nil if none.
func (r *Record) deployState(node string) *DeployState {
	if node == "" {
		return r.Deployed
	}
	return r.DeployedOn[node]
}

// setDeployState records d as the last deployment on node ("" for one
// host).
func (r *Record) setDeployState(node string, d *DeployState) {
	if node == "" {
		r.Deployed = d
		return
	}
	on := make(map[string]*DeployState, len(r.DeployedOn)+1)
	maps.Copy(on, r.DeployedOn)
	on[node] = d
	r.DeployedOn = on
}

// ARIState is the last renewal information the CA gave (RFC 9773).
type ARIState struct {
	Start        time.Time `json:"window_start"`
	End          time.Time `json:"window_end"`
	Selected     time.Time `json:"selected"` // uniform random time in the window, chosen once
	RetryAfter   time.Time `json:"retry_after,omitzero"`
	Explanation  string    `json:"explanation_url,omitempty"`
	CheckedAt    time.Time `json:"checked_at"`
	CertSerial   string    `json:"cert_serial"` // the window belongs to this certificate
	Unavailable  bool      `json:"unavailable,omitempty"`
	ErrorMessage string    `json:"error,omitempty"`
}

// ID is the certificate's name (its identity in storage): CertName, or
// the first name when none was given.
func (s *Spec) ID() string {
	if s.CertName != "" {
		return s.CertName
	}
	if len(s.Names) == 0 {
		return ""
	}
	return s.Names[0]
}

// sameNames reports whether a and b hold the same names, in any order.
func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// Name is the record's identity: its certificate name (see Spec.ID).
func (r *Record) Name() string { return r.ID() }

// Lifetime is the validity period of the current certificate.
func (r *Record) Lifetime() time.Duration { return r.NotAfter.Sub(r.NotBefore) }

// Remaining is how long the current certificate is still valid at now.
func (r *Record) Remaining(now time.Time) time.Duration { return r.NotAfter.Sub(now) }

// FallbackRenewAt is when to renew without ARI: when a third of the
// lifetime remains, or half for certificates valid under ten days (a six-day
// certificate renewed with two days left leaves no room for an outage).
func FallbackRenewAt(notBefore, notAfter time.Time) time.Time {
	life := notAfter.Sub(notBefore)
	if life < 10*24*time.Hour {
		return notAfter.Add(-life / 2)
	}
	return notAfter.Add(-life / 3)
}

func fillFromLeaf(r *Record, leaf *x509.Certificate) {
	r.Serial = serialHex(leaf)
	r.Issuer = leaf.Issuer.CommonName
	r.NotBefore = leaf.NotBefore.UTC()
	r.NotAfter = leaf.NotAfter.UTC()
}

func serialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }
