package config

import (
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string // substring of the error, "" for none
	}{
		{"0", 0, ""},
		{"10s", 10 * time.Second, ""},
		{"2m", 2 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"1.5s", 1500 * time.Millisecond, ""},
		{"250ms", 250 * time.Millisecond, ""},
		{"7d", 7 * 24 * time.Hour, ""},
		{"1d12h", 36 * time.Hour, ""},
		{"1d1s", 24*time.Hour + time.Second, ""},
		{"0d", 0, ""},
		{"-2d", -48 * time.Hour, ""},
		{"-1d12h", -36 * time.Hour, ""},
		{"-5s", -5 * time.Second, ""},
		{"+5s", 5 * time.Second, ""},
		{"", 0, "not a duration"},
		{"30", 0, `has no unit: write e.g. "30s"`},
		{"1.5d", 0, "whole number"},
		{"d", 0, "not a duration"},
		{"1d-1h", 0, "not a duration"},
		{"1h2d", 0, "not a duration"},
		{"ten minutes", 0, "not a duration"},
		{"106752d", 0, "too long"},
		{"106751d23h59m", 0, "too long"},
		{"99999999999999999999d", 0, "not a duration"},
	} {
		got, err := ParseDuration(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseDuration(%q): %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseDuration(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
		case tc.err == "" && time.Duration(got) != tc.want:
			t.Errorf("ParseDuration(%q) = %v, want %v", tc.in, time.Duration(got), tc.want)
		}
	}
}

func TestDurationString(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{10 * time.Second, "10s"},
		{10 * time.Minute, "10m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{90*time.Minute + time.Second, "1h30m1s"},
		{1500 * time.Millisecond, "1.5s"},
		{7 * 24 * time.Hour, "7d"},
		{36 * time.Hour, "1d12h"},
		{-36 * time.Hour, "-1d12h"},
	} {
		got := Duration(tc.d).String()
		if got != tc.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tc.d, got, tc.want)
		}
		back, err := ParseDuration(got)
		if err != nil || time.Duration(back) != tc.d {
			t.Errorf("ParseDuration(%q) = %v, %v: does not round-trip", got, back, err)
		}
	}
}

func TestDurationYAML(t *testing.T) {
	// Duration also works with plain YAML (un)marshalling, for other users
	// of the type.
	var v struct {
		D Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("d: 1d6h\n"), &v); err != nil || time.Duration(v.D) != 30*time.Hour {
		t.Fatalf("Unmarshal: %v, %v", v.D, err)
	}
	out, err := yaml.Marshal(v)
	if err != nil || string(out) != "d: 1d6h\n" {
		t.Errorf("Marshal = %q, %v", out, err)
	}
}
