#!/usr/bin/env bash
# Hosting scale on one node (issue 13, part 2): a real `tlsalpn serve` with
# steering off (proxy.steer: off, so every connection is relayed, as with
# several routes or during a validation) in front of real backends on
# 127.0.0.1, measuring:
#   1. memory per idle relayed connection at HOSTING_IDLE (default 100,000)
#      connections: serve's VmRSS delta / n, and its Go heap+stacks delta / n
#      from its /metrics. Each connection sent a ClientHello and was relayed
#      to bench/sink, which writes one byte back (the client waits for it,
#      so every connection is known to be relayed end to end) and holds it:
#      a backend that costs nothing, where nginx would need a TLS handshake
#      per connection. Connections come from several source addresses
#      (127.0.0.2, …) and go to several names routed to several sink ports:
#      one address pair has only the ephemeral range's ~28,000 ports. The
#      same at HOSTING_IDLE_REQ (default 5,000) full TLS connections with a
#      GET each, to nginx, as bench/proxy.sh measures it. Also at n/4 and
#      n/2, to show whether the cost per connection stays flat.
#      HOSTING_SOURCES=K uses K source addresses and K sink ports even
#      where n needs fewer (to try the way to 100,000 at a smaller n).
#   2. a burst of HOSTING_BURST (default 20,000) new connections spread over
#      one second (a ClientHello each, routed to bench/sink -close, which
#      answers one byte and closes) while a normal client makes one request
#      after another, GET of 1 KiB from nginx, each on a new TLS connection
#      (a new visitor), then again with keep-alive (a visitor on a page): its
#      latency p50/p99/max before, during and after the burst (p99 during
#      the burst must be <= 100 ms), and how many burst connections were
#      served, refused or failed.
#   3. reloads (SIGHUP) of a HOSTING_ROUTES (default 10,000) route
#      configuration, each route one exact name and one wildcard, switching
#      every route between two nginx ports, while 4 clients make requests
#      to names at both ends of the table, exact and wildcard: each
#      reload's time from serve's log ("took", reading and parsing the file
#      included), the failed requests (must be 0), and, after each reload,
#      that a new connection reaches the nginx port it now names.
# Usage: bench/hosting.sh     (sizes from HOSTING_IDLE, HOSTING_IDLE_REQ,
#        HOSTING_BURST, HOSTING_BURST_WORKERS, HOSTING_ROUTES, HOSTING_RELOADS;
#        small ones to try it;
#        HOSTING_PARTS="1 3" runs some parts only; HOSTING_KEEP=1 keeps the logs;
#        SERVE_ENV="TLSALPN_CPUPROFILE=/tmp/serve.prof" profiles each serve;
#        HOSTING_PIN="0 1" puts serve and nginx on CPU 0, the load on CPU 1)
# Needs nginx. The kernel and process limits it needs are checked and
# printed first: serve holds 2 descriptors per relayed connection, so
# 100,000 connections need RLIMIT_NOFILE >= 200,512 for serve (raised here
# if this shell may: root with CAP_SYS_RESOURCE), fs.nr_open above that,
# and enough source addresses for net.ipv4.ip_local_port_range.
# Everything listens on 127.0.0.1 only; the figures are of this machine,
# which the load generators share with serve, nginx and the sink.
set -euo pipefail
idle_n=${HOSTING_IDLE:-100000}
idle_req=${HOSTING_IDLE_REQ:-5000}
burst=${HOSTING_BURST:-20000} # several sizes, space-separated, run in turn
nroutes=${HOSTING_ROUTES:-10000}
reloads=${HOSTING_RELOADS:-10}
parts=${HOSTING_PARTS:-1 2 3}
burst_workers=${HOSTING_BURST_WORKERS:-512} # burst connections in flight at most
# HOSTING_PIN="0 1": serve and nginx on CPU 0, the load tools and the sink
# on CPU 1, so that the clients' own work does not take serve's CPU (on
# the Internet the clients are elsewhere).
pin_serve=; pin_load=
if [ -n "${HOSTING_PIN:-}" ]; then
  read -r c_serve c_load <<<"$HOSTING_PIN"
  pin_serve="taskset -c $c_serve"; pin_load="taskset -c $c_load"
