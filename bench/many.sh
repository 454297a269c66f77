#!/usr/bin/env bash
# Many certificates at once, tlsalpn against Caddy, in one run, against the
# Pebble binary pinned in go.mod (PEBBLE_VA_NOSLEEP=1, no authorization
# reuse, no rejected nonces; pebble-challtestsrv as its DNS, every name
# resolving to 127.0.0.1). Two jobs, each done by both tools:
#   issue:  BENCH_ISSUE_NAMES (100) names, one certificate each:
#           `tlsalpn issue --separate`, and Caddy with the names in
#           tls.certificates.automate (it obtains them at start and serves
#           nothing; CertMagic's own listener answers the challenge);
#   serve:  BENCH_SERVE_NAMES (1,000) names, one certificate each, served:
#           `tlsalpn serve` with them in its config file (terminate mode),
#           and Caddy with an HTTPS server for them; both answer the
#           challenges on the port Pebble's VA dials.
# For each: wall time from the process's start until every certificate is
# issued (issue: the command exits; tlsalpn serve: /readyz answers 200,
# "every certificate is stored"; Caddy: every certificate is in its storage
# and logged "certificate obtained successfully", polled every 0.1 s), the
# ACME requests per certificate (from Pebble's log, one line per request,
# the same count for both tools; per kind below the table), and the peak
# memory (issue: GNU time's max RSS; the daemons: VmHWM from /proc).
# Every certificate is then checked as a client would (it names its name and
# chains to this Pebble's root: stored for the issue job, served over TLS
# for the serve job); one missing or wrong fails the bench (exit 1).
# Each job runs with a fresh Pebble, a fresh account and fresh storage.
# Pebble itself can lock up under many orders (a lock-order inversion in its
# in-memory store: new-order's FindValidAuthorization holds the store and
# waits for an authorization that the authorization handler holds while it
# waits for the store); it struck both tools at about 1,000 orders. When a
# tool reports errors, Pebble's goroutines are dumped: if that is what
# happened, the bench says so and runs the job again with a fresh Pebble
# (at most twice); any other failure ends it.
#
# Caddy is built from the nested module bench/caddy (v2.11.9, kept out of
# tlsalpn's go.mod). CertMagic throttles its orders to 10 per 10 s per CA
# and account (RateLimitEvents, not settable from Caddy's config), so its
# 1,000-name job takes about 17 minutes: that is Caddy as shipped.
#
# Usage: bench/many.sh       BENCH_ROUNDS=N (default 1) runs every job N
#   times, the tools taken in turn; BENCH_ISSUE_NAMES, BENCH_SERVE_NAMES
#   change the sizes (e.g. 5 and 20 to try the script in seconds);
#   BENCH_TOOLS="tlsalpn" leaves Caddy out; BENCH_KEEP=1 keeps the logs.
# Everything listens on 127.0.0.1 only, on ports picked free at run time.
set -eEuo pipefail
rounds=${BENCH_ROUNDS:-1}
issue_n=${BENCH_ISSUE_NAMES:-100}
serve_n=${BENCH_SERVE_NAMES:-1000}
tools=${BENCH_TOOLS:-tlsalpn caddy}
for v in "$rounds" "$issue_n" "$serve_n"; do
  case $v in '' | *[!0-9]* | 0) echo "many.sh: BENCH_ROUNDS, BENCH_ISSUE_NAMES and BENCH_SERVE_NAMES must be positive numbers (got '$v')" >&2; exit 2 ;; esac
done
for t in $tools; do
  case $t in tlsalpn | caddy) ;; *) echo "many.sh: BENCH_TOOLS: unknown tool '$t' (want tlsalpn and/or caddy)" >&2; exit 2 ;; esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
