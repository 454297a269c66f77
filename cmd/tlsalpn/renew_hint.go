package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tlsalpn/tlsalpn/manager"
)

// printRenewHint says where the records went and what renews them: the
// one thing a sysadmin must do after a first issue, and the thing that went
// wrong when issue and renew looked in different places. The renew line
// names --storage unless the storage is the default that cron or a systemd
// unit running as this user finds with no environment at all.
func printRenewHint(e *env, st *openedStorage, certNames []string) {
	if len(certNames) == 0 {
		return
	}
	root := st.where()
	fmt.Fprintf(e.stdout, "stored in %s (certificate name %s)\n", root, strings.Join(certNames, ", "))
	if st.loc.etcd != nil {
		// The cluster's serve nodes renew it; a cron line would need the
		// same etcd flags, which the one who set them knows.
		fmt.Fprintf(e.stdout, "renewed by the tlsalpn serve nodes on %s, or with: tlsalpn renew --storage %s and the same --etcd-* and --encryption-key flags\n", root, root)
		return
	}
	storageFlag := ""
	if !isDefaultStorage(e, root) {
		storageFlag = " --storage " + shellQuote(root)
	}
	fmt.Fprintf(e.stdout, "renew with: tlsalpn renew%s (it renews only what is due; run it twice a day)\n", storageFlag)
	// cron's PATH is /usr/bin:/bin: name the binary in full, as the
	// shell finds it (not os.Executable, which is a temporary file under
	// "go run"), else where the README installs it.
	bin := "/usr/local/bin/tlsalpn"
	if p, err := exec.LookPath("tlsalpn"); err == nil && filepath.IsAbs(p) {
		bin = p
	}
	line := bin + " renew -q" + storageFlag
	if e.euid() != 0 {
		fmt.Fprintf(e.stdout, "  from cron (crontab -e): 17 3,15 * * *  %s\n", line)
		return
	}
	for _, dir := range []string{"/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(dir, "tlsalpn-renew.timer")); err == nil && isDefaultStorage(e, root) {
			fmt.Fprintln(e.stdout, "  from systemd: systemctl enable --now tlsalpn-renew.timer")
			return
		}
	}
	fmt.Fprintf(e.stdout, "  from cron (/etc/cron.d/tlsalpn): 17 3,15 * * *  root  %s\n", line)
	fmt.Fprintln(e.stdout, "  or systemd: install contrib/systemd/tlsalpn-renew.{service,timer}, then systemctl enable --now tlsalpn-renew.timer")
}

// shellQuote quotes s for sh when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+@=:,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// storedNames are the certificate names of the records issue stored.
func storedNames(recs []*manager.Record) []string {
	var names []string
	for _, rec := range recs {
		if rec != nil {
			names = append(names, rec.Name())
		}
	}
	return names
}
