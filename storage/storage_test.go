package storage

import (
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		key  string
		want string // substring of the error; "" means valid
	}{
		{"certificates/acme-v02.api.letsencrypt.org-directory/example.com/cert.pem", ""},
		{"accounts/127.0.0.1_14000-dir/admin@example.com/key.pem", ""},
		{"certificates/ca/*.example.com/key.pem", ""},
		{"a", ""},
		{"a/b..c/d.", ""},
		{"lockstep/x", ""},
		{"", "empty"},
		{"/etc/passwd", "absolute"},
		{"a/../b", `segment ".."`},
		{"..", `segment ".."`},
		{"a/./b", `segment "."`},
		{".", `segment "."`},
		{"a/.tmp-123", "begins with a dot"},
		{".hidden", "begins with a dot"},
		{"a//b", "empty path segment"},
		{"a/", "empty path segment"},
		{`a\b`, "backslash"},
		{`..\..\x`, "backslash"},
		{"a\x00b", "control character"},
		{"a\nb", "control character"},
		{"a\x7fb", "control character"},
		{"locks", "reserved"},
		{"locks/x", "reserved"},
	}
	for _, tt := range tests {
		err := ValidateKey(tt.key)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ValidateKey(%q) = %v, want nil", tt.key, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ValidateKey(%q) = %v, want error containing %q", tt.key, err, tt.want)
		}
	}
}

func TestValidateLockNameAndPrefix(t *testing.T) {
	tests := []struct {
		name             string
		lockOK, prefixOK bool
	}{
		{"", false, true},
		{"locks/x", true, false},
		{"certificates/ca/example.com", true, true},
		{"../x", false, false},
	}
	for _, tt := range tests {
		if got := ValidateLockName(tt.name) == nil; got != tt.lockOK {
			t.Errorf("ValidateLockName(%q) ok = %v, want %v", tt.name, got, tt.lockOK)
		}
		if got := ValidatePrefix(tt.name) == nil; got != tt.prefixOK {
			t.Errorf("ValidatePrefix(%q) ok = %v, want %v", tt.name, got, tt.prefixOK)
		}
	}
}

func TestHasPrefix(t *testing.T) {
	tests := []struct {
		key, prefix string
		want        bool
	}{
		{"a/b", "", true},
		{"a/b", "a", true},
		{"a/b", "a/b", true},
		{"a/bc", "a/b", false},
		{"a", "a/b", false},
		{"ab/c", "a", false},
	}
	for _, tt := range tests {
		if got := HasPrefix(tt.key, tt.prefix); got != tt.want {
			t.Errorf("HasPrefix(%q, %q) = %v, want %v", tt.key, tt.prefix, got, tt.want)
		}
	}
}

func TestCAName(t *testing.T) {
	tests := []struct {
		url, want string
		wantErr   bool
	}{
		{"https://acme-v02.api.letsencrypt.org/directory", "acme-v02.api.letsencrypt.org-directory", false},
		{"https://acme-staging-v02.api.letsencrypt.org/directory", "acme-staging-v02.api.letsencrypt.org-directory", false},
		{"https://127.0.0.1:14000/dir", "127.0.0.1_14000-dir", false},
		{"https://[::1]:14000/dir", "[__1]_14000-dir", false},
		{"https://CA.Example/acme/v2/directory/?x=1", "ca.example-acme-v2-directory", false},
		{"https://ca.example", "ca.example", false},
		{"/directory", "", true},
		{"https://ca.example/a\\b", "", true},
		{"://bad", "", true},
	}
	for _, tt := range tests {
		got, err := CAName(tt.url)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("CAName(%q) = %q, %v; want %q, error %v", tt.url, got, err, tt.want, tt.wantErr)
		}
	}
}
