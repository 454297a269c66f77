package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in the file as Go writes durations
// ("10s", "2m", "1h30m") or, for long ones, in whole days ("7d", "1d12h"),
// because nobody wants to count "168h". It converts with time.Duration(d).
type Duration time.Duration

const day = 24 * time.Hour

// ParseDuration parses a Go duration optionally led by a whole number of
// days: "90s", "1h30m", "7d", "1d12h", "-2d". "0" is zero.
func ParseDuration(s string) (Duration, error) {
	in := s
	neg := false
	if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		neg = s[0] == '-'
		s = s[1:]
	}
	var days int64
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n < 0 || s[:i] == "" || s[0] == '+' {
			if strings.ContainsAny(s[:i], ".") {
				return 0, fmt.Errorf("%q: days must be a whole number; write hours instead, e.g. \"36h\" for 1.5d", in)
			}
			return 0, fmt.Errorf("%q is not a duration: write e.g. \"7d\", \"1d12h\", \"90m\" or \"30s\"", in)
		}
		if n > int64(math.MaxInt64/day) {
			return 0, fmt.Errorf("%q is too long a duration", in)
		}
		days = n
		s = s[i+1:]
		if s == "" {
			d := time.Duration(days) * day
			if neg {
				d = -d
			}
			return Duration(d), nil
		}
		if s[0] == '-' || s[0] == '+' {
			return 0, fmt.Errorf("%q is not a duration: write e.g. \"1d12h\"", in)
		}
	}
	rest, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil && days == 0 {
			return 0, fmt.Errorf("%q has no unit: write e.g. \"%ss\" for seconds or \"%sm\" for minutes", in, s, s)
		}
		return 0, fmt.Errorf("%q is not a duration: write e.g. \"30s\", \"10m\", \"1h30m\" or \"7d\"", in)
	}
	if days > 0 && rest > time.Duration(math.MaxInt64)-time.Duration(days)*day {
		return 0, fmt.Errorf("%q is too long a duration", in)
	}
	d := time.Duration(days)*day + rest
	if neg {
		d = -d
	}
	return Duration(d), nil
}

// String formats d the way ParseDuration reads it, without Go's trailing
// zero units: "10m" rather than "10m0s", "7d" rather than "168h0m0s".
func (d Duration) String() string {
	td := time.Duration(d)
	if td == 0 {
		return "0s"
	}
	sign := ""
	if td < 0 {
		if td == math.MinInt64 {
			return td.String()
		}
		sign, td = "-", -td
	}
	var b strings.Builder
	b.WriteString(sign)
	if td >= day {
		b.WriteString(strconv.FormatInt(int64(td/day), 10))
		b.WriteByte('d')
		td %= day
		if td == 0 {
			return b.String()
		}
	}
	s := td.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	b.WriteString(s)
	return b.String()
}

// MarshalText writes d as String does, so YAML and JSON encoders write
// "10m" instead of a count of nanoseconds.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads what ParseDuration reads.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
