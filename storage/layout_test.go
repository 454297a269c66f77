package storage

import "testing"

// TestLayout pins the keys byte for byte: they are the on-disk format, and
// storage written by an earlier version must keep working.
func TestLayout(t *testing.T) {
	const (
		le    = "https://acme-v02.api.letsencrypt.org/directory"
		local = "https://[::1]:14000/dir"
	)
	tests := []struct {
		name, got, want string
	}{
		{"CASegment", CASegment(le), "acme-v02.api.letsencrypt.org-directory"},
		{"CASegment IPv6", CASegment(local), "-__1-_14000-dir"},
		{"CASegment no URL", CASegment("not a url/.."), "not-a-url-"},
		{"AccountKey", AccountKey(le, "admin@example.com", AccountFile), "accounts/acme-v02.api.letsencrypt.org-directory/admin@example.com/account.json"},
		{"AccountKey no email", AccountKey(le, "", KeyFile), "accounts/acme-v02.api.letsencrypt.org-directory/default/key.pem"},
		{"AccountKey odd email", AccountKey(le, "a b/../c", KeyFile), "accounts/acme-v02.api.letsencrypt.org-directory/a-b-..-c/key.pem"},
		{"AccountLockName", AccountLockName(le, "admin@example.com"), "account-acme-v02.api.letsencrypt.org-directory-admin@example.com"},
		{"AccountLockName no email", AccountLockName(le, ""), "account-acme-v02.api.letsencrypt.org-directory--"},
		{"LineageDir", LineageDir("example.com"), "lineages/example.com"},
		{"LineageMetaKey", LineageMetaKey("example.com"), "lineages/example.com/meta.json"},
		{"LineageKey cert", LineageKey("example.com", "fa12", CertFile), "lineages/example.com/fa12/cert.pem"},
		{"LineageKey key", LineageKey("example.com", "fa12", KeyFile), "lineages/example.com/fa12/key.pem"},
		{"OrderDir", OrderDir(local, "0123abcd"), "orders/-__1-_14000-dir/0123abcd"},
		{"OrderLockName", OrderLockName(le, "0123abcd"), "order-acme-v02.api.letsencrypt.org-directory-0123abcd"},
		{"ProbeKey", ProbeKey(le, "99"), "orders/acme-v02.api.letsencrypt.org-directory/probe-99"},
		{"ClusterNodeKey", ClusterNodeKey("node-1"), "cluster/nodes/node-1"},
		{"ClusterChallengeKey", ClusterChallengeKey("example.com"), "cluster/challenges/example.com"},
		{"ClusterChallengeKey IP", ClusterChallengeKey("1.2.0.192.in-addr.arpa"), "cluster/challenges/1.2.0.192.in-addr.arpa"},
		{"ClusterAckKey", ClusterAckKey("example.com", "node-1"), "cluster/acks/example.com/node-1"},
		{"ClusterServedKey", ClusterServedKey("example.com", "node-1"), "cluster/served/example.com/node-1"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
		// Lock names share the rules of keys (ValidateLockName).
		if err := ValidateLockName(tt.got); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestLineageOfMetaKey(t *testing.T) {
	tests := []struct {
		key, want string
		ok        bool
	}{
		{"lineages/example.com/meta.json", "example.com", true},
		{LineageMetaKey("a.example"), "a.example", true},
		{"lineages/example.com/fa12/cert.pem", "", false},
		{"certificates/ca/example.com/meta.json", "", false},
		{"lineages/example.com", "", false},
	}
	for _, tt := range tests {
		got, ok := LineageOfMetaKey(tt.key)
		if got != tt.want || ok != tt.ok {
			t.Errorf("LineageOfMetaKey(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
}