fi
part() { [[ " $parts " == *" $1 "* ]]; }
for v in "$idle_n" "$idle_req" $burst "$nroutes" "$reloads" "$burst_workers"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "HOSTING_* sizes must be positive integers, got '$v'" >&2; exit 2; }
done
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ -n "${HOSTING_KEEP:-}" ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
command -v nginx >/dev/null || { echo "missing nginx: run CI_DEPS_BENCH=1 scripts/ci-deps.sh" >&2; exit 1; }
cd "$root"
go build -o "$work/bin/" ./cmd/tlsalpn ./bench/idleconns ./bench/sink ./bench/connload

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
read -r eph_lo eph_hi < /proc/sys/net/ipv4/ip_local_port_range
# freeport: a port nothing listens on, below the ephemeral range, which
# the many connections of this script draw from (see internal/freeport).
freeport() {
  for _ in $(seq 1 200); do
    local p=$((eph_lo - 12000 + RANDOM % 11000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && ! grep -qw "$p" "$work/ports" 2>/dev/null; then
      echo "$p" >> "$work/ports"; echo "$p"; return 0
    fi
  done
  echo "no free port found below $eph_lo" >&2; exit 1
}

# --- limits -------------------------------------------------------------
ports=$((eph_hi - eph_lo + 1))
per_pair=$((ports * 9 / 10)) # connections one address pair may take
nr_open=$(cat /proc/sys/fs/nr_open); file_max=$(cat /proc/sys/fs/file-max)
echo "limits: fs.nr_open=$nr_open fs.file-max=$file_max net.ipv4.ip_local_port_range=$eph_lo-$eph_hi ($ports ports) RLIMIT_NOFILE soft $(ulimit -Sn) hard $(ulimit -Hn)"
need=$((2 * idle_n + 512)) # serve: the client's socket and the backend's, per connection
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$need" ]; then
  ulimit -Hn "$need" 2>/dev/null || true
fi
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
  reach=$(((hard - 512) / 2))
  echo "LIMIT: $idle_n idle relayed connections need RLIMIT_NOFILE >= $need for serve (2 descriptors each),"
  echo "       and >= $((idle_n + 256)) for idleconns and for the sink; the hard limit here is $hard and this"
  echo "       shell cannot raise it (that takes CAP_SYS_RESOURCE: root, 'ulimit -Hn $need', or LimitNOFILE="
  echo "       in a systemd unit). Measuring at the most it allows: n=$reach."
  idle_n=$reach
else
  ulimit -Sn "$need"
fi
[ "$need" -le "$nr_open" ] || echo "LIMIT: fs.nr_open=$nr_open is below the $need descriptors serve needs (sysctl fs.nr_open=$need)"
[ $((4 * idle_n)) -le "$file_max" ] || echo "LIMIT: fs.file-max=$file_max is below the ~$((4 * idle_n)) sockets of the run (sysctl fs.file-max)"
if [ "$idle_req" -gt "$idle_n" ]; then
  echo "LIMIT: HOSTING_IDLE_REQ=$idle_req is above the n=$idle_n serve can hold here: measuring the TLS connections at $idle_n"
  idle_req=$idle_n
fi
sources=$(((idle_n + per_pair - 1) / per_pair))
# HOSTING_SOURCES forces more source addresses and sink ports than n
# needs: the way to 100,000 tried at a size this machine allows.
if [ -n "${HOSTING_SOURCES:-}" ]; then
  [[ "$HOSTING_SOURCES" =~ ^[1-9][0-9]*$ ]] || { echo "HOSTING_SOURCES must be a positive integer" >&2; exit 2; }
  [ "$HOSTING_SOURCES" -ge "$sources" ] || { echo "HOSTING_SOURCES=$HOSTING_SOURCES is too few for n=$idle_n: at least $sources" >&2; exit 2; }
  sources=$HOSTING_SOURCES
fi
sinkports=$sources
echo "idle connections: n=$idle_n from $sources source address(es), to $sinkports name(s) routed to as many sink ports ($per_pair connections per address pair at most)"

# --- backends -----------------------------------------------------------
"$work/bin/tlsalpn" demo --dir "$work/demo" >/dev/null
cert="$work/demo/live/fullchain.pem"; key="$work/demo/live/key.pem"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 > "$work/1k"
ngx_a=$(freeport); ngx_b=$(freeport)
mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 2;
worker_rlimit_nofile 19000;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 9000; }
http {
  access_log off;
  keepalive_timeout 10m;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$ngx_a ssl;
    listen 127.0.0.1:$ngx_b ssl;
    ssl_certificate $cert; ssl_certificate_key $key;
    location = /1k { alias $work/1k; default_type text/plain; }
    location = /port { return 200 "\$server_port"; }
  }
}
NGX
$pin_serve nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off; user root;' &
pids+=($!)
wait_port "$ngx_a"; wait_port "$ngx_b"

