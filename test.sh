#!/usr/bin/env bash
# The whole test suite, as README.md shows it and CI runs it (.ci/run).
# Everything the tests need comes from this repository's own files and the
# Go module proxy (Pebble is pinned in go.mod as a tool); all traffic stays
# on loopback.
set -euo pipefail
cd "$(dirname "$0")"
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted" >&2; exit 1; fi
go test -race -count=1 -timeout 30m ./...
