package storage

import (
	"fmt"
	"net/url"
	"path"
	"strings"
)

// The layout of keys, shared by every backend and every package that reads or writes state. It
// lives here, in one file, so that a reader (or a second backend) learns the whole of it in one
// place, and so that the packages that use it (issuer, manager, cmd/tlsalpn) cannot drift apart:
//
//	accounts/<ca>/<email>/account.json      ACME account (registration URL, contact)   issuer
//	accounts/<ca>/<email>/key.pem           account private key, 0600
//	lineages/<name>/meta.json               a certificate's record, written last (the switch)  manager
//	lineages/<name>/<version>/cert.pem      a version's chain, leaf first
//	lineages/<name>/<version>/key.pem       a version's private key, 0600
//	orders/<ca>/<request>/order.json        an order in flight, journaled so that a crash       issuer
//	orders/<ca>/<request>/key.pem           cannot lose an issued certificate; 0600
//	orders/<ca>/probe-<random>              a short-lived writability probe
//	certificates/<ca>/<name>/{cert.pem,key.pem,meta.json}
//	                                        the layout before lineages, migrated on first use  manager
//
// <ca> is CASegment of the ACME directory URL ("acme-v02.api.letsencrypt.org-directory"),
// <email> is AccountSegment of the account's email ("default" when there is none) and <name> is a
// certificate name (which the manager validates to be one key segment). The keys are part of the
// on-disk format: existing storage must keep working, so a change here is a migration.
//
// Lock names have a namespace of their own (see Storage.Lock); the ones shared by several
// processes on one storage are built here too: AccountLockName and OrderLockName.

// Top-level prefixes of the layout. Keys for Lock live in their own namespace; backends that
// keep locks next to keys (storage/fs keeps them under LocksPrefix) refuse keys under
// LocksPrefix so that the two cannot collide.
const (
	// AccountsPrefix holds ACME accounts: accounts/<ca>/<email>/{account.json,key.pem}.
	AccountsPrefix = "accounts"
	// LineagesPrefix holds managed certificates, one directory per certificate name:
	// lineages/<name>/meta.json (the record, written last: the switch) and
	// lineages/<name>/<version>/{cert.pem,key.pem}.
	LineagesPrefix = "lineages"
	// OrdersPrefix holds the order journal: orders/<ca>/<request id>/{order.json,key.pem}.
	OrdersPrefix = "orders"
	// CertificatesPrefix held certificates before LineagesPrefix, keyed by CA and first name:
	// certificates/<ca>/<name>/{cert.pem,key.pem,meta.json}. It is migrated on first use.
	CertificatesPrefix = "certificates"
	// LocksPrefix is reserved for locks and is never a valid key prefix.
	LocksPrefix = "locks"
)

// Names of the files within a directory of the layout.
const (
	// AccountFile is an account's record, beside KeyFile.
	AccountFile = "account.json"
	// MetaFile is a certificate's record, in its lineage directory (and in the old layout).
	MetaFile = "meta.json"
	// CertFile is a certificate chain, leaf first.
	CertFile = "cert.pem"
	// KeyFile is a private key: of an account, of a certificate version, of an order.
	KeyFile = "key.pem"
	// OrderFile is a journaled order, beside KeyFile.
	OrderFile = "order.json"
)

// CAName turns an ACME directory URL into the <ca> segment of the layout, the same way for every
// backend: host (with ':' replaced by '_') and path (with '/' replaced by '-'), for example
// "https://acme-v02.api.letsencrypt.org/directory" becomes
// "acme-v02.api.letsencrypt.org-directory" and "https://127.0.0.1:14000/dir" becomes
// "127.0.0.1_14000-dir". Query and fragment are ignored.
func CAName(directoryURL string) (string, error) {
	u, err := url.Parse(directoryURL)
	if err != nil {
		return "", fmt.Errorf("storage: CA name of %q: %w", directoryURL, err)
	}
	if u.Host == "" {
		return "", fmt.Errorf("storage: CA name of %q: no host", directoryURL)
	}
	name := strings.ReplaceAll(strings.ToLower(u.Host), ":", "_")
	if p := strings.Trim(u.Path, "/"); p != "" {
		name += "-" + strings.ReplaceAll(p, "/", "-")
	}
	if err := validatePath(name); err != nil || strings.Contains(name, "/") {
		return "", fmt.Errorf("storage: CA name of %q: %q is not a valid key segment", directoryURL, name)
	}
	return name, nil
}

// CASegment is the <ca> segment for a CA directory URL: CAName made safe for any input, so that
// building a key never fails (a URL CAName refuses still gets a segment of its own, which no
// valid URL shares).
func CASegment(directoryURL string) string {
	if name, err := CAName(directoryURL); err == nil {
		return Segment(name)
	}
	return Segment(directoryURL)
}

// AccountSegment is the <email> segment for an account's email; an account without an email is
// stored as "default".
func AccountSegment(email string) string {
	if email == "" {
		email = "default"
	}
	return Segment(email)
}

// Segment makes s one safe key segment: it keeps letters, digits, '.', '-', '_' and '@', turns
// anything else into '-' and trims leading and trailing dots, so a segment can never escape its
// directory or be a temporary file's name.
func Segment(s string) string {
	b := []byte(strings.Trim(s, "/"))
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_', c == '@':
		default:
			b[i] = '-'
		}
	}
	out := strings.Trim(string(b), ".")
	if out == "" {
		return "-"
	}
	return out
}