serve_pid=
start_serve() { # CONFIG LOG: runs serve, waits for its port
  $pin_serve env ${SERVE_ENV:-} "$work/bin/tlsalpn" serve --config "$1" --no-preflight >"$2" 2>&1 &
  serve_pid=$!; pids+=($serve_pid)
  wait_port "$listen"
}
stop_serve() { kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; }
sink_pid=; sink_addrs=()
start_sink() { # SINK ARGS…
  coproc SINK { exec $pin_load "$work/bin/sink" "$@" 2>>"$work/sink.log"; }
  sink_pid=$SINK_PID; pids+=($sink_pid)
  local line; read -r -t 10 line <&"${SINK[0]}" || { echo "sink did not start:"; cat "$work/sink.log"; exit 1; }
  read -r -a sink_addrs <<<"${line#sink }"
}
stop_sink() { kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; }

listen=$(freeport); admin=$(freeport)
# --- 1. idle relayed connections --------------------------------------------
if part 1; then
echo "1. idle relayed connections, tlsalpn serve --steer off, at n/4, n/2 and n (is the cost per connection flat?)"
for n in $((idle_n / 4)) $((idle_n / 2)) "$idle_n"; do
  start_sink -ports "$sinkports" -conns "$n"
  {
    echo "listen: \"127.0.0.1:$listen\""; echo "storage: $work/store-idle"; echo "admin: \"127.0.0.1:$admin\""
    # Above nine tenths of max_connections each new connection evicts the
    # oldest one still before its ClientHello (proxy/gate.go): n must stay
    # below that line, or the connections being opened evict each other.
    echo "proxy: {steer: \"off\", max_connections: $(((n + 100) * 10 / 9 + 10))}"
    echo "routes:"
    for i in "${!sink_addrs[@]}"; do echo "  - {names: [idle$i.example], backend: \"${sink_addrs[$i]}\"}"; done
  } > "$work/idle.yaml"
  start_serve "$work/idle.yaml" "$work/serve-idle.log"
  names=$(for i in "${!sink_addrs[@]}"; do printf 'idle%d.example,' "$i"; done)
  "$work/bin/idleconns" -addr "127.0.0.1:$listen" -pid "$serve_pid" -n "$n" -mode hello -sources "$sources" \
    -sni "${names%,}" -metrics "http://127.0.0.1:$admin/metrics" | sed 's/^/  /'
  stop_serve; stop_sink
done

{
  echo "listen: \"127.0.0.1:$listen\""; echo "storage: $work/store-req"; echo "admin: \"127.0.0.1:$admin\""
  echo "proxy: {steer: \"off\", max_connections: $(((idle_req + 100) * 10 / 9 + 10))}"
  echo "routes:"; echo "  - {names: [bench.example], backend: \"127.0.0.1:$ngx_a\"}"
} > "$work/req.yaml"
start_serve "$work/req.yaml" "$work/serve-req.log"
"$work/bin/idleconns" -addr "127.0.0.1:$listen" -pid "$serve_pid" -n "$idle_req" -mode request \
  -sni bench.example -metrics "http://127.0.0.1:$admin/metrics" | sed 's/^/  /'
stop_serve
fi