# Every process started is tracked in a file: the jobs run in subshells.
track() { echo "$1" >>"$work/pids"; }
cleanup() {
  if [ -f "$work/pids" ]; then while read -r p; do kill "$p" 2>/dev/null || true; done <"$work/pids"; fi
  wait 2>/dev/null || true
  if [ -n "${BENCH_KEEP:-}" ]; then echo "many.sh: logs and storage kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
# Any command failing unexpectedly stops the bench (set -e): say where.
trap 'echo "many.sh: FAILED: line $LINENO: $BASH_COMMAND exited $?" >&2' ERR
# fail MESSAGE: the bench fails (exit 1), the job's daemon stopped.
fail() {
  echo "many.sh: FAILED: $*" >&2
  if [ -n "${job_pid:-}" ]; then kill "$job_pid" 2>/dev/null || true; fi
  exit 1
}
[ -x /usr/bin/time ] || fail "GNU time is needed for the peak memory of tlsalpn issue (apt-get install time)"
command -v curl >/dev/null || fail "curl is needed (apt-get install curl)"

cd "$root"
echo "building tlsalpn, pebble, pebble-challtestsrv, manycerts and caddy (bench/caddy) ..." >&2
go build -o "$work/bin/" ./cmd/tlsalpn ./bench/manycerts github.com/letsencrypt/pebble/v2/cmd/pebble github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv
case " $tools " in *" caddy "*) (cd bench/caddy && go build -o "$work/bin/caddy" github.com/caddyserver/caddy/v2/cmd/caddy) ;; esac
pebbledir=$(go list -m -f '{{.Dir}}' github.com/letsencrypt/pebble/v2)
minica="$pebbledir/test/certs/pebble.minica.pem"
mc="$work/bin/manycerts"

# Ports: challtestsrv's DNS and management; Pebble's ACME, management, the
# VA's TLS and HTTP ports; tlsalpn serve's admin API; Caddy's HTTP port.
mapfile -t port < <("$mc" ports 8)
dns_port=${port[0]} cts_mgmt=${port[1]} acme_port=${port[2]} mgmt_port=${port[3]}
tls_port=${port[4]} http_port=${port[5]} admin_port=${port[6]} caddy_http=${port[7]}
ca_url="https://127.0.0.1:$acme_port/dir"

# wait_port PORT: bounded, 10 s.
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; fail "port $1 never opened"; }
# port_free PORT: nothing listens there (the last job's process is gone).
port_free() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null || return 0; sleep 0.05; done; fail "port $1 still taken"; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

(cd "$pebbledir" && exec "$work/bin/pebble-challtestsrv" -dnsserver "127.0.0.1:$dns_port" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
  -http01 "" -https01 "" -tlsalpn01 "" -doh "" -management "127.0.0.1:$cts_mgmt" >"$work/challtestsrv.log" 2>&1) &
track $!
wait_port "$dns_port"

cat >"$work/pebble.json" <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:$acme_port",
    "managementListenAddress": "127.0.0.1:$mgmt_port",
    "certificate": "test/certs/localhost/cert.pem",
    "privateKey": "test/certs/localhost/key.pem",
    "httpPort": $http_port,
    "tlsPort": $tls_port,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false,
    "retryAfter": { "authz": 0, "order": 0 },
    "keyAlgorithm": "ecdsa",
    "profiles": { "default": { "description": "90 days", "validityPeriod": 7776000 } }
  }
}
EOF

# start_pebble DIR: a fresh Pebble (no orders, no accounts, new roots)
# logging to DIR/pebble.log; its roots and intermediates go to DIR/roots.pem.
pebble_pid=
start_pebble() {
  stop_pebble
  (cd "$pebbledir" && PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
    exec "$work/bin/pebble" -config "$work/pebble.json" -dnsserver "127.0.0.1:$dns_port" >"$1/pebble.log" 2>&1) &
  pebble_pid=$!
  track "$pebble_pid"
  wait_port "$acme_port"
  wait_port "$mgmt_port"
  { curl -sf --cacert "$minica" "https://127.0.0.1:$mgmt_port/roots/0"
    curl -sf --cacert "$minica" "https://127.0.0.1:$mgmt_port/intermediates/0"; } >"$1/roots.pem" ||
    fail "fetching Pebble's roots from its management interface"
}
stop_pebble() {
  if [ -n "$pebble_pid" ]; then kill "$pebble_pid" 2>/dev/null || true; wait "$pebble_pid" 2>/dev/null || true; pebble_pid=; fi
}

