#!/usr/bin/env bash
# The whole test suite, as README.md shows it and CI runs it (.ci/run).
# Everything the tests need comes from this repository's own files: nginx
# and HAProxy from Debian's packages (scripts/ci-deps.sh installs what is
# missing), Pebble and etcd's server from the Go module proxy (pinned in
# go.mod as tools; internal/etcdtest builds etcd once into the user cache).
# All traffic stays on loopback.
set -euo pipefail
cd "$(dirname "$0")"
if ! scripts/ci-deps.sh; then
	# Off CI, the tests that need nginx or HAProxy skip themselves.
	if [ -n "${CI:-}" ]; then exit 1; fi
	echo "test.sh: could not install nginx/HAProxy; the tests that need them will be skipped" >&2
fi
go vet ./...
# The product builds for every system it is released for; where a feature
# cannot work (serve on windows, steering off Linux) it refuses at run time
# with a reason, so a build failure here is a regression, not a port to do.
# Each is vetted too, tests included (the tests run on Linux only, but
# must compile everywhere): ~8 s for the three with the build cache warm.
for os in windows darwin freebsd; do
	GOOS=$os go build ./...
	GOOS=$os go vet ./...
done
# go.mod and go.sum say exactly what the code imports (needs the Go module
# proxy, as the rest of the build does).
go mod tidy -diff
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted" >&2; exit 1; fi
go test -race -count=1 -timeout 30m ./...
