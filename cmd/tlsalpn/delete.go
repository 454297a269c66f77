package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/tlsalpn/tlsalpn/manager"
)

const deleteUsage = `
Usage: tlsalpn delete CERT-NAME [--remove-files] [--storage DIR]

Stops managing a certificate: its record, key and certificate are removed
from storage, so neither "tlsalpn renew" nor serve renews it again. The
files deployed to its output directory stay where your server reads them,
unless --remove-files is given. Nothing is revoked (see tlsalpn revoke).
A damaged certificate (see tlsalpn list) is deleted the same way.

Examples:
  tlsalpn delete old.example.com
  tlsalpn delete example.com-0001 --remove-files

Exit codes: 0 deleted, 1 failed, 2 usage error (no such certificate).
`

func runDelete(ctx context.Context, e *env, args []string) error {
	var cf caFlags
	var removeFiles bool
	fs := newFlagSet(e, "delete", deleteUsage)
	cf.register(fs, false)
	fs.BoolVar(&removeFiles, "remove-files", false, "also remove cert.pem, chain.pem, fullchain.pem and key.pem from its output directory")
	if err := fs.parse(args, 1); err != nil {
		return err
	}
	if len(fs.pos) != 1 {
		return usagef("give the certificate name to delete (see tlsalpn list)")
	}
	name := fs.pos[0]
	m, st, err := managerForChange(ctx, e, &cf, name, "deletion")
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := m.Delete(ctx, name, removeFiles)
	if err != nil {
		return err
	}
	switch rec := res.Record; {
	case rec == nil:
		fmt.Fprintf(e.stdout, "deleted damaged certificate %s\n", name)
	default:
		fmt.Fprintf(e.stdout, "deleted certificate %s (%s from %s): no longer renewed\n", name, strings.Join(rec.Names, ", "), rec.CA)
		switch {
		case len(res.RemovedFiles) > 0:
			fmt.Fprintf(e.stdout, "  removed %s\n", strings.Join(res.RemovedFiles, ", "))
		case rec.Out != "" && rec.Retired == nil:
			fmt.Fprintf(e.stdout, "  its files in %s are kept (--remove-files removes them)\n", rec.Out)
		}
	}
	return nil
}

// managerForChange opens the storage of a command that changes the stored
// certificate named name (what says how, for messages), after checking
// that it is stored and that no running serve keeps it. The caller closes
// the storage.
func managerForChange(ctx context.Context, e *env, cf *caFlags, name, what string) (*manager.Manager, *openedStorage, error) {
	st, err := openStorage(ctx, e, &cf.storageFlags, mustExist, cf.logger(e))
	if err != nil {
		return nil, nil, err
	}
	m := manager.New(st.store, nil, cf.logger(e))
	if !certNameStored(ctx, m, name) {
		st.Close()
		return nil, nil, usagef("no certificate named %q is stored in %s (see tlsalpn list)", name, st.where())
	}
	if err := keptByServe(ctx, st.store, name, what); err != nil {
		st.Close()
		return nil, nil, err
	}
	return m, st, nil
}

// certNameStored reports whether name is a stored certificate name,
// readable or damaged.
func certNameStored(ctx context.Context, m *manager.Manager, name string) bool {
	all, bad, err := m.List(ctx)
	if err != nil {
		return true // let the command itself say what is wrong
	}
	for _, s := range all {
		if s.Name() == name {
			return true
		}
	}
	for _, d := range bad {
		if d.Name == name {
			return true
		}
	}
	return false
}
