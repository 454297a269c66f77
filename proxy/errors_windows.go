package proxy

import "golang.org/x/sys/windows"

// errTooManyFiles is WSAEMFILE: out of sockets, worth a retry after a pause.
const errTooManyFiles = windows.WSAEMFILE
