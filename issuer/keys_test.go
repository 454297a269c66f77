package issuer

import (
	"errors"
	"testing"
)

func TestParseKeyType(t *testing.T) {
	tests := []struct {
		in      string
		want    KeyType
		unknown bool
	}{
		{"", EC256, false},
		{"ec256", EC256, false},
		{"EC384", EC384, false},
		{"rsa4096", RSA4096, false},
		{"ec521", "", true},
		{"rsa", "", true},
	}
	for _, tt := range tests {
		got, err := ParseKeyType(tt.in)
		var unknown *UnknownKeyTypeError
		if got != tt.want || errors.As(err, &unknown) != tt.unknown {
			t.Errorf("ParseKeyType(%q) = %q, %v; want %q, unknown %v", tt.in, got, err, tt.want, tt.unknown)
			continue
		}
		if tt.unknown && unknown.Value != tt.in {
			t.Errorf("ParseKeyType(%q): error names %q", tt.in, unknown.Value)
		}
	}
}
