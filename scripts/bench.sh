#!/usr/bin/env bash
# End-to-end benchmark of the gateway against its peers, and the scenarios of the performance
# targets (see BENCHMARKS.md for the results and how to read them).
#
#   scripts/bench.sh [all|table|peer|tls|flood|busy|scale|rss|startup|postgres]
#
# Needs nginx, haproxy and wrk (and h2load, openssl for table and tls); this script installs
# nothing. On Debian:
#   apt-get install -y nginx-light haproxy wrk nghttp2-client
# Builds the release binary (and the examples: fill_store, ws_bench) first. Uses ports 19001-19008,
# 19010 and 19012-19014.
# Environment: CARGO_TARGET_DIR (default ./target), ROUNDS/SECS/CONNS for the peer run
# (default 3 rounds of 5 s at 64 connections), FILL_USERS/FILL_JTIS for the scale run (1000000).
# The postgres run needs Debian's postgresql server binaries (it starts a private cluster on port
# 19005) or BENCH_DATABASE_URL pointing at an empty database.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peerbench=${PEERBENCH:-$root/../shared/peerbench}
target=${CARGO_TARGET_DIR:-$root/target}
what=${1:-all}
rounds=${ROUNDS:-3}; secs=${SECS:-5}; conns=${CONNS:-64}
fill_users=${FILL_USERS:-1000000}; fill_jtis=${FILL_JTIS:-1000000}
ulimit -n 65536 2>/dev/null || true
for tool in nginx haproxy wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nginx-light haproxy wrk)" >&2; exit 1; }
done

