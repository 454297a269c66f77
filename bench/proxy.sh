#!/usr/bin/env bash
# Front-door benchmarks, every figure a ratio measured in this one run on
# this machine (the client, the servers and the proxies share its cores):
#   1. keep-alive requests/s for a 1 KiB file (wrk -t2 -c64), straight to
#      nginx and through tlsalpn serve as it runs by default (steering: the
#      kernel hands connections to nginx's socket while no challenge is
#      pending), tlsalpn serve --steer off (every connection relayed, as
#      during a validation or with several routes), ualpn and HAProxy
#      (mode tcp);
#   2. new TLS connections/s (full handshakes: nginx has no session cache and
#      no tickets; wrk sends Connection: close), the same four ways;
#   2b. the same with a client that sleeps until the server answers
#      (bench/handshake -get), where wrk spins through each handshake;
#   3. system calls per new relayed connection, tlsalpn and HAProxy (strace -c
#      -f over a few seconds of new connections, divided by the connects);
#   4. terminate mode: full handshakes/s of tlsalpn serve terminating TLS vs a
#      minimal crypto/tls server with the same P-256 certificate;
#   5. memory per idle relayed connection at 5,000 connections (--steer off:
#      a steered connection costs tlsalpn nothing at all).
# Figures 1 and 2 also relay with 41 routes and a PROXY v2 header out (to an
# nginx port with proxy_protocol), beside HAProxy with send-proxy-v2.
# Usage: bench/proxy.sh [SECONDS]    (default 10 per measurement; BENCH_ROUNDS=3 rounds)
# Needs nginx, haproxy, ualpn (Debian's uacme) and wrk: CI_DEPS_BENCH=1 scripts/ci-deps.sh
# Everything listens on 127.0.0.1 only.
set -euo pipefail
secs=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail_log() { echo "--- $1"; cat "$1" 2>/dev/null; }
for tool in nginx haproxy ualpn wrk; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run CI_DEPS_BENCH=1 scripts/ci-deps.sh" >&2; exit 1; }
done
cd "$root"
go build -o "$work/bin/" ./cmd/tlsalpn ./bench/handshake ./bench/idleconns

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# A real P-256 certificate chain from the embedded CA, with its storage.
"$work/bin/tlsalpn" demo --dir "$work/demo" >/dev/null
cert="$work/demo/live/fullchain.pem"; key="$work/demo/live/key.pem"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 > "$work/1k"

mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 2;
worker_rlimit_nofile 20000;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 12000; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:18443 ssl;
    ssl_certificate $cert; ssl_certificate_key $key;
    ssl_session_cache off; ssl_session_tickets off;
    location = /1k { alias $work/1k; default_type text/plain; }
  }
  server {
    listen 127.0.0.1:18444 ssl proxy_protocol;
    ssl_certificate $cert; ssl_certificate_key $key;
    ssl_session_cache off; ssl_session_tickets off;
    location = /1k { alias $work/1k; default_type text/plain; }
  }
  server {
    listen 127.0.0.1:18080;
    location = /1k { alias $work/1k; default_type text/plain; }
  }
}
NGX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off; user root;' &
nginx_pid=$!; pids+=($nginx_pid)
wait_port 18443

"$work/bin/tlsalpn" serve --listen 127.0.0.1:19443 --backend 127.0.0.1:18443 --storage "$work/store" >"$work/serve.log" 2>&1 &
steer_pid=$!; pids+=($steer_pid)
env ${SERVE_ENV:-} "$work/bin/tlsalpn" serve --steer off --listen 127.0.0.1:19448 --backend 127.0.0.1:18443 --storage "$work/store-relay" >"$work/relay.log" 2>&1 &
serve_pid=$!; pids+=($serve_pid)
# Relayed with several routes (exact and wildcard names) and PROXY v2 out,
# as the README's nginx example runs.
{
  echo 'listen: "127.0.0.1:19449"'
  echo "storage: $work/store-routes"
  echo 'routes:'
  for i in $(seq 1 20); do echo "  - names: [site$i.example.com, \"*.site$i.example.org\"]"; echo "    backend: 127.0.0.1:18080"; done
  echo '  - names: [localhost]'
  echo '    backend: 127.0.0.1:18444'
  echo '    send_proxy: 2'
} > "$work/routes.yaml"
"$work/bin/tlsalpn" serve --steer off --config "$work/routes.yaml" --no-preflight >"$work/routes.log" 2>&1 &
routes_pid=$!; pids+=($routes_pid)
ualpn -b 127.0.0.1@19444 -c 127.0.0.1@18443 -s "$work/ualpn.sock" -n 2 -P 0 >"$work/ualpn.log" 2>&1 &
ualpn_pid=$!; pids+=($ualpn_pid)
cat > "$work/haproxy.cfg" <<HAP
global
  nbthread 2
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 10m
  timeout server 10m
