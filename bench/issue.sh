#!/usr/bin/env bash
# Wall time of `tlsalpn issue`, process start included, against the Pebble
# binary pinned in go.mod with PEBBLE_VA_NOSLEEP=1, each run with a fresh
# account (fresh storage). Prints the median and the spread of RUNS runs for:
#   1 name; 10 names with --separate (no Retry-After hints); and 1 name with
#   Pebble's Retry-After hints set to 1 s (bench/pebble-bench-hints.json).
# Usage: bench/issue.sh [RUNS]     (default 15)
# Everything listens on 127.0.0.1 only.
set -euo pipefail
runs=${1:-15}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cd "$root"
go build -o "$work/bin/" ./cmd/tlsalpn github.com/letsencrypt/pebble/v2/cmd/pebble github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv
pebbledir=$(go list -m -f '{{.Dir}}' github.com/letsencrypt/pebble/v2)

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

(cd "$pebbledir" && exec "$work/bin/pebble-challtestsrv" -dnsserver 127.0.0.1:18053 -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
  -http01 "" -https01 "" -tlsalpn01 "" -doh "" -management 127.0.0.1:18055 >"$work/challtestsrv.log" 2>&1) &
pids+=($!)
wait_port 18053

start_pebble() { # config file
  if [ -n "${pebble_pid:-}" ]; then kill "$pebble_pid"; wait "$pebble_pid" 2>/dev/null || true; fi
  (cd "$pebbledir" && PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 exec "$work/bin/pebble" -config "$1" -dnsserver 127.0.0.1:18053 >"$work/pebble.log" 2>&1) &
  pebble_pid=$!
  pids+=($pebble_pid)
  wait_port 14100
}

# one_run LABEL ARGS...: prints seconds for one issuance with a fresh account.
one_run() {
  local n=$1; shift
  local s="$work/run-$n"
  rm -rf "$s"
  local t0 t1
  t0=$(date +%s.%N)
  # The preflight checks the port Pebble's VA dials (5101, not 443), on the
  # addresses Pebble's DNS gives (challtestsrv's, not this host's resolver).
  TLSALPN_DNS_SERVER=127.0.0.1:18053 "$work/bin/tlsalpn" issue --ca https://127.0.0.1:14100/dir \
    --ca-root "$pebbledir/test/certs/pebble.minica.pem" --agree-tos --email bench@example.com \
    --listen 127.0.0.1:5101 --validation-port 5101 --storage "$s/store" --out "$s/out" "$@" >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
}

measure() { # LABEL ARGS...
  local label=$1; shift
  local times=()
  for i in $(seq 1 "$runs"); do times+=("$(one_run "$i" "$@")"); done
  printf '%s\n' "${times[@]}" | sort -n | awk -v label="$label" -v runs="$runs" '
    { v[NR]=$1 } END { med = (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2;
      printf "%-44s median %.3f s   min %.3f s   max %.3f s   (%d runs)\n", label, med, v[1], v[NR], runs }'
}

ten=(); for i in $(seq 1 10); do ten+=(-d "n$i.bench.example.com"); done

start_pebble "$root/bench/pebble-bench.json"
measure "issue, 1 name (no Retry-After)" -d one.bench.example.com
measure "issue, 10 names --separate (no Retry-After)" "${ten[@]}" --separate
start_pebble "$root/bench/pebble-bench-hints.json"
measure "issue, 1 name (Retry-After 1 s)" -d one.bench.example.com