# The examples first, then the gateway alone: built in one invocation, the examples' dev-dependencies
# would switch their features (tokio's test-util) on in the measured binary too, which is then
# not the one `cargo build --release` ships.
(cd "$root" && cargo build --release --examples && cargo build --release --bin gateway)
bin=$target/release/gateway
work=$(mktemp -d /tmp/gwbench.XXXX); mkdir -p /tmp/peerbench
export GATEWAY_BIN=$bin GATEWAY_WORK=$work
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# gateway_config FILE STORE [extra yaml...]: the benchmark config (HTTP only, warn-level logs so
# there is no access-log line per request, like nginx's `access_log off`).
gateway_config() {
  local file=$1 store=$2; shift 2
  cat >"$file" <<YAML
version: 1
listen: {http: 127.0.0.1:19004, https: null}
log: {level: warn}
store: $(case $store in postgres://*) echo "{postgres: {url: '$store'}}" ;; *) echo "{redb: {path: $store}}" ;; esac)
routes:
  - {name: app, path: /, upstream: 'http://127.0.0.1:19001', auth: required}
YAML
  for extra in "$@"; do echo "$extra" >>"$file"; done
}
export -f gateway_config

# token [PORT]: prints a fresh access token from the gateway on 127.0.0.1:PORT (default 19004;
# signs up a new account).
token() {
  curl -sf -X POST "http://127.0.0.1:${1:-19004}/api/auth/signup" -H 'content-type: application/json' \
    -H "x-forwarded-for: 10.$((RANDOM % 250)).$((RANDOM % 250)).$((RANDOM % 250))" \
    -d "{\"email\":\"bench$RANDOM$RANDOM@example.org\",\"password\":\"Quiet-Harbour-Lantern-42\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
export -f token

start_gateway() { # start_gateway CONFIG LOG: starts it in the background, waits for /healthz
  "$bin" serve --config "$1" >"$2" 2>&1 & pids+=($!); gw_pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:19004/healthz && return 0; sleep 0.05; done
  echo "gateway did not start; log:" >&2; cat "$2" >&2; exit 1
}
stop_gateway() { kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# wrk_run URL SECS [wrk args...] -> "rps p99"
wrk_run() {
  local url=$1 s=$2; shift 2
  wrk -t1 -c"$conns" -d"${s}s" --latency "$@" "$url" |
    awk '/Requests\/sec/ {r=$2} $1=="99%" {p=$2} END {print r, p}'
}
# Starts the upstream nginx on 19001 unless an earlier scenario of this run already did.
upstream() {
  curl -s -o /dev/null http://127.0.0.1:19001/ && return 0
  nginx -c "$peerbench/upstream-nginx.conf" & pids+=($!); sleep 0.3
}

peer() {
  echo "== peer benchmark ($rounds x ${secs}s, $conns connections)"
  GATEWAY_START="bash -c 'gateway_config $work/peer.yaml $work/peer.redb && exec $bin serve --config $work/peer.yaml'" \
  GATEWAY_TOKEN="token" \
    "$peerbench/peerbench.sh" "$rounds" "$secs" "$conns"
}

flood() {
  echo "== login flood: proxied traffic alone, then with a wrong-password flood from many IPs"
  upstream
  gateway_config "$work/flood.yaml" "$work/flood.redb" "trusted_proxies: [127.0.0.1/32]"
  start_gateway "$work/flood.yaml" "$work/flood.log"
  local tok; tok=$(token)
  cat >"$work/flood.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local ip = math.random(1, 223) .. "." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(1, 254)
  wrk.headers["X-Forwarded-For"] = ip
  local body = '{"email":"nobody' .. math.random(1, 1e9) .. '@example.org","password":"wrong-password-123"}'
  return wrk.format(nil, nil, nil, body)
end
LUA
  # Alternating rounds, medians: the p99 of a single 5 s run moves between about 2 and 4 ms
  # from run to run on this shared machine, flood or not.
  local r base flooded rss fp
  : >"$work/flood.rounds"
  for r in $(seq "$rounds"); do
    base=$(wrk_run http://127.0.0.1:19004/ "$secs" -H "Authorization: Bearer $tok")
    wrk -t1 -c64 -d$((secs + 3))s --latency -s "$work/flood.lua" http://127.0.0.1:19004/api/auth/login >"$work/flood.out" & fp=$!
    sleep 2
    flooded=$(wrk_run http://127.0.0.1:19004/ "$secs" -H "Authorization: Bearer $tok")
    rss=$(rss_mb "$gw_pid")
    wait $fp
    echo "round $r: alone $base; with flood $flooded; rss under flood $rss MB;" \
      "flood answered $(awk '/Requests\/sec/ {print $2}' "$work/flood.out")/s" | tee -a "$work/flood.rounds"
  done
  python3 - "$work/flood.rounds" <<'PY'
import statistics, sys
def us(s):
    for suf, m in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if s.endswith(suf): return float(s[:-len(suf)]) * m
alone, flooded = [], []
for line in open(sys.argv[1]):
    w = line.replace(";", "").split()
    alone.append((float(w[3]), us(w[4]))); flooded.append((float(w[7]), us(w[8])))
med = lambda xs, i: statistics.median(x[i] for x in xs)
a_r, a_p, f_r, f_p = med(alone, 0), med(alone, 1), med(flooded, 0), med(flooded, 1)
print(f"medians: alone {a_r:.0f} req/s p99 {a_p / 1e3:.2f} ms; with flood {f_r:.0f} req/s p99 {f_p / 1e3:.2f} ms")
print(f"flood cost: req/s {100 * (1 - f_r / a_r):.1f}% lower, p99 x{f_p / a_p:.2f}")
PY
  stop_gateway
}

# login_stats N: "median M ms, p99 P ms" of N correct-password logins of one account
login_stats() {
  local email="login$RANDOM@example.org" pw="Quiet-Harbour-Lantern-42"
  curl -sf -o /dev/null -X POST http://127.0.0.1:19004/api/auth/signup -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$pw\"}"
  for _ in $(seq "$1"); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST http://127.0.0.1:19004/api/auth/login \
      -H 'content-type: application/json' -d "{\"email\":\"$email\",\"password\":\"$pw\"}"
  done | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
ok = sorted(float(t) * 1000 for c, t in rows if c == "200")
bad = len(rows) - len(ok)
if not ok: print(f"no login succeeded ({bad} failed)"); sys.exit()
p99 = ok[min(len(ok) - 1, int(0.99 * len(ok)))]
print(f"median {ok[len(ok) // 2]:.1f} ms, p99 {p99:.1f} ms, {bad} failed")'
}

# Logins while the host is busy with ordinary CPU-bound work (one busy process per core), the
# case where hashing threads in SCHED_IDLE starved: they only ran when nothing else wanted the
# CPU. The target is a login p99 under 1 s.
busy() {
  echo "== logins on an idle host, then with $(nproc) CPU-bound processes beside the gateway"
  upstream
  local nolimits="rate_limits: {login_per_ip: 'off', login_per_account: 'off', signup_per_ip: 'off'}"
  gateway_config "$work/busy.yaml" "$work/busy.redb" "$nolimits"
  start_gateway "$work/busy.yaml" "$work/busy.log"
  echo "idle host, 30 logins: $(login_stats 30)"
  local hogs=() i
  for i in $(seq "$(nproc)"); do
    python3 -c 'while True: pass' & hogs+=($!); pids+=($!)
  done
  sleep 1
  echo "busy host, 30 logins: $(login_stats 30)"
  kill "${hogs[@]}" 2>/dev/null || true
  stop_gateway
}

scale() {
  echo "== scale: empty store vs $fill_users users + $fill_jtis revoked jtis"
  upstream
  local filled=/dev/shm/gwbench-filled.redb
  if [ ! -s "$filled.done" ]; then
    rm -f "$filled"
    "$target/release/examples/fill_store" "$filled" "$fill_users" "$fill_jtis"
    echo "$fill_users $fill_jtis" >"$filled.done"
  fi
  local nolimits="rate_limits: {login_per_ip: 'off', login_per_account: 'off', signup_per_ip: 'off'}"
  for kind in empty filled; do
    local store=/dev/shm/gwbench-empty.redb
    [ "$kind" = filled ] && store=$filled
    [ "$kind" = empty ] && rm -f "$store"
    gateway_config "$work/$kind.yaml" "$store" "$nolimits"
    local t0; t0=$(date +%s%N)
    start_gateway "$work/$kind.yaml" "$work/$kind.log"
    local tok; tok=$(token)
    local first; first=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" http://127.0.0.1:19004/)
    echo "$kind: start-up to /healthz $(( ($(date +%s%N) - t0) / 1000000 )) ms (first proxied: $first), idle rss $(rss_mb "$gw_pid") MB"
    local r; for r in 1 2 3; do echo "$kind proxied: $(wrk_run http://127.0.0.1:19004/ "$secs" -H "Authorization: Bearer $tok")"; done
    echo "$kind, 15 logins: $(login_stats 15)"
    stop_gateway
  done
}

startup() {
  echo "== start-up to first served request (store with $fill_users users, see scale)"
  upstream
  local filled=/dev/shm/gwbench-filled.redb
  [ -s "$filled.done" ] || { echo "run scale first (it fills $filled)"; return; }
  gateway_config "$work/startup.yaml" "$filled"
  local i; for i in 1 2 3 4 5; do
    local t0; t0=$(date +%s%N)
    "$bin" serve --config "$work/startup.yaml" >"$work/startup.log" 2>&1 & pids+=($!); gw_pid=$!
    until curl -sf -o /dev/null http://127.0.0.1:19004/healthz; do sleep 0.002; done
    echo "start-up $i: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    stop_gateway
  done
}

rss() {
  echo "== RSS: idle, then 10,000 idle keep-alive connections"
  upstream
  gateway_config "$work/rss.yaml" "$work/rss.redb" "limits: {max_connections_per_ip: 20000}"
  start_gateway "$work/rss.yaml" "$work/rss.log"
  local tok; tok=$(token)
  curl -s -o /dev/null -H "Authorization: Bearer $tok" http://127.0.0.1:19004/
  sleep 1
  echo "idle after one request: $(rss_mb "$gw_pid") MB"
  python3 - "$gw_pid" "$tok" <<'PY'
import socket, sys, time, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
pid, tok = sys.argv[1], sys.argv[2]
socks = []
req = f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n\r\n".encode()
for i in range(10000):
    s = socket.create_connection(("127.0.0.1", 19004)); s.sendall(req); socks.append(s)
for s in socks:
    s.recv(4096)  # one served request each, then the connection idles (keep-alive)
def rss():
    return int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]) / 1024
time.sleep(1)
print(f"10000 idle keep-alive connections (each served one request), after 1 s: {rss():.1f} MB")
time.sleep(6)  # the binary returns freed heap memory every 5 s
print(f"... after 7 s: {rss():.1f} MB")
PY
  stop_gateway
}

# private_pg: starts a throwaway PostgreSQL cluster on 127.0.0.1:19005 (as the postgres user when
# root) and sets pg_url.
private_pg() {
  local bin; bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$bin/initdb" ] || { echo "no PostgreSQL server binaries (apt-get install -y postgresql)" >&2; exit 1; }
  # Its own directory under /tmp: the work directory is private to root, and the server may
  # run as the postgres user.
  local dir as=()
  dir=$(mktemp -d /tmp/gwbench-pg.XXXX)
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; as=(runuser -u postgres --); fi
  "${as[@]}" "$bin/initdb" -D "$dir/data" -U gateway --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
  "${as[@]}" "$bin/postgres" -D "$dir/data" -p 19005 -k "$dir" -c listen_addresses=127.0.0.1 \
    >"$dir/log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/19005) 2>/dev/null && break; sleep 0.05
  done
  sleep 0.2
  pg_url="postgres://gateway@127.0.0.1:19005/postgres"
}

postgres() {
  local url=${BENCH_DATABASE_URL:-}
  if [ -z "$url" ]; then private_pg; url=$pg_url; fi
  # The peer run first: it starts its own upstream on 19001.
  echo "== peer benchmark with the PostgreSQL-backed gateway"
  GATEWAY_START="bash -c 'gateway_config $work/peerpg.yaml $url && exec $bin serve --config $work/peerpg.yaml'" \
  GATEWAY_TOKEN="token" \
    "$peerbench/peerbench.sh" "$rounds" "$secs" "$conns"
  echo "== store: the same proxied load on a redb-backed and a PostgreSQL-backed gateway, alternating"
  upstream
  local nolimits="rate_limits: {login_per_ip: 'off', login_per_account: 'off', signup_per_ip: 'off'}"
  gateway_config "$work/redb.yaml" "$work/store.redb" "$nolimits"
  gateway_config "$work/pg.yaml" "$url" "$nolimits"
  local r kind
  for r in $(seq "$rounds"); do
    for kind in redb pg; do
      start_gateway "$work/$kind.yaml" "$work/$kind.log"
      local tok; tok=$(token)
      echo "$kind $(wrk_run http://127.0.0.1:19004/ "$secs" -H "Authorization: Bearer $tok")" | tee -a "$work/store.out"
      stop_gateway
    done
  done
  python3 - "$work/store.out" <<'PY'
import statistics, sys
rps = {}
for line in open(sys.argv[1]):
    kind, r, _ = line.split()
    rps.setdefault(kind, []).append(float(r))
redb, pg = statistics.median(rps["redb"]), statistics.median(rps["pg"])
print(f"median req/s: redb {redb:.0f}, PostgreSQL {pg:.0f}; PostgreSQL/redb = {pg / redb:.3f}")
PY
}

# The performance issue's table in one run: every row with the same upstream, side by side with
# nginx (no auth) and HAProxy (HS256 JWT) from ../shared/peerbench/, rounds alternating between
# the targets, medians. Rows: HTTP/1.1 GET plain and over TLS (wrk), HTTP/2 GET over TLS (h2load,
# CONNS/4 connections x 16 streams), POST 4 KiB and 64 KiB (wrk), a cookie-session GET (access +
# CSRF cookie, no bearer: the browser case; the peers get the same Cookie header, HAProxy its
# bearer too), 10,000 routes vs the 3-route demo (gateway only), and a WebSocket echo through
# the gateway vs direct (examples/ws_bench.rs). ROWS="h1 tls h2 post4k post64k cookie routes ws"
# picks rows. p99 of h2load from its per-request log.
table() {
  local rows=${ROWS:-h1 tls h2 post4k post64k cookie routes ws}
  echo "== issue table ($rounds x ${secs}s, $conns connections; h2: $((conns / 4)) x 16 streams; rows: $rows)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  local t=/tmp/peerbench/tls
  mkdir -p $t
  if [ ! -f $t/cert.pem ]; then # as peerbench-tls.sh makes it
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
      -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout $t/key.pem -out $t/cert.pem 2>/dev/null
    cat $t/cert.pem $t/key.pem >$t/combined.pem
  fi
  export JWT_SECRET=${JWT_SECRET:-peerbench-secret-0123456789abcdef0123456789}
  upstream
  # Each target's process, whose CPU time (with its children's: nginx's workers) per request is
  # measured beside its rate.
  # Only the peers of the rows asked for are started (and waited for).
  local nginx_pid nginx_tls_pid haproxy_pid haproxy_tls_pid routes3_pid routes10k_pid
  local ports=(19001 19004) tls_ports=()
  wants() { local w; for w in "$@"; do [[ " $rows " == *" $w "* ]] && return 0; done; return 1; }
  if wants h1 post4k post64k cookie; then
    nginx -c "$peerbench/nginx.conf" & pids+=($!); nginx_pid=$!
    haproxy -f "$peerbench/haproxy.cfg" >"$work/haproxy.log" 2>&1 & pids+=($!); haproxy_pid=$!
    ports+=(19002 19003)
  fi
  if wants tls h2; then
    nginx -c "$peerbench/nginx-tls.conf" & pids+=($!); nginx_tls_pid=$!
    haproxy -f "$peerbench/haproxy-tls.cfg" >"$work/haproxy-tls.log" 2>&1 & pids+=($!); haproxy_tls_pid=$!
    tls_ports+=(19012 19013 19014)
  fi
  if wants ws; then
    "$target/release/examples/ws_bench" echo 127.0.0.1:19006 & pids+=($!)
    ports+=(19010)
  # The WebSocket row's peer: nginx on 19010 (2 workers, no auth, like the other rows' nginx)
  # passing the upgrade through to the same echo server, so the row shows what a mature
  # proxy's extra hop costs on this machine beside ours.
  cat >"$work/nginx-ws.conf" <<NGINX
worker_processes 2;
daemon off;
pid $work/nginx-ws.pid;
error_log $work/nginx-ws-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  server {
    listen 127.0.0.1:19010 backlog=4096;
    location /ws {
      proxy_pass http://127.0.0.1:19006;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection upgrade;
      proxy_read_timeout 1h;
    }
  }
}
NGINX
  nginx -c "$work/nginx-ws.conf" & pids+=($!)
  fi
  local common="rate_limits: {login_per_ip: 'off', login_per_account: 'off', signup_per_ip: 'off'}
auth: {access_ttl: 1h}"
  # The gateway of most rows: HTTP on 19004, HTTPS on 19014 with the peers' certificate.
  cat >"$work/table.yaml" <<YAML
version: 1
listen: {http: 127.0.0.1:19004, https: 127.0.0.1:19014}
tls: {cert: $t/cert.pem, key: $t/key.pem}
log: {level: warn}
store: {redb: {path: $work/table.redb}}
$common
routes:
  - {name: ws, path: /ws, upstream: 'http://127.0.0.1:19006', auth: required}
  - {name: app, path: /, upstream: 'http://127.0.0.1:19001', auth: required}
YAML
  # The routes row: the demo's three routes, and 10,000 (100 hosts x 100 path prefixes, then
  # the catch-all, which is the one requests to / match), each on a gateway of its own.
  local routes3="routes:
  - {name: public, path: /public, upstream: 'http://127.0.0.1:19001', auth: public}
  - {name: admin, path: /admin, upstream: 'http://127.0.0.1:19001', auth: required, roles: [admin]}
  - {name: app, path: /, upstream: 'http://127.0.0.1:19001', auth: required}"
  local port
  for port in 19007 19008; do
    cat >"$work/routes$port.yaml" <<YAML
version: 1
listen: {http: 127.0.0.1:$port, https: null}
admin: {listen: null}
log: {level: warn}
store: {redb: {path: $work/routes$port.redb}}
$common
YAML
  done
  echo "$routes3" >>"$work/routes19007.yaml"
  {
    echo "routes:"
    local i
    for i in $(seq 0 9999); do
      echo "  - {name: r$i, host: app$((i / 100)).example.com, path: /svc$((i % 100))/api, upstream: 'http://127.0.0.1:19001', auth: required}"
    done
    echo "  - {name: app, path: /, upstream: 'http://127.0.0.1:19001', auth: required}"
  } >>"$work/routes19008.yaml"
  start_gateway "$work/table.yaml" "$work/table.log"
  if wants routes; then
    "$bin" serve --config "$work/routes19007.yaml" >"$work/routes19007.log" 2>&1 & pids+=($!); routes3_pid=$!
    "$bin" serve --config "$work/routes19008.yaml" >"$work/routes19008.log" 2>&1 & pids+=($!); routes10k_pid=$!
    ports+=(19007 19008)
  fi
  local ok
  for _ in $(seq 100); do
    ok=1
    for port in "${ports[@]}"; do curl -s -o /dev/null "http://127.0.0.1:$port/" || ok=0; done
    for port in "${tls_ports[@]}"; do curl -sk -o /dev/null "https://127.0.0.1:$port/" || ok=0; done
    [ $ok = 1 ] && break; sleep 0.1
  done
  [ $ok = 1 ] || { echo "a target did not start" >&2; exit 1; }
  local hs gw gw3 gw10k
  hs=$("$peerbench/mkjwt.py" "$JWT_SECRET" bench-user)
  gw=$(token)
  if wants routes; then gw3=$(token 19007); gw10k=$(token 19008); fi
  # The cookie session: the access and CSRF cookies a JSON login sets.
  local email="cookie$RANDOM@example.org"
  curl -sf -o /dev/null -X POST http://127.0.0.1:19004/api/auth/signup -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"Quiet-Harbour-Lantern-42\"}"
  local cookie
  cookie=$(curl -sf -o /dev/null -D - -X POST http://127.0.0.1:19004/api/auth/login -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"Quiet-Harbour-Lantern-42\"}" |
    awk 'tolower($1) == "set-cookie:" && $2 ~ /^gw_(access|csrf)=/ {sub(/;.*/, "", $2); printf "%s%s", sep, $2; sep="; "}')
  case $cookie in *gw_access=*gw_csrf=*|*gw_csrf=*gw_access=*) ;; *) echo "no session cookies: $cookie" >&2; exit 1 ;; esac
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" http://127.0.0.1:19004/)" = 200 ] ||
    { echo "the cookie session is refused" >&2; exit 1; }
  printf 'wrk.method = "POST"\nwrk.body = string.rep("a", 4096)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' >"$work/post4k.lua"
  printf 'wrk.method = "POST"\nwrk.body = string.rep("a", 65536)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' >"$work/post64k.lua"

  local out="$work/table.results" r row name
  : >"$out"
  # ticks PID: CPU time (user + system, in clock ticks) of the process and its children so far.
  ticks() {
    local t=0 p
    for p in "$1" $(pgrep -P "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
    echo "$t"
  }
  local hz; hz=$(getconf CLK_TCK)
  # cpu_us TICKS_BEFORE PID REQUESTS: the target's CPU microseconds per request over the run.
  cpu_us() { python3 -c "import sys; t, n = int(sys.argv[1]), int(sys.argv[2]); print(f'{t * 1e6 / $hz / max(n, 1):.2f}')" "$(( $(ticks "$2") - $1 ))" "$3"; }
  # one ROW NAME PID TOKEN URL [wrk args]: appends "ROW NAME REQ/S P99 CPU-US/REQ" to the results.
  one() {
    local row=$1 name=$2 pid=$3 tok=$4 url=$5; shift 5
    local auth=(); [ -n "$tok" ] && auth=(-H "Authorization: Bearer $tok")
    local t0 res; t0=$(ticks "$pid")
    res=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "${auth[@]}" "$@" "$url" |
      awk '/Requests\/sec/ {r=$2} $1=="99%" {p=$2} / requests in / {n=$1} END {print r, p, n}')
    echo "$row $name ${res% *} $(cpu_us "$t0" "$pid" "${res##* }")" >>"$out"
  }
  h2() { # h2 NAME PID TOKEN PORT
    local t0; t0=$(ticks "$2")
    h2load -t1 -c"$((conns / 4))" -m16 -D"$secs" -H "Authorization: Bearer $3" \
      --log-file="$work/h2.log" "https://127.0.0.1:$4/" >"$work/h2.out" 2>&1
    local rps p99 n
    rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$work/h2.out")
    n=$(awk '/^requests:/ {print $8}' "$work/h2.out")
    p99=$(sort -n -k3,3 "$work/h2.log" | awk '{v[NR]=$3} END {i=int(NR*0.99); if (i<1) i=1; print v[i] "us"}')
    echo "h2 $1 ${rps:-0} $p99 $(cpu_us "$t0" "$2" "${n:-0}")" >>"$out"
  }
  # The CPU time the VM's host took from this machine (steal, in /proc/stat): on a shared host
  # it moves every rate of a round, whoever is measured, so it is printed beside each round.
  steal() { awk '/^cpu / {print $9; exit}' /proc/stat; }
  local steal0 steal1 total0; total0=$(steal)
  for r in $(seq "$rounds"); do
    steal0=$(steal)
    echo "round $r, load $(cut -d' ' -f1 /proc/loadavg)"
    for row in $rows; do
      case $row in
        h1) one h1 nginx "$nginx_pid" "" http://127.0.0.1:19002/
            one h1 haproxy "$haproxy_pid" "$hs" http://127.0.0.1:19003/
            one h1 gateway "$gw_pid" "$gw" http://127.0.0.1:19004/ ;;
        tls) one tls nginx "$nginx_tls_pid" "" https://127.0.0.1:19012/
             one tls haproxy "$haproxy_tls_pid" "$hs" https://127.0.0.1:19013/
             one tls gateway "$gw_pid" "$gw" https://127.0.0.1:19014/ ;;
        h2) h2 nginx "$nginx_tls_pid" "$hs" 19012; h2 haproxy "$haproxy_tls_pid" "$hs" 19013
            h2 gateway "$gw_pid" "$gw" 19014 ;;
        post4k|post64k)
            one "$row" nginx "$nginx_pid" "" http://127.0.0.1:19002/ -s "$work/$row.lua"
            one "$row" haproxy "$haproxy_pid" "$hs" http://127.0.0.1:19003/ -s "$work/$row.lua"
            one "$row" gateway "$gw_pid" "$gw" http://127.0.0.1:19004/ -s "$work/$row.lua" ;;
        cookie) one cookie nginx "$nginx_pid" "" http://127.0.0.1:19002/ -H "Cookie: $cookie"
                one cookie haproxy "$haproxy_pid" "$hs" http://127.0.0.1:19003/ -H "Cookie: $cookie"
                one cookie gateway "$gw_pid" "" http://127.0.0.1:19004/ -H "Cookie: $cookie" ;;
        routes) one routes 3-routes "$routes3_pid" "$gw3" http://127.0.0.1:19007/
                one routes 10k-routes "$routes10k_pid" "$gw10k" http://127.0.0.1:19008/ ;;
        ws) echo "ws direct $("$target/release/examples/ws_bench" load ws://127.0.0.1:19006/ws "$conns" "$secs" "${WS_BYTES:-128}")us" >>"$out"
            echo "ws gateway $("$target/release/examples/ws_bench" load ws://127.0.0.1:19004/ws "$conns" "$secs" "${WS_BYTES:-128}" "Authorization: Bearer $gw")us" >>"$out"
            echo "ws nginx $("$target/release/examples/ws_bench" load ws://127.0.0.1:19010/ws "$conns" "$secs" "${WS_BYTES:-128}")us" >>"$out" ;;
        *) echo "unknown row $row" >&2; exit 2 ;;
      esac
    done
    steal1=$(steal)
    echo "  steal this round: $(awk -v a="$steal0" -v b="$steal1" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz}') CPU-seconds"
  done
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); steal over the run: $(awk -v a="$total0" -v b="$(steal)" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz}') CPU-seconds"
  python3 - "$out" <<'PY'