listen front
  bind 127.0.0.1:19445
  server nginx 127.0.0.1:18443
listen front-proxy-v2
  bind 127.0.0.1:19451
  server nginx 127.0.0.1:18444 send-proxy-v2
HAP
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!; pids+=($haproxy_pid)
wait_port 19443; wait_port 19444; wait_port 19445; wait_port 19448; wait_port 19449; wait_port 19451
sleep 0.5
if grep -q "steering: while" "$work/serve.log"; then
  echo "tlsalpn serve (default): steering on"
else
  echo "tlsalpn serve (default): steering OFF here: $(grep -o 'why=.*' "$work/serve.log" | head -1)"
fi

rps() { # URL [extra wrk args]: prints requests/s and the requests made
  if [ "$load" = handshake ]; then # bench/handshake -get instead of wrk: a client that waits (see 2b)
    local url=${*: -1} port out
    port=${url#https://localhost:}; port=${port%%/*}
    out=$("$work/bin/handshake" -addr "127.0.0.1:$port" -sni localhost -c 64 -d "${secs}s" -get /1k)
    # A connection that failed is not a slower one: say so, and fail the
    # bench at its end (rps runs in a subshell: the mark is a file).
    case $out in *"failed 0,"*) ;; *) echo "bench/handshake through port $port: $out" >&2; echo "$port: $out" >> "$work/failed" ;; esac
    awk '{ n = $4; sub(/,/, "", n); print $2, n }' <<<"$out"
    return
  fi
  wrk -t2 -c64 -d"${secs}s" "$@" 2>&1 | awk '/requests in/ { n = $1 } /Requests\/sec/ { r = $2 } END { print r, n }'
}
ticks() { # PID: CPU time it and its children (ualpn's workers) used so far, in clock ticks (all, and in user space), and its context switches
  if [ -z "$1" ]; then echo 0 0 0; return; fi
  local p t=0 u=0 x=0 pt pu px
  for p in "$1" $(pgrep -P "$1"); do
    read -r pt pu < <(awk '{ sub(/^.*\) /, ""); print $12 + $13, $12 }' "/proc/$p/stat" 2>/dev/null || echo 0 0)
    px=$(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }')
    t=$(( t + pt )); u=$(( u + pu )); x=$(( x + px ))
  done
  echo "$t $u $x"
}
machine() { # CPU time of the whole machine so far, in clock ticks: busy, softirq, idle, stolen (by the hypervisor)
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $8, $5 + $6, $9 }' /proc/stat
}
backend_ticks() { # nginx's workers' CPU time so far, in clock ticks
  local t=0 p
  for p in $(pgrep -P "$nginx_pid"); do t=$(( t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0) )); done
  echo "$t"
}
hz=$(getconf CLK_TCK)
declare -A name=([18443]="nginx direct" [19443]="tlsalpn serve" [19448]="tlsalpn relay" [19444]="ualpn" [19445]="haproxy tcp"
  [19449]="tlsalpn relay, 41 routes, PROXY v2" [19451]="haproxy tcp, send-proxy-v2")