// AccountDir is the directory of the account for a CA and email: accounts/<ca>/<email>.
func AccountDir(directoryURL, email string) string {
	return path.Join(AccountsPrefix, CASegment(directoryURL), AccountSegment(email))
}

// AccountKey is a file of the account for a CA and email, such as AccountFile or KeyFile.
func AccountKey(directoryURL, email, file string) string {
	return path.Join(AccountDir(directoryURL, email), file)
}

// AccountLockName is the lock held while the account for a CA and email is registered. Unlike
// AccountDir it does not default an empty email (the name is kept as it always was, so that
// processes of different versions exclude each other).
func AccountLockName(directoryURL, email string) string {
	return "account-" + CASegment(directoryURL) + "-" + Segment(email)
}

// LineageDir is where one certificate's record and versions live: lineages/<name>.
func LineageDir(name string) string { return path.Join(LineagesPrefix, name) }

// LineageMetaKey is a certificate's record: lineages/<name>/meta.json.
func LineageMetaKey(name string) string { return path.Join(LineageDir(name), MetaFile) }

// LineageVersionDir is one version of a certificate: lineages/<name>/<version>.
func LineageVersionDir(name, version string) string { return path.Join(LineageDir(name), version) }

// LineageKey is a file of one version of a certificate, CertFile or KeyFile:
// lineages/<name>/<version>/<file>.
func LineageKey(name, version, file string) string {
	return path.Join(LineageVersionDir(name, version), file)
}

// LineageOfMetaKey returns the certificate name whose record key is, for telling which
// certificate a storage change concerns; ok is false for any other key.
func LineageOfMetaKey(key string) (name string, ok bool) {
	parts := strings.Split(key, "/")
	if len(parts) != 3 || parts[0] != LineagesPrefix || parts[2] != MetaFile {
		return "", false
	}
	return parts[1], true
}

// OrdersDir is the order journal of one CA: orders/<ca>.
func OrdersDir(directoryURL string) string {
	return path.Join(OrdersPrefix, CASegment(directoryURL))
}

// OrderDir is one journaled order of a CA: orders/<ca>/<request id>.
func OrderDir(directoryURL, id string) string { return path.Join(OrdersDir(directoryURL), id) }

// OrderLockName is the lock held while an order of a CA is journaled or resumed.
func OrderLockName(directoryURL, id string) string {
	return "order-" + CASegment(directoryURL) + "-" + id
}

// ProbeKey is a writability probe in a CA's order journal: orders/<ca>/probe-<random>.
func ProbeKey(directoryURL, random string) string {
	return path.Join(OrdersDir(directoryURL), ProbePrefix+random)
}

// ProbePrefix begins the name of a writability probe within OrdersDir.
const ProbePrefix = "probe-"

// Cluster mode (package cluster) keeps its coordination under ClusterPrefix, all of it in
// ephemeral keys (storage.Ephemeral) that vanish with the process that put them:
//
//	cluster/nodes/<node>                    a live node: its id, address, version, start time
//	cluster/challenges/<sni>                a pending challenge: certificate and throwaway key
//	cluster/acks/<sni>/<node>               <node> holds that challenge in its responder
//	cluster/served/<sni>/<node>             <node> served that challenge to a validation
//
// <node> is a node id (one key segment) and <sni> is Segment of the challenge's server name.
// The four directories are apart, so that no key is also the prefix of another.
const (
	// ClusterPrefix holds everything cluster mode coordinates through storage.
	ClusterPrefix = "cluster"
	// ClusterNodesPrefix holds one key per live node.
	ClusterNodesPrefix = ClusterPrefix + "/nodes"
	// ClusterChallengesPrefix holds one key per pending challenge.
	ClusterChallengesPrefix = ClusterPrefix + "/challenges"
	// ClusterAcksPrefix holds, per challenge, one key per node that loaded it.
	ClusterAcksPrefix = ClusterPrefix + "/acks"
	// ClusterServedPrefix holds, per challenge, one key per node that served it.
	ClusterServedPrefix = ClusterPrefix + "/served"
)

// ClusterNodeKey is a live node's record: cluster/nodes/<node>.
func ClusterNodeKey(node string) string { return path.Join(ClusterNodesPrefix, Segment(node)) }

// ClusterChallengeKey is the pending challenge for a server name: cluster/challenges/<sni>.
func ClusterChallengeKey(serverName string) string {
	return path.Join(ClusterChallengesPrefix, Segment(serverName))
}

// ClusterAcksDir holds the acknowledgements of a server name's challenge: cluster/acks/<sni>.
func ClusterAcksDir(serverName string) string {
	return path.Join(ClusterAcksPrefix, Segment(serverName))
}

// ClusterAckKey is one node's acknowledgement of a challenge: cluster/acks/<sni>/<node>.
func ClusterAckKey(serverName, node string) string {
	return path.Join(ClusterAcksDir(serverName), Segment(node))
}

// ClusterServedDir holds the "served" marks of a server name's challenge: cluster/served/<sni>.
func ClusterServedDir(serverName string) string {
	return path.Join(ClusterServedPrefix, Segment(serverName))
}

// ClusterServedKey is one node's "served" mark for a challenge: cluster/served/<sni>/<node>.
func ClusterServedKey(serverName, node string) string {
	return path.Join(ClusterServedDir(serverName), Segment(node))
}
