package deploy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHookEnv(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env.txt")
	p := PathsIn(filepath.Join(dir, "live"))
	env := Env(p, []string{"example.com", "www.example.com"})
	res, err := Hook{Command: "env > '" + out + "'"}.Run(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Output) != 0 {
		t.Errorf("output %q, want none", res.Output)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = v
		}
	}
	for k, want := range map[string]string{
		"TLSALPN_DOMAIN":     "example.com",
		"TLSALPN_DOMAINS":    "example.com www.example.com",
		"TLSALPN_OUT":        p.Dir,
		"TLSALPN_CERT":       p.Cert,
		"TLSALPN_CHAIN":      p.Chain,
		"TLSALPN_FULLCHAIN":  p.FullChain,
		"TLSALPN_KEY":        p.Key,
		"RENEWED_LINEAGE":    p.Dir,
		"RENEWED_DOMAINS":    "example.com www.example.com",
		"LEGO_CERT_DOMAIN":   "example.com",
		"LEGO_CERT_PATH":     p.FullChain,
		"LEGO_CERT_KEY_PATH": p.Key,
		"PATH":               os.Getenv("PATH"), // inherited
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if len(env) != 12 {
		t.Errorf("Env gave %d variables, the test checks 12", len(env))
	}
}

func TestEnvNoNames(t *testing.T) {
	for _, kv := range Env(PathsIn("/out"), nil) {
		if strings.HasPrefix(kv, "TLSALPN_DOMAIN=") && kv != "TLSALPN_DOMAIN=" {
			t.Errorf("%s, want empty", kv)
		}
	}
}

func TestHookRun(t *testing.T) {
	long := strings.Repeat("x", 1000)
	for _, tc := range []struct {
		name       string
		hook       Hook
		wantErr    []string // substrings of the error; nil means success
		wantOutput string   // substring of the output
		maxTime    time.Duration
	}{
		{name: "empty command is a no-op", hook: Hook{Command: ""}},
		{name: "blank command is a no-op", hook: Hook{Command: " \n\t"}},
		{name: "success", hook: Hook{Command: "echo reloaded"}, wantOutput: "reloaded\n"},
		{name: "stderr captured", hook: Hook{Command: "echo warn >&2"}, wantOutput: "warn\n"},
		{name: "default timeout", hook: Hook{Command: "true"}},
		{
			name:       "non-zero exit",
			hook:       Hook{Command: "echo first; echo 'nginx: [emerg] bad config' >&2; exit 3"},
			wantErr:    []string{"exit status 3", "nginx: [emerg] bad config", "first"},
			wantOutput: "first\nnginx: [emerg] bad config\n",
		},
		{
			name:    "non-zero exit without output",
			hook:    Hook{Command: "exit 1"},
			wantErr: []string{"exit status 1", "(no output)"},
		},
		{
			name:       "error shows only the tail of long output",
			hook:       Hook{Command: "printf 'H%sD\\n' EA; printf '" + long + "'; echo; echo TAIL; exit 2"},
			wantErr:    []string{"TAIL", "…"},
			wantOutput: "HEAD\n",
		},
		{
			name:    "command not found",
			hook:    Hook{Command: "/nonexistent/reload-server"},
			wantErr: []string{"exit status 127", "/nonexistent/reload-server"},
		},
		{
			name:       "timeout",
			hook:       Hook{Command: "echo started; sleep 5", Timeout: 200 * time.Millisecond},
			wantErr:    []string{"timed out after 200ms", "started"},
			wantOutput: "started",
			maxTime:    2 * time.Second,
		},
		{
			name:    "timeout with a child holding the output open",
			hook:    Hook{Command: "sleep 5; echo never", Timeout: 200 * time.Millisecond},
			wantErr: []string{"timed out"},
			maxTime: 2 * time.Second,
		},
		{
			name:    "timeout with a background child",
			hook:    Hook{Command: "sleep 5 & sleep 6; wait", Timeout: 200 * time.Millisecond},
			wantErr: []string{"timed out"},
			maxTime: 2 * time.Second,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			res, err := tc.hook.Run(context.Background(), nil)
			elapsed := time.Since(start)
			if tc.wantErr == nil && err != nil {
				t.Errorf("Run: %v", err)
			}
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Run succeeded, want an error")
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				if strings.Contains(err.Error(), "HEAD") {
					t.Errorf("error %q holds the whole output", err)
				}
			}
			if !strings.Contains(string(res.Output), tc.wantOutput) {
				t.Errorf("output %q does not contain %q", res.Output, tc.wantOutput)
			}
			if tc.maxTime > 0 && elapsed > tc.maxTime {
				t.Errorf("took %v, want at most %v", elapsed, tc.maxTime)
			}
		})
	}
}

func TestHookOutputCapped(t *testing.T) {
	for _, tc := range []struct {
		name    string
		command string
		wantErr bool
	}{
		{"success", "head -c 200000 /dev/zero | tr '\\0' a", false},
		{"failure", "head -c 200000 /dev/zero | tr '\\0' a; exit 1", true},
		{"many small writes", "i=0; while [ $i -lt 20000 ]; do echo abcdefgh; i=$((i+1)); done", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Hook{Command: tc.command, Timeout: 20 * time.Second}.Run(context.Background(), nil)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Run: %v", err)
			}
			if len(res.Output) != 64<<10 {
				t.Errorf("output is %d bytes, want it capped at %d", len(res.Output), 64<<10)
			}
			if err != nil && len(err.Error()) > 1000 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestHookCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := Hook{Command: "sleep 5"}.Run(ctx, nil)
	if err == nil {
		t.Fatal("Run succeeded after its context was cancelled")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancelled hook took %v", d)
	}
}

func TestCapped(t *testing.T) {
	var c capped
	chunk := bytes.Repeat([]byte("y"), 40<<10)
	for range 3 {
		if n, err := c.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v; a full pipe must not fail the command", n, err)
		}
	}
	if len(c.Bytes()) != maxHookOutput {
		t.Errorf("kept %d bytes, want %d", len(c.Bytes()), maxHookOutput)
	}
}