declare -A proc=([19443]=$steer_pid [19448]=$serve_pid [19444]=$ualpn_pid [19445]=$haproxy_pid [19449]=$routes_pid [19451]=$haproxy_pid)
# Throughput here drifts by ±10% from one minute to the next, so each
# figure is the sum of $rounds runs taken in turn (direct, then each proxy,
# then again), and ratios are of those sums. Each round starts one place
# further along the list, so that no proxy always follows the same one
# (the TIME_WAIT and caches a run leaves behind) or always runs first.
# Beside each, the proxy's own CPU time per request (from /proc: user +
# system), which does not depend on the share of the cores the scheduler
# gave it, and the part of that time spent in the proxy's own code (user
# space): the rest is the kernel's, reading and writing TCP sockets, which
# no relay can skip; and the proxy's context switches per request (every
# thread's, from /proc), its sleeps and wake-ups.
#
# Then where each request's time goes on the whole machine (from
# /proc/stat and /proc/PID/stat, µs of CPU per request): the proxy, nginx,
# everything else (mostly the client, wrk), and the time the cores sat
# idle while the run went on; then, within the busy time, the kernel's
# softirq work (TCP on loopback delivers each packet there, in whichever
# process sent it), and the time the hypervisor gave the cores to another
# guest (not ours to spend: a run with much of it is noise). A proxy that
# leaves cores idle under load is in the way of the others: idle counts
# against it as surely as its own CPU.
rounds=${BENCH_ROUNDS:-3}
ports=(18443 19443 19448 19444 19445 19449 19451)
compare() { # TITLE [wrk args]
  local title=$1; shift
  local -A sum=() reqs=() cpu=() ucpu=() ctx=() busy=() sirq=() idle=() back=() stol=()
  echo "$title"
  local np=${#ports[@]}
  for r in $(seq 1 "$rounds"); do
    for i in $(seq 0 $(( np - 1 ))); do
      local port=${ports[$(( (i + r - 1) % np ))]}
      local v n t0 t1 u0 u1 x0 x1 b0 b1 s0 s1 i0 i1 k0 k1 h0 h1
      read -r t0 u0 x0 < <(ticks "${proc[$port]:-}")
      read -r b0 s0 i0 h0 < <(machine); k0=$(backend_ticks)
      read -r v n < <(rps "$@" "https://localhost:$port/1k")
      read -r b1 s1 i1 h1 < <(machine); k1=$(backend_ticks)
      read -r t1 u1 x1 < <(ticks "${proc[$port]:-}")
      sum[$port]=$(awk -v a="${sum[$port]:-0}" -v b="$v" 'BEGIN { printf "%.0f", a + b }')
      reqs[$port]=$(( ${reqs[$port]:-0} + n ))
      cpu[$port]=$(( ${cpu[$port]:-0} + t1 - t0 ))
      ucpu[$port]=$(( ${ucpu[$port]:-0} + u1 - u0 ))
      ctx[$port]=$(( ${ctx[$port]:-0} + x1 - x0 ))
      busy[$port]=$(( ${busy[$port]:-0} + b1 - b0 ))
      sirq[$port]=$(( ${sirq[$port]:-0} + s1 - s0 ))
      idle[$port]=$(( ${idle[$port]:-0} + i1 - i0 ))
      back[$port]=$(( ${back[$port]:-0} + k1 - k0 ))
      stol[$port]=$(( ${stol[$port]:-0} + h1 - h0 ))
    done
  done
  for port in "${ports[@]}"; do
    awk -v n="${name[$port]}" -v r="${sum[$port]}" -v d="${sum[18443]}" -v k="$rounds" -v c="${cpu[$port]}" -v u="${ucpu[$port]}" -v x="${ctx[$port]}" -v q="${reqs[$port]}" -v hz="$hz" -v p="${proc[$port]:-}" \
      'BEGIN { printf "  %-36s %10.0f req/s   %.2fx of direct", n, r/k, r/d
               if (p != "") printf "   proxy CPU %6.1f us/request (%2.0f%% in user space), %5.2f context switches/request", c / hz * 1e6 / q, (c > 0 ? 100 * u / c : 0), x / q
               printf "\n" }'
  done
  echo "  where each request's time goes, whole machine (us of CPU per request; 2 cores):"
  printf "  %-36s %8s %8s %8s %8s %8s   %8s %8s\n" "" proxy nginx rest idle total softirq stolen
  for port in "${ports[@]}"; do
    awk -v n="${name[$port]}" -v c="${cpu[$port]}" -v q="${reqs[$port]}" -v hz="$hz" -v b="${busy[$port]}" -v s="${sirq[$port]}" -v i="${idle[$port]}" -v g="${back[$port]}" -v h="${stol[$port]}" \
      'BEGIN { f = 1e6 / hz / q; printf "  %-36s %8.1f %8.1f %8.1f %8.1f %8.1f   %8.1f %8.1f\n", n, c * f, g * f, (b - c - g) * f, i * f, (b + i) * f, s * f, h * f }'
  done
}
load=wrk
compare "1. keep-alive requests/s, 1 KiB file, wrk -t2 -c64, $rounds rounds of ${secs}s"
compare "2. new TLS connections/s (full handshake per request), wrk -t2 -c64 -H 'Connection: close', $rounds rounds of ${secs}s" -H "Connection: close"
# 2b. The same with a client that waits for the server. wrk, while a
# handshake is under way, keeps its connection's writable event and calls
# SSL_connect again at once each time, a read that fails with EAGAIN
# (perf stat -e syscalls:sys_exit_read --filter 'ret == -11': 29-40 per
# connection through the relay, 15-25 through HAProxy): its CPU grows with the time the path takes
# to pass the handshake on, and is taken from nginx and the proxy. Clients
# in the field (browsers, curl, Go) sleep until the answer comes, as
# bench/handshake does: Go's crypto/tls (TLS 1.3), then GET /1k with
# Connection: close and the answer read to its end, 64 connections.
load=handshake
compare "2b. new TLS connections/s, a client that waits (bench/handshake -c 64 -get /1k: TLS 1.3, one GET per connection), $rounds rounds of ${secs}s"
load=wrk

