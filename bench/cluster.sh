#!/usr/bin/env bash
# Cluster-mode benchmarks (issue 11), each a `go test -bench` run whose figures are custom
# metrics measured in that run (b.ReportMetric), on real parts: etcd's own server (three
# members, processes of their own), Pebble, HAProxy, serve nodes as processes.
#   1. propagation of a renewed certificate to every node, p50/p99/max over 50 renewals
#      (manager BenchmarkPropagation: 3 and 10 nodes, each a watcher with a client of its own);
#   2. etcd requests per issuance, counted by etcd (its /metrics on each member, before and
#      after; the idle cluster's lease keep-alives subtracted): one certificate through three
#      serve nodes behind HAProxy, Pebble validating, then its renewal (renewal-*) ordered from
#      outside the nodes as "tlsalpn renew" does (frontdoor BenchmarkEtcdRequestsPerIssuance);
#   3. order placed to "ready" (Publish returns: every node acknowledged and was checked on its
#      own address) with 1, 3 and 5 nodes, p50/p99/max over 50 (cluster BenchmarkPublishReady);
#   4. a fresh node (a serve process) catching up 1,000 and 10,000 certificates stored in etcd
#      (real P-256 certificates signed with crypto/x509 by a benchmark CA): time from its start
#      until it serves the last one, its VmHWM/VmRSS, bytes per certificate in etcd
#      (frontdoor BenchmarkCatchUp).
# Usage: bench/cluster.sh [BENCH_REGEXP_FILTER]   (default: all four; e.g. 'CatchUp' for one)
# Needs haproxy (scripts/ci-deps.sh); the first run builds etcd's server (about 30 s, cached).
# Everything listens on 127.0.0.1 only, on free ports. One benchmark at a time: the figures
# are latencies, and the machine's cores are shared by etcd, the nodes and the client.
set -euo pipefail
filter=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v haproxy >/dev/null || { echo "missing haproxy: run scripts/ci-deps.sh" >&2; exit 1; }

run() { # PACKAGE BENCHMARK TITLE
  if [ -n "$filter" ] && ! [[ $2 =~ $filter ]]; then return 0; fi
  echo "== $3"
  # Only the benchmark lines (the nodes' and etcd's logs go to the test's output on failure).
  go test -run '^$' -bench "^$2\$" -benchtime 1x -count 1 -timeout 15m "$1" 2>&1 |
    awk '/^Benchmark/ { sub(/-[0-9]+[ \t]/, " "); $2 = ""; $3 = ""; $4 = ""; gsub(/ +/, " "); print "  " $0; next }
         /^(FAIL|--- FAIL|panic)/ { failed = 1 } failed { print }
         END { exit failed }'
}

run ./manager/  BenchmarkPropagation             "1. renewed certificate to every node (ms from stored to the last node's cache; 50 renewals; 3-member etcd)"
run ./frontdoor/ BenchmarkEtcdRequestsPerIssuance "2. etcd requests for one certificate through 3 serve nodes, and for its renewal (summed over 3 members; idle keep-alives subtracted)"
run ./cluster/  BenchmarkPublishReady            "3. order placed to ready, ms (Publish: every node acknowledged and checked; 50 publications; 3-member etcd)"
run ./frontdoor/ BenchmarkCatchUp                 "4. fresh node catching up N certificates (start to serving the last; its memory; bytes per certificate in etcd)"
