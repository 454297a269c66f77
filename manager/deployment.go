package manager

// Deployment: putting a stored certificate where servers read it, and
// recording the outcome so that a failure is retried.

import (
	"context"
	"encoding/pem"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/tlsalpn/tlsalpn/deploy"
)

// Deploy deploys the stored certificate for rec's CA and name to rec's
// outputs, whether or not they have it already, and records the outcome in
// the stored record, under the certificate's lock. See deployLocked.
func (m *Manager) Deploy(ctx context.Context, rec *Record) error {
	if !rec.hasOutputs() {
		return nil
	}
	unlock, err := m.store.Lock(ctx, certLockName(rec.Name()))
	if err != nil {
		return fmt.Errorf("locking %s to deploy it: %w", rec.Name(), err)
	}
	defer unlock()
	cur, err := m.loadRecord(ctx, rec.Name())
	if err != nil {
		return err
	}
	_, err = m.deployLocked(ctx, cur, rec.Spec)
	return err
}

// deployPending deploys the stored certificate to spec's outputs unless
// its record, read again under the certificate's lock, says they have it
// already (another process may have deployed it meanwhile) or that it was
// revoked. It reports whether it tried, and returns the record as it was
// before and the deployment's error.
func (m *Manager) deployPending(ctx context.Context, spec Spec) (tried bool, before *Record, err error) {
	unlock, err := m.store.Lock(ctx, certLockName(spec.ID()))
	if err != nil {
		return false, nil, fmt.Errorf("locking %s to deploy it: %w", spec.ID(), err)
	}
	defer unlock()
	cur, err := m.loadRecord(ctx, spec.ID())
	if err != nil {
		return false, nil, err
	}
	if !cur.Revoked.IsZero() || cur.Retired != nil || cur.deployedOn(m.node, spec) {
		return false, cur, nil
	}
	_, err = m.deployLocked(ctx, cur, spec)
	return true, cur, err
}

// deployLocked deploys the stored certificate, whose record cur is, to
// spec's outputs, and records the outcome in the stored record: on success
// the serial and the outputs, which become the record's own (renewals
// deploy there from then on); on failure the error. The certificate itself
// is never touched. The caller holds the certificate's lock. It returns the
// record as stored after, or cur if the outcome could not be recorded (a
// warning says so: a success is then repeated, a failure retried, later).
func (m *Manager) deployLocked(ctx context.Context, cur *Record, spec Spec) (*Record, error) {
	if !spec.hasOutputs() {
		return cur, nil
	}
	target := *cur
	target.setOutputs(spec)
	derr := m.deployFiles(ctx, &target)
	rec, err := m.recordDeploy(ctx, cur, spec, derr)
	if err != nil {
		attrs := []any{"name", cur.Name(), "serial", cur.Serial, "error", err}
		if derr != nil { // a nil error would log as deploy_error=<nil>
			attrs = append(attrs, "deploy_error", derr)
		}
		m.logger.Warn("deployment outcome not recorded", attrs...)
		return cur, derr
	}
	return rec, derr
}

// maxDeployError bounds the error stored in a record: enough to tell what
// failed, not a hook's whole output.
const maxDeployError = 512

// recordDeploy stores derr, the outcome of deploying cur's certificate to
// spec's outputs, in the stored record, read again: it is changed only if
// it still holds the certificate that was deployed. The caller holds the
// certificate's lock.
func (m *Manager) recordDeploy(ctx context.Context, cur *Record, spec Spec, derr error) (*Record, error) {
	rec, err := m.loadRecord(ctx, cur.Name())
	if err != nil {
		return nil, fmt.Errorf("re-reading %s to record its deployment: %w", cur.Name(), err)
	}
	if rec.Serial != cur.Serial {
		m.logger.Debug("deployment not recorded: the certificate was replaced meanwhile",
			"name", cur.Name(), "serial", cur.Serial, "stored_serial", rec.Serial)
		return rec, nil
	}
	now := m.now().UTC()
	var d DeployState
	if prev := rec.deployState(m.node); prev != nil {
		d = *prev
	}
	if derr != nil {
		d.Error, d.ErrorAt = shorten(derr.Error(), maxDeployError), now
	} else {
		d = DeployState{Serial: rec.Serial, At: now, Out: spec.Out, DeployHook: spec.DeployHook,
			HAProxySocket: spec.HAProxySocket, HAProxyCert: spec.HAProxyCert}
		if m.node == "" {
			// On one host the record's outputs are the ones a
			// deployment last succeeded to; a cluster node's
			// outputs are its own, not the record's.
			rec.setOutputs(spec)
		} else {
			// A cluster node's success is also the record's last
			// successful deployment anywhere, which is what the
			// command line (no node of its own) compares: it then
			// does not deploy again what the nodes deployed.
			last := d
			rec.Deployed = &last
		}
	}
	rec.setDeployState(m.node, &d)
	if err := m.saveRecord(ctx, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// shorten cuts s to at most n bytes, on a character boundary, marking the
// cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "…"
	i := max(n-len(more), 0)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + more
}

// deployFiles writes rec's stored certificate to its output directory,
// updates HAProxy through its runtime API, and runs its hook, as
// configured; with none of them it does nothing.
func (m *Manager) deployFiles(ctx context.Context, rec *Record) error {
	if !rec.hasOutputs() {
		return nil
	}
	s, err := m.loadVersion(ctx, rec)
	if err != nil {
		return err
	}
	files, err := filesFor(s)
	if err != nil {
		return err
	}
	var paths deploy.Paths
	if rec.Out != "" {
		if paths, err = deploy.Write(rec.Out, files); err != nil {
			return fmt.Errorf("deploying %s: %w", rec.Name(), err)
		}
		m.logger.Info("certificate files written", "name", rec.Name(), "dir", paths.Dir)
	}
	if rec.HAProxyCert != "" {
		bundle := append(append([]byte{}, files.FullChain...), files.Key...)
		h := deploy.HAProxy{Socket: rec.HAProxySocket}
		if err := h.Deploy(ctx, rec.HAProxyCert, bundle); err != nil {
			return fmt.Errorf("deploying %s to HAProxy: %w", rec.Name(), err)
		}
		m.logger.Info("certificate live in HAProxy without reload", "name", rec.Name(), "crt", rec.HAProxyCert)
	}
	if rec.DeployHook == "" {
		return nil
	}
	res, err := deploy.Hook{Command: rec.DeployHook, Timeout: rec.HookTimeout}.Run(ctx, deploy.Env(paths, rec.Names))
	if err != nil {
		return fmt.Errorf("deploying %s: %w", rec.Name(), err)
	}
	m.logger.Info("deploy hook ran", "name", rec.Name(), "hook", rec.DeployHook, "output", strings.TrimSpace(string(res.Output)))
	return nil
}

func filesFor(s *Stored) (deploy.Files, error) {
	var leaf, chain []byte
	for i, c := range s.Chain {
		b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		if i == 0 {
			leaf = b
		} else {
			chain = append(chain, b...)
		}
	}
	return deploy.Files{Cert: leaf, Chain: chain, FullChain: append(append([]byte{}, leaf...), chain...), Key: s.KeyPEM}, nil
}