import collections, statistics, sys
def us(s):
    for suf, m in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if s.endswith(suf): return float(s[:-len(suf)]) * m
rps, p99, cpu = collections.defaultdict(list), collections.defaultdict(list), collections.defaultdict(list)
order = []
for line in open(sys.argv[1]):
    row, name, r, p, *c = line.split()
    if row not in order: order.append(row)
    rps[row, name].append(float(r)); p99[row, name].append(us(p))
    if c: cpu[row, name].append(float(c[0]))
med = lambda d, k: statistics.median(d[k])
label = {"h1": "HTTP/1.1 GET, plain", "tls": "HTTP/1.1 GET over TLS", "h2": "HTTP/2 GET over TLS (16 x 16)",
         "post4k": "HTTP/1.1 POST 4 KiB", "post64k": "HTTP/1.1 POST 64 KiB", "cookie": "cookie-session GET"}
print("| row | nginx req/s (p99) | HAProxy req/s (p99) | gateway req/s (p99) | gw/nginx | gw/HAProxy | p99 <= nginx "
      "| CPU us/request: nginx, HAProxy, gateway |")
print("|---|---:|---:|---:|---:|---:|---|---|")
for row in order:
    if row not in label: continue
    g, n, h = (med(rps, (row, x)) for x in ("gateway", "nginx", "haproxy"))
    gp, np_, hp = (med(p99, (row, x)) / 1e3 for x in ("gateway", "nginx", "haproxy"))
    c = ", ".join(f"{med(cpu, (row, x)):.1f}" if cpu[row, x] else "-" for x in ("nginx", "haproxy", "gateway"))
    print(f"| {label[row]} | {n:,.0f} ({np_:.2f} ms) | {h:,.0f} ({hp:.2f} ms) | {g:,.0f} ({gp:.2f} ms) "
          f"| {g / n:.2f} | {g / h:.2f} | {'yes' if gp <= np_ else 'no'} | {c} |")
