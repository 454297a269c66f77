package issuer

import "testing"

func TestStagingFor(t *testing.T) {
	tests := []struct {
		dir, want string
		known     bool
	}{
		{"https://acme-v02.api.letsencrypt.org/directory", "https://acme-staging-v02.api.letsencrypt.org/directory", true},
		{"https://acme-staging-v02.api.letsencrypt.org/directory", "https://acme-staging-v02.api.letsencrypt.org/directory", false},
		{"https://acme.zerossl.com/v2/DV90", "https://acme.zerossl.com/v2/DV90", false},
		{"https://127.0.0.1:14000/dir", "https://127.0.0.1:14000/dir", false},
	}
	for _, tt := range tests {
		got, known := StagingFor(tt.dir)
		if got != tt.want || known != tt.known {
			t.Errorf("StagingFor(%q) = %q, %v; want %q, %v", tt.dir, got, known, tt.want, tt.known)
		}
	}
}