# --- 2. a burst of new connections beside a normal client --------------------
# cpu PID: user+system CPU seconds the process has used
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
# Each burst runs twice: with the front door, HAProxy and nginx on CPU 0
# and the load tools on CPU 1 ("separate cores": as on the Internet, where
# 20,000 clients do not take the server's CPU), then with everything on
# both cores ("shared cores": the 512 load connections in flight compete
# with the front door for CPU, where a front door of two threads gets two
# shares of the scheduler's time and one of one thread, one).
# HOSTING_BURST_CORES="separate" or "shared" runs one of them.
burst_cores=${HOSTING_BURST_CORES:-separate shared}
[ "$(nproc)" -ge 2 ] || burst_cores=shared
# set_cores MODE: pins serve, HAProxy and nginx (running or to start) and
# the load tools for MODE.
set_cores() {
  local all="0-$(( $(nproc) - 1 ))" p
  case $1 in
    separate) pin_serve="taskset -c 0"; pin_load="taskset -c 1" ;;
    shared) pin_serve="taskset -c $all"; pin_load="taskset -c $all" ;;
    HOSTING_PIN) pin_serve="taskset -c $c_serve"; pin_load="taskset -c $c_load" ;;
  esac
  for p in $(cat "$work/nginx/nginx.pid") $(pgrep -P "$(cat "$work/nginx/nginx.pid")"); do
    taskset -a -cp "${pin_serve#taskset -c }" "$p" >/dev/null
  done
}
if part 2; then
for cores in $burst_cores; do
set_cores "$cores"
start_sink -ports 1 -close
{
  echo "listen: \"127.0.0.1:$listen\""; echo "storage: $work/store-burst"
  echo "proxy: {steer: \"off\"}"
  echo "routes:"
  echo "  - {names: [bench.example], backend: \"127.0.0.1:$ngx_a\"}"
  echo "  - {names: [burst.example], backend: \"${sink_addrs[0]}\"}"
} > "$work/burst.yaml"
start_serve "$work/burst.yaml" "$work/serve-burst.log"
ngx_workers=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" | tr '\n' ' ')
# burst_run LABEL PORT PID: the burst and the normal client against a front
# door listening on PORT whose process is PID.
burst_run() {
 local label=$1 port=$2 pid=$3
 for b in $burst; do
 for kind in new keepalive; do
  ka=; [ "$kind" = keepalive ] && ka=-keepalive
  echo "2. a burst of $b new connections in 1 s beside a normal client ($kind), $label, $cores cores"
  s0=$(cpu "$pid"); k0=$(cpu "$sink_pid"); n0=$(for w in $ngx_workers; do cpu "$w"; done | awk '{ s += $1 } END { print s + 0 }')
  set +e
  $pin_load "$work/bin/connload" -addr "127.0.0.1:$port" -sni bench.example -c 1 $ka -d 5s -burst "$b" -burst-at 1s -burst-in 1s -burst-workers "$burst_workers" \
    > "$work/burst.out"
  burst_rc=$?
  set -e
  sed 's/^/  /' "$work/burst.out"
  n1=$(for w in $ngx_workers; do cpu "$w"; done | awk '{ s += $1 } END { print s + 0 }')
  echo "  CPU used over the run: front door $(awk -v a="$s0" -v b="$(cpu "$pid")" 'BEGIN { printf "%.2f", b - a }')s, sink $(awk -v a="$k0" -v b="$(cpu "$sink_pid")" 'BEGIN { printf "%.2f", b - a }')s, nginx $(awk -v a="$n0" -v b="$n1" 'BEGIN { printf "%.2f", b - a }')s (2 cores, shared with whatever else runs)"
  p99=$(sed -n 's/.*during the burst: .* p99 \([0-9.]*\) ms.*/\1/p' "$work/burst.out")
  if [ -n "$p99" ] && awk -v p="$p99" 'BEGIN { exit !(p <= 100) }' && [ "$burst_rc" = 0 ]; then
    echo "  normal client ($kind) p99 during the burst of $b: $p99 ms (<= 100 ms: ok)"
  else
    echo "  normal client ($kind) p99 during the burst of $b: ${p99:-none} ms, failed requests: see above (want <= 100 ms and none failed): NOT MET"
  fi
 done
 done
}
burst_run "tlsalpn serve --steer off, default limits" "$listen" "$serve_pid"
stop_serve
# The same against HAProxy in mode tcp routing by SNI the same way (the
# anchor: what the cores allow a proxy that is not tlsalpn).
if command -v haproxy >/dev/null; then
  hport=$(freeport)
  cat > "$work/haproxy-burst.cfg" <<HAP
global
  nbthread 2
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1m
  timeout server 1m
frontend front
  bind 127.0.0.1:$hport
  tcp-request inspect-delay 10s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend sink if { req.ssl_sni -i burst.example }
  default_backend web
backend sink
  server sink ${sink_addrs[0]}
backend web
  server nginx 127.0.0.1:$ngx_a
HAP
  $pin_serve haproxy -f "$work/haproxy-burst.cfg" -db >"$work/haproxy-burst.log" 2>&1 &
  hpid=$!; pids+=($hpid)
  wait_port "$hport"
  burst_run "HAProxy mode tcp, routing by SNI (req.ssl_sni), nbthread 2" "$hport" "$hpid"
  kill "$hpid"; wait "$hpid" 2>/dev/null || true