# tool_failed DIR MESSAGE: a tool reported errors. Pebble is made to dump
# its goroutines (it exits): if one is blocked in FindValidAuthorization,
# Pebble locked up (above) and the job ends with 3, to be run again; any
# other failure fails the bench.
tool_failed() {
  if [ -n "${job_pid:-}" ]; then kill "$job_pid" 2>/dev/null || true; fi
  kill -QUIT "$pebble_pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pebble_pid" 2>/dev/null || break; sleep 0.05; done
  if grep -q 'MemoryStore).FindValidAuthorization' "$1/pebble.log"; then
    echo "many.sh: $2: Pebble locked up (a new-order blocked in FindValidAuthorization; goroutines dumped to $1/pebble.log)" >&2
    exit 3
  fi
  fail "$2"
}

# stop PID: SIGTERM, waited for (bounded by the daemons' own drain).
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
vmhwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

names_file() { # N FILE PREFIX
  : >"$2"
  for i in $(seq 1 "$1"); do echo "$3$i.many.example.com" >>"$2"; done
}

# Each job prints one line to $work/results: TOOL JOB WALL_S PEAK_KIB
# REQUESTS KIND COUNT ..., then checks every certificate.
record() { # TOOL JOB DIR WALL PEAK
  local reqs
  reqs=$("$mc" acme-requests "$3/pebble.log") || fail "$1 $2: counting ACME requests"
  echo "$1 $2 $4 $5 $reqs" >>"$work/results"
  printf '  %-8s %-6s %8.2f s %8.1f MiB  %s\n' "$1" "$2" "$4" "$(awk -v k="$5" 'BEGIN { print k / 1024 }')" "$reqs" >&2
}

job_tlsalpn_issue() { # DIR
  local d=$1 args=() t0 t1
  names_file "$issue_n" "$d/names" i
  while read -r n; do args+=(-d "$n"); done <"$d/names"
  t0=$(now)
  # The preflight checks the port Pebble's VA dials, on the addresses
  # Pebble's DNS gives (challtestsrv's, not this host's resolver).
  TLSALPN_DNS_SERVER="127.0.0.1:$dns_port" /usr/bin/time -f %M -o "$d/time" "$work/bin/tlsalpn" issue --separate --ca "$ca_url" \
    --ca-root "$minica" --agree-tos --email bench@example.com --listen "127.0.0.1:$tls_port" --validation-port "$tls_port" \
    --storage "$d/store" --out "$d/out" --timeout 5m "${args[@]}" >"$d/issue.out" 2>"$d/issue.log" ||
    { tail -5 "$d/issue.log" >&2; tool_failed "$d" "tlsalpn issue --separate of $issue_n names exited non-zero (log above)"; }
  t1=$(now)
  "$mc" stored -names "$d/names" -roots "$d/roots.pem" "$d/store" >&2 || fail "tlsalpn issue: certificates missing (above)"
  record tlsalpn issue "$d" "$(sub "$t0" "$t1")" "$(tail -1 "$d/time")"
}

