package proxy

import "golang.org/x/sys/windows"

// errTooManyFiles is WSAEMFILE, Winsock's EMFILE: out of socket handles,
// worth a retry after a pause.
const errTooManyFiles = windows.WSAEMFILE