fi
stop_sink
done
if [ -n "${HOSTING_PIN:-}" ]; then set_cores HOSTING_PIN; else set_cores shared; pin_serve=; pin_load=; fi
fi

# --- 3. reloads of a large configuration under load ---------------------------
if part 3; then
gen_routes() { # BACKEND_PORT FILE
  {
    echo "listen: \"127.0.0.1:$listen\""; echo "storage: $work/store-reload"
    echo "proxy: {steer: \"off\"}"
    echo "routes:"
    awk -v n="$nroutes" -v be="127.0.0.1:$1" 'BEGIN { for (i = 0; i < n; i++) printf "  - names: [site%d.example, \"*.w%d.example\"]\n    backend: \"%s\"\n", i, i, be }'
  } > "$2"
}
gen_routes "$ngx_a" "$work/reload-a.yaml"; gen_routes "$ngx_b" "$work/reload-b.yaml"
cp "$work/reload-a.yaml" "$work/reload.yaml"
start_serve "$work/reload.yaml" "$work/serve-reload.log"
last=$((nroutes - 1))
reload_wrong=
load_secs=$((2 + reloads))
echo "3. $reloads reloads (SIGHUP) of $nroutes routes ($((2 * nroutes)) names, exact and wildcard) under load, tlsalpn serve --steer off"
"$work/bin/connload" -addr "127.0.0.1:$listen" -c 4 -d "${load_secs}s" \
  -sni "site0.example,site$last.example,a.w0.example,b.w$last.example" > "$work/reload.out" &
load_pid=$!
sleep 1
for i in $(seq 1 "$reloads"); do
  before=$(grep -c 'configuration reloaded' "$work/serve-reload.log" || true)
  if [ $((i % 2)) = 1 ]; then cp "$work/reload-b.yaml" "$work/reload.yaml"; port=$ngx_b; else cp "$work/reload-a.yaml" "$work/reload.yaml"; port=$ngx_a; fi
  kill -HUP "$serve_pid"
  for _ in $(seq 1 200); do
    [ "$(grep -c 'configuration reloaded' "$work/serve-reload.log" || true)" -gt "$before" ] && break
    if grep -q 'configuration refused' "$work/serve-reload.log"; then echo "reload refused:"; cat "$work/serve-reload.log"; exit 1; fi
    sleep 0.05
  done
  # The reload took effect: a new connection to the last route's
  # wildcard reaches the nginx port the new configuration names.
  got=$(curl -sk --max-time 5 --resolve "x.w$last.example:$listen:127.0.0.1" "https://x.w$last.example:$listen/port" || true)
  [ "$got" = "$port" ] || { echo "  reload $i: x.w$last.example reached nginx port '$got', want $port: the reload did not take effect"; reload_wrong=1; }
  sleep 0.5
done
set +e
wait "$load_pid"
load_rc=$?
set -e
sed 's/^/  /' "$work/reload.out"
# median and max, in ms, of the nanoseconds on stdin
med_max() { sort -n | awk '{ t[NR] = $1 / 1e6 } END { if (NR) printf "%.1f %.1f %d\n", t[int((NR + 1) / 2)], t[NR], NR; else print "- - 0" }'; }
read -r took_med took_max took_n < <(grep -o '"took":[0-9]*' "$work/serve-reload.log" | cut -d: -f2 | med_max)
read -r read_med _ _ < <(grep -o '"reading":[0-9]*' "$work/serve-reload.log" | cut -d: -f2 | med_max)
read -r apply_med apply_max _ < <(grep -o '"took":[0-9]*,"reading":[0-9]*' "$work/serve-reload.log" | tr -c '0-9\n' ' ' | awk '{ print $1 - $2 }' | med_max)
[ "$took_n" = "$reloads" ] || echo "  only $took_n of $reloads reloads logged"
echo "  reload time (serve log): median $took_med ms, max $took_max ms, over $took_n reloads"
echo "    reading the file (YAML parse and validation): median $read_med ms; applying it (routes compiled and swapped in): median $apply_med ms, max $apply_max ms"
if [ "$load_rc" = 0 ]; then echo "  failed connections during the reloads: 0 (ok)"; else echo "  failed connections during the reloads: see above: NOT MET"; fi
if [ -z "$reload_wrong" ]; then echo "  each reload took effect at once (checked on the last route's wildcard): ok"; fi
stop_serve
fi