job_tlsalpn_serve() { # DIR
  local d=$1 t0 t1 pid ready=
  names_file "$serve_n" "$d/names" s
  {
    echo "listen: 127.0.0.1:$tls_port"
    echo "storage: $d/store"
    echo "admin: 127.0.0.1:$admin_port"
    echo "acme: {ca: \"$ca_url\", ca_root: \"$minica\", email: bench@example.com, agree_tos: true}"
    echo "proxy: {steer: \"off\"}"
    echo "routes:"
    echo "  - backend: 127.0.0.1:$caddy_http" # TLS terminated here; no request reaches it
    echo "    mode: http"
    echo "    names:"
    while read -r n; do echo "      - $n"; done <"$d/names"
    echo "certificates:"
    while read -r n; do echo "  - names: [$n]"; done <"$d/names"
  } >"$d/serve.yaml"
  port_free "$tls_port"
  t0=$(now)
  # --no-preflight: serve's preflight checks port 443, the port every real
  # CA dials, and serve (unlike issue) has no --validation-port for a test
  # CA that dials another; Caddy has no preflight either.
  "$work/bin/tlsalpn" serve --no-preflight --config "$d/serve.yaml" >"$d/serve.out" 2>"$d/serve.log" &
  pid=$!
  job_pid=$pid
  track "$pid"
  # Bounded: 30 min at 0.1 s; a serve that exits fails at once.
  for _ in $(seq 1 18000); do
    if curl -sf -o /dev/null "http://127.0.0.1:$admin_port/readyz"; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || { tail -20 "$d/serve.log" >&2; fail "tlsalpn serve exited before its $serve_n certificates were stored (log above)"; }
    # A failed order is retried minutes later: fail now, loudly.
    if grep -q '"level":"ERROR"' "$d/serve.log"; then grep '"level":"ERROR"' "$d/serve.log" | head -3 >&2; tool_failed "$d" "tlsalpn serve logged errors while obtaining (above)"; fi
    sleep 0.1
  done
  t1=$(now)
  [ -n "$ready" ] || { curl -s "http://127.0.0.1:$admin_port/readyz" >&2; fail "tlsalpn serve: not ready after 30 min"; }
  "$mc" served -names "$d/names" -roots "$d/roots.pem" "127.0.0.1:$tls_port" >&2 || fail "tlsalpn serve: certificates not served (above)"
  local peak
  peak=$(vmhwm_kib "$pid")
  stop "$pid"
  grep -q '"level":"ERROR"' "$d/serve.log" && { grep '"level":"ERROR"' "$d/serve.log" | head -5 >&2; fail "tlsalpn serve logged errors (above; $d/serve.log)"; }
  record tlsalpn serve "$d" "$(sub "$t0" "$t1")" "$peak"
}

# caddy_job DIR JOB MODE N PREFIX: Caddy started with its config; done when
# N certificates are in its storage and logged obtained.
caddy_job() {
  local d=$1 job=$2 mode=$3 n=$4 t0 t1 pid done=
  names_file "$n" "$d/names" "$5"
  "$mc" caddy-config -mode "$mode" -names "$d/names" -ca "$ca_url" -ca-root "$minica" -storage "$d/store" \
    -tls-port "$tls_port" -http-port "$caddy_http" >"$d/caddy.json"
  port_free "$tls_port"
  t0=$(now)
  # HOME and XDG_*: Caddy writes its autosave and more there.
  HOME="$d/home" XDG_CONFIG_HOME="$d/home/config" XDG_DATA_HOME="$d/home/data" \
    "$work/bin/caddy" run --config "$d/caddy.json" >"$d/caddy.out" 2>"$d/caddy.log" &
  pid=$!
  job_pid=$pid
  track "$pid"
  # Bounded: 60 min at 0.1 s (Caddy's throttle makes 1,000 names ~17 min).
  for _ in $(seq 1 36000); do
    local files logged
    files=$({ find "$d/store/certificates" -name '*.crt' 2>/dev/null || true; } | wc -l)
    if [ "$files" -ge "$n" ]; then
      logged=$(grep -c '"certificate obtained successfully"' "$d/caddy.log" || true)
      if [ "$logged" -ge "$n" ]; then done=1; break; fi
    fi
    kill -0 "$pid" 2>/dev/null || { tail -20 "$d/caddy.log" >&2; fail "caddy exited before its $n certificates were obtained (log above)"; }
    # A failed order is retried later: fail now, loudly.
    if grep -q '"level":"error"' "$d/caddy.log"; then grep '"level":"error"' "$d/caddy.log" | head -3 >&2; tool_failed "$d" "caddy logged errors while obtaining (above)"; fi
    sleep 0.1
  done
  t1=$(now)
  [ -n "$done" ] || fail "caddy: $n certificates not obtained after 60 min"
  "$mc" stored -names "$d/names" -roots "$d/roots.pem" "$d/store" >&2 || fail "caddy $job: certificates missing (above)"
  if [ "$mode" = serve ]; then
    "$mc" served -names "$d/names" -roots "$d/roots.pem" "127.0.0.1:$tls_port" >&2 || fail "caddy $job: certificates not served (above)"
  fi
  local peak
  peak=$(vmhwm_kib "$pid")
  stop "$pid"
  record caddy "$job" "$d" "$(sub "$t0" "$t1")" "$peak"
}
job_caddy_issue() { caddy_job "$1" issue automate "$issue_n" i; }
job_caddy_serve() { caddy_job "$1" serve serve "$serve_n" s; }

