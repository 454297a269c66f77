//go:build unix

package proxy

import "syscall"

// errTooManyFiles is EMFILE: out of descriptors, worth a retry after a pause.
const errTooManyFiles = syscall.EMFILE
