package issuer

import (
	"strings"
	"testing"
)

func TestResolveCA(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "letsencrypt", want: "https://acme-v02.api.letsencrypt.org/directory"},
		{in: "LetsEncrypt-Staging", want: "https://acme-staging-v02.api.letsencrypt.org/directory"},
		{in: "https://127.0.0.1:14000/dir", want: "https://127.0.0.1:14000/dir"},
		{in: "", wantErr: "no CA given"},
		{in: "  ", wantErr: "no CA given"},
		{in: "letsencrpyt", wantErr: "unknown CA"},
		{in: "http://127.0.0.1:14000/dir", wantErr: "must be https"},
	}
	for _, tt := range tests {
		got, err := ResolveCA(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ResolveCA(%q) = %q, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ResolveCA(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