: >"$work/results"
for r in $(seq 1 "$rounds"); do
  for job in issue serve; do
    for tool in $tools; do
      for attempt in 1 2 3; do
        d="$work/r$r-$tool-$job-$attempt"
        mkdir -p "$d"
        echo "round $r: $tool $job ($([ $job = issue ] && echo "$issue_n" || echo "$serve_n") names) ..." >&2
        start_pebble "$d"
        # In a subshell of its own (set -e holds there), so that a Pebble
        # that locked up (exit 3) can be told from a failure.
        rc=0
        ("job_${tool}_$job" "$d") &
        wait $! || rc=$?
        stop_pebble
        [ "$rc" = 0 ] && break
        [ "$rc" = 3 ] && [ "$attempt" -lt 3 ] || exit "$rc"
        echo "round $r: $tool $job: run again with a fresh Pebble" >&2
        echo "$tool $job" >>"$work/relocked"
      done
    done
  done
done

# The table: per tool and job, sums over the rounds (wall time and requests
# per certificate as the mean; peak memory the highest), and Caddy / tlsalpn.
echo
echo "Many certificates at once: tlsalpn vs Caddy against Pebble ($rounds round(s); issue $issue_n names, serve $serve_n names)"
awk -v issue_n="$issue_n" -v serve_n="$serve_n" '
  { tool=$1; job=$2; k=tool SUBSEP job; n[k]++; wall[k]+=$3; if ($4>peak[k]) peak[k]=$4; reqs[k]+=$6
    for (i=7; i<NF; i+=2) kind[k,$i]+=$(i+1) }
  END {
    printf "%-28s %12s %12s %14s\n", "", "tlsalpn", "caddy", "caddy/tlsalpn"
    split("issue serve", jobs, " ")
    for (j=1; j<=2; j++) {
      job=jobs[j]; certs=(job=="issue") ? issue_n : serve_n; t=("tlsalpn" SUBSEP job); c=("caddy" SUBSEP job)
      label=(job=="issue") ? "issue --separate, " issue_n " names" : "serve, " serve_n " names"
      printf "%s\n", label
      row("  wall time (s)", n[t] ? wall[t]/n[t] : -1, n[c] ? wall[c]/n[c] : -1, "%12.2f")
      row("  ACME requests / cert", n[t] ? reqs[t]/n[t]/certs : -1, n[c] ? reqs[c]/n[c]/certs : -1, "%12.2f")
      row("  peak memory (MiB)", n[t] ? peak[t]/1024 : -1, n[c] ? peak[c]/1024 : -1, "%12.1f")
    }
    printf "\nACME requests per certificate, by kind\n"
    nk=split("directory new-nonce new-account account new-order authz challenge order-poll finalize cert renewal-info revoke key-rollover list-orders", order, " ")
    for (j=1; j<=2; j++) {
      job=jobs[j]; certs=(job=="issue") ? issue_n : serve_n
      split("tlsalpn caddy", ts, " ")
      for (x=1; x<=2; x++) {
        k=(ts[x] SUBSEP job)
        if (!n[k]) continue
        printf "  %-6s %-8s", job, ts[x]
        for (q=1; q<=nk; q++) if (kind[k,order[q]]) printf " %s %.2f", order[q], kind[k,order[q]]/n[k]/certs
        printf "\n"
      }
    }
  }
  function row(label, a, b, f) {
    printf "%-28s", label
    if (a >= 0) printf f, a; else printf "%12s", "-"
    if (b >= 0) printf f, b; else printf "%12s", "-"
    if (a > 0 && b >= 0) printf " %13.2fx", b / a
    printf "\n"
  }' "$work/results"
if [ -f "$work/relocked" ]; then
  echo
  echo "Pebble locked up $(wc -l <"$work/relocked") time(s) (its own bug, above); these jobs were run again from the start: $(sort "$work/relocked" | uniq -c | awk '{ printf "%s%s %s x%d", sep, $2, $3, $1; sep=", " }')"
fi
