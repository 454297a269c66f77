#!/usr/bin/env bash
# The whole test suite, as README.md shows it and CI runs it (.ci/run).
# Everything the tests need comes from this repository's own files: nginx
# and HAProxy from Debian's packages (scripts/ci-deps.sh installs what is
# missing), Pebble from the Go module proxy (pinned in go.mod as a tool).
# All traffic stays on loopback.
set -euo pipefail
cd "$(dirname "$0")"
if ! scripts/ci-deps.sh; then
	# Off CI, the tests that need nginx or HAProxy skip themselves.
	if [ -n "${CI:-}" ]; then exit 1; fi
	echo "test.sh: could not install nginx/HAProxy; the tests that need them will be skipped" >&2
fi
go vet ./...
# The product builds for every system it may be run on (serve's kernel
# steering and splice are Linux's; elsewhere it relays through buffers),
# and go.mod says exactly what it uses.
for os in darwin freebsd windows; do GOOS=$os GOARCH=amd64 go build ./...; done
if ! go mod tidy -diff; then echo "go mod tidy would change go.mod/go.sum" >&2; exit 1; fi
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted" >&2; exit 1; fi
go test -race -count=1 -timeout 30m ./...
