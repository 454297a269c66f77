package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tlsalpn/tlsalpn/frontdoor"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

const storageUsage = `Usage: tlsalpn storage copy SRC DST [flags]

Copies all of tlsalpn's state (accounts, certificates and their keys, the
order journal) from one storage to another: a directory or an etcd cluster
(etcd://HOST:PORT[,HOST:PORT…]/PREFIX), either way. This is how one host
moves to a cluster:

  systemctl stop tlsalpn
  tlsalpn storage copy /var/lib/tlsalpn etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/tlsalpn \
      --encryption-key /etc/tlsalpn/storage.key

Every value is read back from DST and compared byte for byte, and at the end
SRC is read again: a source that changed meanwhile fails the copy. Copy takes
no locks: stop serve on SRC first. It refuses a directory SRC, or any DST,
that a running serve uses; a live cluster may be copied to a directory, as a
backup. Private values stay private: 0600 in a directory, encrypted with
--encryption-key in etcd. A DST that already holds state is refused unless
--overwrite, which makes it hold exactly SRC's state (keys SRC lacks are
deleted). The etcd flags apply to whichever side is etcd://.

Exit status: 0 copied and verified; 1 failed or did not match (the output
says which keys); 2 usage error, nothing was written.
`

// runStorage dispatches "tlsalpn storage SUBCOMMAND".
func runStorage(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usagef("give a subcommand: tlsalpn storage copy SRC DST (see tlsalpn storage --help)")
	}
	switch args[0] {
	case "copy":
		return runStorageCopy(ctx, e, args[1:])
	case "-h", "--help", "help":
		fmt.Fprint(e.stdout, storageUsage)
		return errHelp
	}
	return usagef("unknown subcommand %q: tlsalpn storage copy SRC DST (see tlsalpn storage --help)", args[0])
}

func runStorageCopy(ctx context.Context, e *env, args []string) error {
	var sf storageFlags
	var overwrite, verbose bool
	f := newFlagSet(e, "storage copy", storageUsage)
	sf.registerEtcd(f)
	f.BoolVar(&overwrite, "overwrite", false, "replace what DST holds with SRC's state (keys SRC does not have are deleted)")
	f.BoolVar(&verbose, "v", false, "show info logs")
	if err := f.parse(args, 2); err != nil {
		return err
	}
	if len(f.pos) != 2 {
		return usagef("give SRC and DST: tlsalpn storage copy SRC DST (a directory or etcd://HOST:PORT/PREFIX each)")
	}
	src, dst, err := copyLocs(e, &sf, f.pos[0], f.pos[1])
	if err != nil {
		return err
	}
	logger := (&caFlags{verbose: verbose}).logger(e)
	from, err := openLoc(ctx, src, mustExist, logger)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer from.Close()
	to, err := openLoc(ctx, dst, create, logger)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	defer to.Close()
	if err := refuseLiveServes(ctx, from, to); err != nil {
		return err
	}
	var opts storage.CopyOptions
	opts.Overwrite = overwrite
	opts.SrcMode, opts.DstMode = modeOf(from.store), modeOf(to.store)
	res, err := storage.Copy(ctx, to.store, from.store, opts)
	if errors.Is(err, storage.ErrDestinationNotEmpty) {
		return usagef("%s already holds tlsalpn state (%v); nothing was written: give --overwrite to replace it with %s's", dst.where(), err, src.where())
	}
	if err != nil {
		if n := res.Total(); n > 0 {
			return fmt.Errorf("copying %s to %s failed after %d keys (the copy is incomplete: run it again with --overwrite): %w", src.where(), dst.where(), n, err)
		}
		return fmt.Errorf("copying %s to %s: %w", src.where(), dst.where(), err)
	}
	printCopyResult(e, src, dst, res)
	return nil
}

// refuseLiveServes refuses a copy into a storage a serve runs on (it would
// write under it), and out of a directory a serve runs on: that serve
// would go on renewing into the directory after the copy, and the new
// storage would silently fall behind. A live etcd source (a cluster) may
// be copied, as a backup: the copy's final check fails it if anything
// changed meanwhile.
func refuseLiveServes(ctx context.Context, from, to *openedStorage) error {
	for _, side := range []struct {
		what string
		st   *openedStorage
	}{{"DST", to}, {"SRC", from}} {
		if side.what == "SRC" && side.st.loc.etcd != nil {
			continue
		}
		live, err := frontdoor.LiveServes(ctx, side.st.store)
		if err != nil {
			return fmt.Errorf("%s %s: %w", side.what, side.st.where(), err)
		}
		if len(live) > 0 {
			return fmt.Errorf("%s %s is in use by %s: stop it first (systemctl stop tlsalpn), then copy; nothing was written", side.what, side.st.where(), serveName(live[0]))
		}
	}
	return nil
}