if "routes" in order:
    a, b = med(rps, ("routes", "3-routes")), med(rps, ("routes", "10k-routes"))
    print(f"routes: 3-route demo {a:,.0f} req/s (p99 {med(p99, ('routes', '3-routes')) / 1e3:.2f} ms), "
          f"10,000 routes {b:,.0f} req/s (p99 {med(p99, ('routes', '10k-routes')) / 1e3:.2f} ms): 10k/3 = {b / a:.3f}")
if "ws" in order:
    a, b = med(rps, ("ws", "direct")), med(rps, ("ws", "gateway"))
    pa, pb = med(p99, ("ws", "direct")), med(p99, ("ws", "gateway"))
    c, pc = med(rps, ("ws", "nginx")), med(p99, ("ws", "nginx"))
    print(f"websocket echo: direct {a:,.0f} msg/s (p99 {pa / 1e3:.2f} ms), through the gateway {b:,.0f} msg/s "
          f"(p99 {pb / 1e3:.2f} ms): gateway/direct msg/s {b / a:.3f}, p99 x{pb / pa:.2f}; "
          f"through nginx {c:,.0f} msg/s (p99 {pc / 1e3:.2f} ms): nginx/direct {c / a:.3f}, p99 x{pc / pa:.2f}; "
          f"gateway/nginx {b / c:.3f}")
print("all rounds:")
for line in open(sys.argv[1]): print("  " + line.rstrip())
PY
  stop_gateway
}

# The shared TLS peer script as it is (HTTP/1.1 with wrk and HTTP/2 with h2load over TLS, req/s
# only); `table` measures the same rows with p99.
peer_tls() {
  echo "== TLS peer benchmark ($rounds x ${secs}s, $conns connections)"
  local t=/tmp/peerbench/tls
  GATEWAY_START="bash -c 'gateway_config $work/tls.yaml $work/tls.redb \"tls: {cert: $t/cert.pem, key: $t/key.pem}\" && sed -i \"s/https: null/https: 127.0.0.1:19014/\" $work/tls.yaml && exec $bin serve --config $work/tls.yaml'" \
  GATEWAY_TOKEN="token" \
    "$peerbench/peerbench-tls.sh" "$rounds" "$secs" "$conns"
}

case $what in
  all) table; peer; flood; busy; scale; startup; rss; postgres ;;
  table|peer|flood|busy|scale|startup|rss|postgres) "$what" ;;
  tls) peer_tls ;;
  *) echo "usage: $0 [all|table|peer|tls|flood|busy|scale|startup|rss|postgres]" >&2; exit 2 ;;
esac
