#!/usr/bin/env bash
# ns/op and allocs/op of challenge.Build and challenge.Verify (targets on a
# 2-core machine: Build <= 100 µs, Verify <= 50 µs), five runs each.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench '^Benchmark(Build|Verify)$' -benchmem -count "${1:-5}" ./challenge
