package manager

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/syncbuf"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// countOrders returns a CA handler that counts new orders into n.
func countOrders(n *atomic.Int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
				n.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	}
}

// failingHook returns a deploy hook that fails while flag exists and
// otherwise appends an x to marker.
func failingHook(flag, marker string) string {
	return `if [ -e '` + flag + `' ]; then echo 'reload refused' >&2; exit 1; fi; printf x >> '` + marker + `'`
}

// deployedSerial is the serial of the certificate deployed in out, or ""
// (with the error logged) if there is none.
func deployedSerial(t *testing.T, out string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "cert.pem"))
	if err != nil {
		t.Log(err)
		return ""
	}
	chain, err := issuer.ParseChainPEM(data)
	if err != nil {
		t.Log(err)
		return ""
	}
	return serialHex(chain[0])
}

// syncBuffer is a log or stderr written beside the test that reads it.
type syncBuffer = syncbuf.Buffer

// TestKeepRetriesFailedDeploy checks that when a renewed certificate could
// not be deployed, the keeper deploys the stored one again, backing off,
// until it works, and orders nothing more.
func TestKeepRetriesFailedDeploy(t *testing.T) {
	t.Parallel()
	var orders atomic.Int32
	e := newTestEnv(t, democa.Options{Handler: countOrders(&orders)}, nil)
	ctx := testContext(t)
	tests := []struct {
		name string
		// breakIt makes deploying to out fail, without touching what is
		// deployed there; the func it returns repairs it.
		breakIt func(t *testing.T, out, flag string) (repair func())
	}{
		{"hook fails", func(t *testing.T, out, flag string) func() {
			if err := os.WriteFile(flag, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return func() { os.Remove(flag) }
		}},
		{"files cannot be written", func(t *testing.T, out, flag string) func() {
			// The current version's link becomes a directory holding
			// the same files: the server still reads them, but the
			// new version cannot be switched in.
			current := filepath.Join(out, ".tlsalpn", "current")
			files := map[string][]byte{}
			for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "key.pem"} {
				files[f] = readFile(t, filepath.Join(out, f))
			}
			if err := os.Remove(current); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(current, 0o755); err != nil {
				t.Fatal(err)
			}
			for f, data := range files {
				if err := os.WriteFile(filepath.Join(current, f), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			return func() { os.RemoveAll(current) }
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := []string{"hook.deploy.example.test", "files.deploy.example.test"}[i]
			dir := t.TempDir()
			out, flag, marker := filepath.Join(dir, "out"), filepath.Join(dir, "broken"), filepath.Join(dir, "hook-runs")
			spec := e.spec("default", name)
			spec.Out, spec.DeployHook = out, failingHook(flag, marker)
			first, err := e.m.Obtain(ctx, spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			s, err := e.m.Load(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			// The CA wants it replaced; the keeper renews it.
			if err := e.ca.SetRenewalInfo(ctx, s.Chain[0], time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			repair := tt.breakIt(t, out, flag)
			before := orders.Load()

			var logs syncBuffer
			km := New(e.store, e.m.issuerFor, slog.New(slog.NewTextHandler(&logs, nil)))
			kctx, cancel := context.WithCancel(ctx)
			kept := make(chan struct{})
			go func() {
				defer close(kept)
				km.Keep(kctx, []Spec{spec}, KeepOptions{MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
			}()
			defer func() {
				cancel()
				<-kept
			}()

			// Renewed, deployment failed and retried: a warning each
			// time, and the record says why.
			failed := "failed; the server still has the previous certificate; retrying in"
			var rec *Record
			for range 200 {
				if rec, err = e.m.loadRecord(ctx, name); err == nil && rec.Serial != first.Serial &&
					strings.Count(logs.String(), failed) >= 3 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil || rec.Serial == first.Serial {
				t.Fatalf("not renewed: %+v (%v)", rec, err)
			}
			renewed := rec.Serial
			if n := strings.Count(logs.String(), failed); n < 3 {
				t.Fatalf("%d deployment failures logged; want the keeper to retry:\n%s", n, logs.String())
			}
			if !strings.Contains(logs.String(), "deploying "+name+" serial "+renewed+" failed") {
				t.Errorf("the failure log does not name %s and serial %s:\n%s", name, renewed, logs.String())
			}
			if d := rec.Deployed; d == nil || d.Error == "" || d.ErrorAt.IsZero() || d.Serial == renewed {
				t.Errorf("record after failed deployments: %+v; want the error, and not serial %s deployed", d, renewed)
			}
			if tt.name == "files cannot be written" {
				if got := deployedSerial(t, out); got != first.Serial {
					t.Errorf("%s holds serial %s during the failures; want the previous %s", out, got, first.Serial)
				}
			}

			repair()
			for range 200 {
				if rec, err = e.m.loadRecord(ctx, name); err == nil && rec.deployedTo(spec) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			cancel()
			<-kept

			if err != nil || !rec.deployedTo(spec) {
				t.Fatalf("record after repair: %+v (%v); want serial %s deployed", rec.Deployed, err, renewed)
			}
			if d := rec.Deployed; d.Serial != renewed || d.Error != "" || d.At.IsZero() || d.Out != out {
				t.Errorf("record after repair: %+v; want serial %s deployed to %s, no error", d, renewed, out)
			}
			if rec.Serial != renewed {
				t.Errorf("stored serial %s; want %s", rec.Serial, renewed)
			}
			if got := deployedSerial(t, out); got != renewed {
				t.Errorf("%s holds serial %s; want the renewed %s", out, got, renewed)
			}
			if runs, err := os.ReadFile(marker); err != nil || string(runs) != "xx" {
				t.Errorf("hook succeeded %q times (%v); want twice: the first issue and the repaired deployment", runs, err)
			}
			if n := orders.Load() - before; n != 1 {
				t.Errorf("%d orders; want only the renewal", n)
			}
			if !strings.Contains(logs.String(), `msg="stored certificate deployed" names=[`+name+`] serial=`+renewed) {
				t.Errorf("no log of the successful deployment:\n%s", logs.String())
			}
		})
	}
}

// TestRenewRedeploys checks that Renew deploys a certificate that is not
// due but whose deployment failed, reports it, and leaves one deployed
// alone.
func TestRenewRedeploys(t *testing.T) {
	t.Parallel()
	var orders atomic.Int32
	e := newTestEnv(t, democa.Options{Handler: countOrders(&orders)}, nil)
	ctx := testContext(t)
	dir := t.TempDir()
	out, flag, marker := filepath.Join(dir, "out"), filepath.Join(dir, "broken"), filepath.Join(dir, "hook-runs")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	const name = "renew.deploy.example.test"
	spec := e.spec("default", name)
	spec.Out, spec.DeployHook = out, failingHook(flag, marker)
	rec, err := e.m.Obtain(ctx, spec, nil)
	if err == nil || rec == nil || !strings.Contains(err.Error(), "reload refused") {
		t.Fatalf("Obtain = %+v, %v; want the certificate and the hook's failure", rec, err)
	}
	if d := rec.Deployed; d == nil || d.Serial != "" || !strings.Contains(d.Error, "reload refused") {
		t.Errorf("record after a failed deployment: %+v; want the hook's error and nothing deployed", d)
	}
	before := orders.Load()

	tests := []struct {
		name       string
		broken     bool // the hook still fails
		redeployed bool
		lastError  bool // want the earlier failure reported
		runs       string
	}{
		{"hook still broken", true, true, true, ""},
		{"hook repaired", false, true, true, "x"},
		{"deployed", false, false, false, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.broken {
				os.Remove(flag)
			}
			results, err := e.m.Renew(ctx, false)
			if err != nil || len(results) != 1 {
				t.Fatalf("Renew = %+v, %v; want one result", results, err)
			}
			r := results[0]
			if r.Decision.Due || r.Renewed != nil {
				t.Errorf("Renew renewed: %+v", r)
			}
			if r.Redeployed != tt.redeployed || (r.LastDeployError != "") != tt.lastError || (r.Err != nil) != tt.broken {
				t.Errorf("Renew = redeployed %v, last error %q, err %v; want redeployed %v, last error %v, failed %v",
					r.Redeployed, r.LastDeployError, r.Err, tt.redeployed, tt.lastError, tt.broken)
			}
			runs, _ := os.ReadFile(marker)
			if string(runs) != tt.runs {
				t.Errorf("hook succeeded %q times; want %q", runs, tt.runs)
			}
			got, err := e.m.loadRecord(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if got.Serial != rec.Serial || got.deployedTo(spec) == tt.broken {
				t.Errorf("record: serial %s, deployed %+v; want serial %s, deployed %v", got.Serial, got.Deployed, rec.Serial, !tt.broken)
			}
			if !tt.broken && deployedSerial(t, out) != rec.Serial {
				t.Errorf("%s does not hold serial %s", out, rec.Serial)
			}
		})
	}
	if n := orders.Load() - before; n != 0 {
		t.Errorf("%d orders; want none", n)
	}
}

// TestRecordWithoutDeployed checks that records written before
// deployments were recorded load, and that Renew deploys their
// certificate once if they have outputs, and otherwise leaves them alone.
func TestRecordWithoutDeployed(t *testing.T) {
	t.Parallel()
	var orders atomic.Int32
	e := newTestEnv(t, democa.Options{Handler: countOrders(&orders)}, nil)
	ctx := testContext(t)
	tests := []struct {
		name    string
		outputs bool
	}{
		{"no outputs", false},
		{"outputs", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			out, marker := filepath.Join(dir, "out"), filepath.Join(dir, "hook-runs")
			name := strings.ReplaceAll(tt.name, " ", "-") + ".old.example.test"
			spec := e.spec("default", name)
			if tt.outputs {
				spec.Out, spec.DeployHook = out, `printf x >> '`+marker+`'`
			}
			rec, err := e.m.Obtain(ctx, spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			// Rewrite meta.json as an older version wrote it.
			key := storage.LineageMetaKey(name)
			data, err := e.store.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(data, &fields); err != nil {
				t.Fatal(err)
			}
			delete(fields, "deployed")
			if data, err = json.MarshalIndent(fields, "", "  "); err != nil {
				t.Fatal(err)
			}
			if err := e.store.Put(ctx, key, data, 0o644); err != nil {
				t.Fatal(err)
			}

			s, err := e.m.Load(ctx, name)
			if err != nil {
				t.Fatalf("Load of an old record: %v", err)
			}
			if s.Serial != rec.Serial || s.Out != spec.Out || s.Deployed != nil {
				t.Errorf("old record loaded as serial %s, out %q, deployed %+v; want serial %s, out %q, nothing deployed",
					s.Serial, s.Out, s.Deployed, rec.Serial, spec.Out)
			}
			before := orders.Load()
			for i, want := range []bool{tt.outputs, false} {
				results, err := e.m.Renew(ctx, false)
				var r RenewResult
				for _, res := range results {
					if res.Name == name {
						r = res
					}
				}
				if err != nil || r.Name == "" || r.Err != nil || r.Renewed != nil || r.Redeployed != want || r.LastDeployError != "" {
					t.Errorf("Renew #%d = %+v, %v; want redeployed %v, never failed", i+1, r, err, want)
				}
			}
			if n := orders.Load() - before; n != 0 {
				t.Errorf("%d orders; want none", n)
			}
			if !tt.outputs {
				return
			}
			if runs, err := os.ReadFile(marker); err != nil || string(runs) != "xx" {
				t.Errorf("hook ran %q times (%v); want twice: the first issue and once more after the upgrade", runs, err)
			}
			got, err := e.m.loadRecord(ctx, name)
			if err != nil || got.Deployed == nil || got.Deployed.Serial != rec.Serial || !got.deployedTo(spec) {
				t.Errorf("record after Renew: %+v (%v); want serial %s deployed", got, err, rec.Serial)
			}
		})
	}
}

func TestShorten(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a longer error message", 10, "a longe…"},
		{"ééééé", 8, "éé…"},                           // é is 2 bytes; a cut inside one backs off
		{"\xff\xfe bad output", 10, "\xff\xfe bad …"}, // invalid UTF-8 before the cut is kept
	}
	for _, tt := range tests {
		if got := shorten(tt.s, tt.n); got != tt.want || len(got) > max(tt.n, len(tt.s)) {
			t.Errorf("shorten(%q, %d) = %q; want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