if command -v strace >/dev/null; then
  echo "3. system calls per new relayed connection (strace -c -f for 3 s of wrk -t1 -c8 -H 'Connection: close'; strace slows the process, so these are counts, not speeds)"
  for pp in "tlsalpn relay:19448:$serve_pid" "haproxy tcp:19445:$haproxy_pid"; do
    label=${pp%%:*}; rest=${pp#*:}; port=${rest%%:*}; pid=${rest#*:}
    timeout 4 strace -f -c -p "$pid" -o "$work/strace.$port" 2>/dev/null &
    sleep 0.5
    wrk -t1 -c8 -d3s -H "Connection: close" "https://localhost:$port/1k" >/dev/null 2>&1
    wait $! 2>/dev/null || true
    # Connections are counted by the backend sockets made (one connect each).
    awk -v label="$label" '$NF == "connect" { c = $4 } $NF != "total" && $4 ~ /^[0-9]+$/ { n[$NF] = $4; t += $4 }
      END { if (!c) { print "  " label ": no connection seen"; exit }
            top = ""; for (k in n) if (n[k] / c >= 0.95) top = top sprintf(" %s %.1f,", k, n[k] / c)
            printf "  %-14s %5.1f per connection (%d connections):%s\n", label, t / c, c, top }' "$work/strace.$port"
  done
fi

# 4. Terminate mode against a minimal crypto/tls server, same certificate.
ca=$(sed -n 's/.*"ca": "\(.*\)".*/\1/p' "$work/demo/storage/lineages/demo.example.com/meta.json" | head -1)
cat > "$work/terminate.yaml" <<YML
listen: "127.0.0.1:19446"
storage: $work/demo/storage
acme: {ca: "$ca", email: demo@example.com, agree_tos: true}
routes:
  - names: [demo.example.com]
    backend: 127.0.0.1:18080
    mode: http
certificates:
  - names: [demo.example.com, www.demo.example.com]
YML
"$work/bin/tlsalpn" serve --config "$work/terminate.yaml" --no-preflight >"$work/terminate.log" 2>&1 &
pids+=($!)
# The same with the Go runtime's default GC target (serve sets 200%
# unless GOGC is set), to show what that setting is worth.
sed 's/19446/19450/' "$work/terminate.yaml" > "$work/terminate-gogc.yaml"
GOGC=100 "$work/bin/tlsalpn" serve --config "$work/terminate-gogc.yaml" --no-preflight >"$work/terminate-gogc.log" 2>&1 &
pids+=($!)
"$work/bin/handshake" -serve 127.0.0.1:19447 -cert "$cert" -key "$key" &
pids+=($!)
wait_port 19446; wait_port 19447; wait_port 19450
echo "4. full TLS handshakes/s, terminate mode vs minimal crypto/tls server (P-256), -c 32, $rounds alternating rounds of ${secs}s each"
go_sum=0; t_sum=0; d_sum=0
hs() { "$work/bin/handshake" -addr "127.0.0.1:$1" -sni demo.example.com -c 32 -d "${secs}s" | awk '{print $2}'; }
for r in $(seq 1 "$rounds"); do
  g=$(hs 19447); t=$(hs 19446); d=$(hs 19450)
  awk -v r="$r" -v g="$g" -v t="$t" -v d="$d" 'BEGIN { printf "  round %d: minimal %6.0f /s, tlsalpn terminate %6.0f /s (%.2fx), with GOGC=100 %6.0f /s (%.2fx)\n", r, g, t, t/g, d, d/g }'
  go_sum=$((go_sum + g)); t_sum=$((t_sum + t)); d_sum=$((d_sum + d))
done
awk -v g="$go_sum" -v t="$t_sum" -v d="$d_sum" -v n="$rounds" 'BEGIN {
  printf "  %-30s %8.0f /s\n  %-30s %8.0f /s   %.2fx\n  %-30s %8.0f /s   %.2fx\n", "minimal crypto/tls", g/n, "tlsalpn terminate", t/n, t/g, "tlsalpn terminate, GOGC=100", d/n, d/g }'

echo "5. memory per idle relayed connection (tlsalpn serve --steer off, passthrough to nginx)"
"$work/bin/idleconns" -addr 127.0.0.1:19448 -pid "$serve_pid" -n 5000 | sed 's/^/  /'
if [ -s "$work/failed" ]; then
  echo "FAILED: connections failed through the proxies in figure 2b, whose figures count only those that succeeded:" >&2
  cat "$work/failed" >&2
  exit 1
fi