// modeOf returns how to read the permission bits of a key of s: the file's
// mode in a directory, the mode carried in the value's header in etcd
// (sealed when private); nil for a backend that keeps none.
func modeOf(s storage.Storage) func(context.Context, string) (os.FileMode, error) {
	switch s := s.(type) {
	case *fs.FS:
		return fsMode(s)
	case interface {
		Mode(context.Context, string) (os.FileMode, error)
	}:
		return s.Mode
	}
	return nil
}

// copyLocs resolves storage copy's SRC and DST. The etcd flags belong to
// whichever is an etcd:// URL; given with two directories they are a usage
// error, like everywhere else.
func copyLocs(e *env, sf *storageFlags, srcArg, dstArg string) (src, dst storageLoc, err error) {
	isEtcd := func(s string) bool { return strings.HasPrefix(s, etcdScheme) }
	if !isEtcd(srcArg) && !isEtcd(dstArg) {
		if given := sf.etcdFlagsGiven(); len(given) > 0 {
			return src, dst, usagef("%s %s for an etcd:// storage, but %s and %s are directories", strings.Join(given, ", "), isAre(len(given)), srcArg, dstArg)
		}
	}
	resolve := func(what, arg string) (storageLoc, error) {
		if arg == "" {
			return storageLoc{}, usagef("%s is empty (an unset variable?): give a directory or etcd://HOST:PORT/PREFIX", what)
		}
		one := storageFlags{storage: arg}
		if isEtcd(arg) {
			one = *sf
			one.storage = arg
		}
		loc, err := one.resolve(e)
		if err != nil {
			return loc, err
		}
		if loc.etcd == nil {
			if loc.dir, err = filepath.Abs(loc.dir); err != nil {
				return loc, usagef("%s %s: %v", what, arg, err)
			}
		}
		return loc, nil
	}
	if src, err = resolve("SRC", srcArg); err != nil {
		return src, dst, err
	}
	if dst, err = resolve("DST", dstArg); err != nil {
		return src, dst, err
	}
	if sameStorage(src, dst) {
		return src, dst, usagef("SRC and DST are the same storage (%s)", src.where())
	}
	return src, dst, nil
}

// sameStorage reports whether a and b are one storage: the same directory,
// or the same prefix on an etcd with an endpoint in common.
func sameStorage(a, b storageLoc) bool {
	if (a.etcd == nil) != (b.etcd == nil) {
		return false
	}
	if a.etcd == nil {
		return filepath.Clean(a.dir) == filepath.Clean(b.dir)
	}
	if a.etcd.Prefix != b.etcd.Prefix {
		return false
	}
	for _, ep := range a.etcd.Endpoints {
		if slices.Contains(b.etcd.Endpoints, ep) {
			return true
		}
	}
	return false
}

// printCopyResult says what storage copy copied, in counts a person can
// compare with tlsalpn list on either side.
func printCopyResult(e *env, src, dst storageLoc, res storage.CopyResult) {
	var parts []string
	for _, p := range storage.DurablePrefixes() {
		if n := res.Copied[p]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", p, n))
		}
	}
	detail := "nothing to copy"
	if len(parts) > 0 {
		detail = strings.Join(parts, ", ")
	}
	privacy := "0600"
	if dst.etcd != nil {
		privacy = "encrypted"
	}
	fmt.Fprintf(e.stdout, "copied %d %s (%s; %d private, %s) from %s to %s: %d bytes, each read back and compared\n",
		res.Total(), plural(res.Total(), "key"), detail, res.Private, privacy, src.where(), dst.where(), res.Bytes)
	if res.Removed > 0 {
		fmt.Fprintf(e.stdout, "removed %d %s from %s that %s does not have (--overwrite)\n", res.Removed, plural(res.Removed, "key"), dst.where(), src.where())
	}
	if len(res.Skipped) > 0 {
		var skipped []string
		for _, p := range slices.Sorted(maps.Keys(res.Skipped)) {
			skipped = append(skipped, fmt.Sprintf("%s/ %d", p, res.Skipped[p]))
		}
		fmt.Fprintf(e.stdout, "not copied, as they belong to running processes or are not state: %s\n", strings.Join(skipped, ", "))
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
